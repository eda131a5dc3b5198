"""Optimization levers (slim, routing, cache, dedup) and the one chain they run in.

A lever works on a `LeverRequest` before the upstream call. It may rewrite the body
(slim), answer the request itself (a cache hit, a flight to join: `answer`), attach
observers that read the response as it passes (the cache recorder), and it reports
`hit`, `miss` or `skip` in the row's `levers_fired` under its name.

Every lever is fail-open (`LeverChain`): a fault, or a lever that outlasts its
budget, is recorded as `error`, counted in `gateway_fail_open_total{layer="lever"}`,
marks the row `fell_back_to_baseline`, and whatever the lever changed is put back as
it was, so the request goes upstream as the caller sent it. The chain stops at the
first answer. Chains are chosen per workspace policy (`policy.LeverPolicy`) and built
once per policy, not per request; a policy with every lever off has no chain at all,
and the pipeline skips this step.
"""

from __future__ import annotations

from recovea_proxy.levers.chain import LEVER_FIELDS, ChainBook, Lever, LeverChain, LeverRequest
from recovea_proxy.observers import LeverObserver

__all__ = ["LEVER_FIELDS", "ChainBook", "Lever", "LeverChain", "LeverObserver", "LeverRequest"]
