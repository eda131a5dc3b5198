"""The lever request, the lever interface, and the fail-open chain that runs levers
in their fixed order (slim, routing, cache, dedup).

Before each lever the chain notes what the lever may change (`snapshot`); on a fault
it puts all of it back, drops any answer or observer the lever added, and records
the fault. A lever with a `budget_s` runs under that timeout (a lever that waits on
a network store); one without it never waits, so it costs no timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any, Protocol

import orjson
import structlog

from recovea_proxy.headers import RequestHeaders
from recovea_proxy.levers.flights import Flight
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.observers import LeverObserver
from recovea_proxy.policy import LeverPolicy
from recovea_proxy.providers.usage import USAGE_FIELDS, usage_values
from recovea_proxy.record import RequestRecord
from recovea_proxy.route_table import RoutePlan
from recovea_proxy.sources import ResponseSource
from recovea_proxy.surfaces import Surface

_log = structlog.get_logger("recovea.levers")

#: the record fields a lever may set (the model it routes to, what answered); a
#: faulty lever's changes to them are undone
LEVER_FIELDS = (
    "model",
    "realized_model",
    "cache_hit",
    "cache_type",
    "dedup_singleflight",
    "fell_back",
)
_CHAINS_MAX = 4096
_lever_fields = attrgetter(*LEVER_FIELDS)


class LeverRequest:
    """The request the levers work on, and what they hand back to the pipeline."""

    __slots__ = (
        "answer",
        "baseline_body",
        "body",
        "cache_key",
        "flight",
        "headers",
        "observers",
        "parsed",
        "plan",
        "policy",
        "query",
        "record",
        "release",
        "surface",
    )

    def __init__(
        self,
        record: RequestRecord,
        surface: Surface,
        headers: RequestHeaders,
        body: bytes,
        parsed: dict[str, Any] | None,
        policy: LeverPolicy,
        query: bytes = b"",
    ) -> None:
        self.record = record
        self.surface = surface
        self.headers = headers
        self.body = body
        self.parsed = parsed
        self.policy = policy
        #: the request's query string, as it came (it is forwarded with the path)
        self.query = query
        #: a response a lever answers with (a cache hit, a flight in progress)
        self.answer: ResponseSource | None = None
        #: observers a lever attached to the response
        self.observers: list[LeverObserver] = []
        #: the exact-cache key when the request may be shared (set by the cache lever)
        self.cache_key: bytes | None = None
        #: the flight this request's upstream call feeds, when it leads one: made by
        #: the cache lever to keep the answer and opened for followers
        self.flight: Flight | None = None
        #: called once when the request is done with whatever a lever holds for it
        self.release: list[Callable[[], None]] = []
        #: where a routing rule sends the request, in order (None: where it asked)
        self.plan: RoutePlan | None = None
        #: the body as it was before routing rewrote its model (sent to the baseline)
        self.baseline_body = body


class Lever(Protocol):
    """One optimization lever.

    Optional attributes: `contained = True` promises that `before` changes nothing on
    the request or its record before its last step that may fail, so a fault leaves
    nothing to undo and the chain takes no snapshot for it (the built-in cache lever;
    a lever without the attribute gets the snapshot). `also`: the other names the
    lever reports under in `levers_fired` (the cache lever's `dedup`), recorded `skip`
    when it does not apply or fails; on success the lever records them itself."""

    name: str
    #: the longest `before` may take (None: it never waits, and runs without a timer)
    budget_s: float | None

    def applies(self, request: LeverRequest) -> bool:
        """Whether the lever has anything to do for this request (a cheap, side-effect
        free check; False records `skip` without running the lever)."""
        ...

    def before(self, request: LeverRequest) -> str | Awaitable[str]:
        """Act before the upstream call; return `hit`, `miss` or `skip` — or an
        awaitable of it when the lever must wait (a coroutine function is fine: a
        lever that never waits returns the word itself and costs no coroutine)."""
        ...


#: what a lever may change, as it was before the lever ran: the body, whether it was
#: parsed, the lever fields, the usage object and its fields, how many observers and
#: releases there were, the cache key, the flight and the plan. A plain tuple
#: (attrgetter reads the fields in C): a snapshot per lever per request must cost next
#: to nothing (copy.copy of the usage cost ~1.6 µs, an object ~0.4 µs); a `contained`
#: lever needs none.
Snapshot = tuple[Any, ...]


def snapshot(request: LeverRequest) -> Snapshot:
    """What `restore` puts back."""
    record = request.record
    usage = record.usage
    return (
        request.body,
        request.parsed is not None,
        _lever_fields(record),
        usage,
        usage_values(usage),
        len(request.observers),
        len(request.release),
        request.cache_key,
        request.flight,
        request.plan,
    )


def restore(request: LeverRequest, saved: Snapshot) -> None:
    """Undo whatever a faulty lever changed since `saved`."""
    body, parsed, lever_fields, usage, usage_fields, observers, releases, key, flight, plan = saved
    record = request.record
    request.body = body
    # The lever may have changed the parsed dict in place: read it again from the body.
    request.parsed = _parsed(body) if parsed else None
    for name, value in zip(LEVER_FIELDS, lever_fields, strict=True):
        setattr(record, name, value)
    for name, value in zip(USAGE_FIELDS, usage_fields, strict=True):
        setattr(usage, name, value)
    record.usage = usage
    if request.answer is not None:
        request.answer.finish(clean=False)  # e.g. leave a flight the lever joined
    request.answer = None
    del request.observers[observers:]
    for release in request.release[releases:]:
        release()
    del request.release[releases:]
    request.cache_key = key
    request.flight = flight
    request.plan = plan


class LeverChain:
    """Levers in their fixed order, each fail-open; stops at the first answer."""

    __slots__ = ("_faults", "_steps", "_timed_from", "_untimed", "levers")

    def __init__(self, levers: tuple[Lever, ...], metrics: GatewayMetrics) -> None:
        self.levers = levers
        #: each lever with what the loop reads of it, read once here
        self._steps = tuple(
            (
                lever,
                lever.name,
                lever.budget_s,
                getattr(lever, "contained", False),
                # what `levers_fired` says when it does not apply: its names, `skip`
                dict.fromkeys((lever.name, *getattr(lever, "also", ())), "skip"),
                index,
            )
            for index, lever in enumerate(levers)
        )
        #: the index of the first lever that runs under a budget (None: none does)...
        self._timed_from = next(
            (index for index, lever in enumerate(levers) if lever.budget_s is not None), None
        )
        #: ... and the levers before it, as `start` reads them
        self._untimed = tuple(
            (lever, name, contained, skipped, index)
            for lever, name, _, contained, skipped, index in self._steps[: self._timed_from]
        )
        self._faults = metrics.fail_open

    def start(self, request: LeverRequest) -> Awaitable[None] | None:
        """Run the levers on `request` (never raises for a lever's fault): None when
        every lever answered at once, else what is left to await (a lever that waits,
        or runs under a budget, and the levers after it). A chain whose levers never
        wait costs no coroutine."""
        fired = request.record.levers_fired
        for lever, name, contained, skipped, index in self._untimed:
            if not lever.applies(request):
                fired.update(skipped)
                continue
            saved = None if contained else snapshot(request)
            try:
                outcome = lever.before(request)
            except Exception as exc:  # fail-open by design: any fault in a lever is contained
                self._fault(request, saved, name, skipped, exc)
                continue
            if not isinstance(outcome, str):
                return self._await_then_run(request, index, outcome, saved)
            fired[name] = outcome
            if request.answer is not None:  # only a lever sets one
                return None
        if self._timed_from is None:
            return None
        return self._run_from(request, self._timed_from)

    async def run(self, request: LeverRequest) -> None:
        """Run the levers on `request` (never raises for a lever's fault)."""
        await self._run_from(request, 0)

    async def _await_then_run(
        self, request: LeverRequest, index: int, pending: Awaitable[str], saved: Snapshot | None
    ) -> None:
        """A lever that waits (without a budget): its outcome, then the levers after it."""
        _, name, _, _, skipped, _ = self._steps[index]
        try:
            outcome = await pending
        except Exception as exc:  # fail-open by design: any fault in a lever is contained
            self._fault(request, saved, name, skipped, exc)
        else:
            request.record.levers_fired[name] = outcome
        await self._run_from(request, index + 1)

    async def _run_from(self, request: LeverRequest, first: int) -> None:
        """The levers from the `first`-th on, each awaited when it waits."""
        fired = request.record.levers_fired
        for lever, name, budget_s, contained, skipped, _ in self._steps[first:]:
            if request.answer is not None:
                break
            if not lever.applies(request):
                fired.update(skipped)
                continue
            saved = None if contained else snapshot(request)
            try:
                if budget_s is None:
                    outcome = lever.before(request)
                    if not isinstance(outcome, str):
                        outcome = await outcome
                else:
                    async with asyncio.timeout(budget_s):
                        outcome = lever.before(request)
                        if not isinstance(outcome, str):
                            outcome = await outcome
            except Exception as exc:  # fail-open by design: any fault in a lever is contained
                self._fault(request, saved, name, skipped, exc)
                continue
            fired[name] = outcome

    def _fault(
        self,
        request: LeverRequest,
        saved: Snapshot | None,
        name: str,
        skipped: dict[str, str],
        exc: Exception,
    ) -> None:
        """A lever failed: undo what it changed, record (`error` under its name, `skip`
        under its other names) and count the fault."""
        if saved is not None:
            restore(request, saved)
        record = request.record
        record.levers_fired.update(skipped)
        record.levers_fired[name] = "error"
        record.fell_back = True
        reason = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self._faults.labels("lever", f"{name}:{reason}").inc()
        _log.warning("lever_fault", lever=name, error=reason)


class ChainBook:
    """The chain of each workspace policy, built the first time the policy is seen."""

    __slots__ = ("_build", "_chains", "_metrics")

    def __init__(
        self, build: Callable[[LeverPolicy], tuple[Lever, ...]], metrics: GatewayMetrics
    ) -> None:
        self._build = build
        self._metrics = metrics
        self._chains: dict[LeverPolicy, LeverChain | None] = {}

    def chain_for(self, policy: LeverPolicy) -> LeverChain | None:
        """The policy's chain; None when every lever is off for it."""
        try:
            return self._chains[policy]
        except KeyError:
            pass
        levers = self._build(policy)
        chain = LeverChain(levers, self._metrics) if levers else None
        if len(self._chains) < _CHAINS_MAX:
            self._chains[policy] = chain
        return chain


def _parsed(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object again, or None (it then goes upstream as it is)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None
