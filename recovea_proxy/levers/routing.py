"""The `routing` lever: a request that matches one of the workspace's rules gets a plan
of targets — the rule's `to`, its fallbacks, then the caller's own model — and its
body is rewritten for the first of them. The upstream call walks the plan
(`fallback.py`); this lever only chooses it.

| outcome | when |
| --- | --- |
| `hit`  | a rule matched: the body names the routed model, `plan` is set |
| `miss` | no rule matches the request |
| `skip` | the request has no JSON body naming a model, or the lever is off |

It runs before the cache: the cache and flight keys are taken on the routed body and
mix in the plan's key, so requests share answers only within one plan. A fault is
undone by the chain's wrapper (the original body goes to the caller's model).
"""

from __future__ import annotations

from recovea_proxy.json_bytes import dumps_held
from recovea_proxy.levers.chain import LeverRequest


class RoutingLever:
    """Routing for one workspace policy (the rules themselves come with each request's
    policy, so a rule change needs no new chain)."""

    name = "routing"
    budget_s: float | None = None

    def applies(self, request: LeverRequest) -> bool:
        parsed = request.parsed
        return (
            parsed is not None
            and type(parsed.get("model")) is str
            and request.policy.routes is not None
        )

    def before(self, request: LeverRequest) -> str:
        table = request.policy.routes
        parsed = request.parsed
        assert table is not None and parsed is not None
        record = request.record
        plan = table.match(
            record.provider, record.route, parsed["model"], record.feature, record.env
        )
        if plan is None:
            return "miss"
        request.baseline_body = request.body
        parsed["model"] = plan.targets[0].model
        request.body = dumps_held(parsed)
        request.plan = plan
        return "hit"
