"""Shadow evaluation, on the request's side: which routed requests are sampled, and the
capture of the routed answer's bytes as they pass to the client.

A request is a candidate only when a routing rule with a shadow rate served it on a
routed target (not on the caller's own model after a fallback) on an endpoint whose
answers can be compared (Chat Completions, Responses, Messages). It is sampled
deterministically by its body hash (`record.request_sha256`): the first 32 bits,
read as a number, below `rate` x 2^32 — the same request is always sampled or never,
on every replica. With no rule, or a rate of 0, the pipeline pays one attribute
check (`plan.shadow`) and nothing else.

A sampled request gets a `Capture` observer: it keeps the answer's bytes up to the
capture bound (`RECOVEA_SHADOW_CAPTURE_MAX_KB`) and past it lets go of them and
keeps nothing more (the sample is then dropped, counted `too_large`); it never
changes, delays or holds back a byte the client gets. After the response has been
sent, `ShadowEvaluator.submit` queues the sample for a shadow worker.
"""

from __future__ import annotations

from recovea_proxy.auth import Principal
from recovea_proxy.exchange import Exchange
from recovea_proxy.fallback import upstream_url
from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.levers.shadow_answer import KINDS
from recovea_proxy.levers.shadow_worker import Sample
from recovea_proxy.sources import ResponseSource

_SSE = b"text/event-stream"
_SCALE = 1 << 32


def sampled(rate: float, request_sha256: str) -> bool:
    """Whether a request with this body hash (hex) falls in the sampled share `rate`."""
    return rate > 0 and int(request_sha256[:8] or "0", 16) < rate * _SCALE


class Capture:
    """Keeps a routed answer's bytes (up to `limit`) for its shadow comparison."""

    __slots__ = ("limit", "overflow", "parts", "size", "status", "streamed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.overflow = False
        self.status = 0
        self.streamed = False

    def begin(self, source: ResponseSource) -> None:
        self.status = source.status
        self.streamed = source.content_type.startswith(_SSE)

    def feed(self, chunk: bytes) -> None:
        if self.overflow:
            return
        self.size += len(chunk)
        if self.size > self.limit:
            # past the bound: nothing more is kept, and what was kept is let go
            self.overflow = True
            self.parts = []
            return
        self.parts.append(chunk)

    def close(self) -> None:
        pass

    def body(self) -> bytes:
        """The captured bytes (empty once past the bound)."""
        return b"".join(self.parts)


def shadow_sample(x: Exchange, request: LeverRequest, principal: Principal) -> Sample | None:
    """A sample of this routed request when it is to be shadowed, its capture attached
    to the response; None when it is not (the usual case, at no further cost)."""
    plan, record = request.plan, x.record
    if plan is None or record.fell_back or x.surface.kind not in KINDS:
        return None
    if not sampled(plan.shadow, record.request_sha256):
        return None
    evaluator = x.rt.shadow
    workspace = principal.workspace_id
    baseline = plan.targets[-1]
    if not evaluator.admits(workspace, plan.rule_id, record.realized_model or "", baseline.model):
        return None
    if len(request.baseline_body) > evaluator.limit:
        evaluator.count("too_large")
        return None
    capture = Capture(evaluator.limit)
    request.observers.append(capture)
    return Sample(
        workspace_id=workspace,
        rule_id=plan.rule_id,
        routed_model=record.realized_model or "",
        baseline_provider=baseline.provider,
        baseline_model=baseline.model,
        kind=x.surface.kind,
        url=upstream_url(x, baseline.provider),
        headers=(*request.headers.forward, *principal.upstream_credentials),
        request_body=request.baseline_body,
        capture=capture,
    )
