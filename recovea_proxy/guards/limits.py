"""Rate and concurrency limits on the request path: admit or refuse (429), and settle.

`Limiter.admit` runs after auth, once the body is read (it needs the model and the
body's size), before the levers; it returns None when no limit applies (the common
case costs one dict lookup), else a `Ticket`, or raises the 429. `Ticket.end` runs
in the pipeline's `finally`, on every ending (answered, failed, client gone,
cancelled): it trues up the tokens and frees the concurrency slots.

| limit         | a request takes               | given back or charged at the end     |
| `rpm`         | 1                             | nothing                              |
| `tpm`         | an estimate: body bytes / 4   | the real usage (input + output) is   |
|               | + `max_tokens` (else          | charged instead: the difference goes |
|               | `max_completion_tokens`,      | back, or is taken; a cache hit or a  |
|               | `max_output_tokens`, else     | singleflight follower costs 0; an    |
|               | `RECOVEA_LIMIT_DEFAULT_MAX_   | error with no usage costs 0; no      |
|               | TOKENS`); a streamed upload 0 | usage otherwise (the client left):   |
|               |                               | the estimate stands                  |
| `concurrency` | a slot (this process's count) | the slot is freed                    |

The estimate is capped at the limit itself, so a request larger than a whole
minute's tokens waits for a full bucket rather than for ever.

Buckets (`limit_buckets`) are per process without Redis; with `RECOVEA_REDIS_URL`
they are shared by every replica through leases, and a limit whose bucket cannot be
reached fails open (admitted, counted in `gateway_fail_open_total{layer=
"ratelimit"}`) unless it is set to fail closed (429 with `retry-after: 1`). The
concurrency count is always this process's: N replicas (or workers) admit up to N
times the limit in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from recovea_proxy.auth import Principal
from recovea_proxy.guards import limit_headers
from recovea_proxy.guards.limit_book import LimitBook
from recovea_proxy.guards.limit_buckets import (
    ASK,
    REFUSED,
    TAKEN,
    Bucket,
    LeasedBucket,
    LeaseUnavailable,
    LocalBucket,
)
from recovea_proxy.guards.limit_metrics import ADMITTED, LimitMetrics
from recovea_proxy.guards.limit_metrics import REFUSED as REFUSAL
from recovea_proxy.guards.limit_redis import RedisLeases, bucket_key
from recovea_proxy.guards.limit_rules import LimitRule
from recovea_proxy.record import RequestRecord

_log = structlog.get_logger("recovea.limits")
_REQUESTS, _TOKENS, _CONCURRENCY = 0, 2, 4  # offsets into a scope's tally
_MAX_TOKEN_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


class RuleState:
    """One limit and its counters; kept across reloads while the limit exists, so a
    change of its bounds keeps the requests in flight counted."""

    __slots__ = ("everyone", "in_flight", "requests", "rule", "tally", "tokens")

    def __init__(self, rule: LimitRule, tally: list[int]) -> None:
        self.rule = rule
        #: it applies to every request of the workspace (no scope to match)
        self.everyone = rule.scope == "workspace" and rule.model is None
        self.requests: Bucket | None = None
        self.tokens: Bucket | None = None
        self.in_flight = 0
        self.tally = tally


class Ticket:
    """What one admitted request took, to settle when it ends."""

    __slots__ = ("_slots", "_taken")

    def __init__(self) -> None:
        #: (bucket, amount, a tokens bucket?) for each bucket taken from
        self._taken: list[tuple[Bucket, float, bool]] = []
        #: the limits whose concurrency slot it holds
        self._slots: list[RuleState] | None = None

    def _rollback(self) -> None:
        for bucket, amount, _ in self._taken:
            bucket.give(amount)
        self._taken = []
        self._release()

    def _release(self) -> None:
        if self._slots is not None:
            for state in self._slots:
                state.in_flight -= 1
            self._slots = None

    def end(self, record: RequestRecord) -> None:
        """The request ended: true up its tokens, free its slots (once)."""
        taken = self._taken
        if taken:
            used: float | None = -1
            for bucket, charged, tokens in taken:
                if tokens:
                    if used == -1:
                        used = tokens_used(record)
                    if used is not None:
                        bucket.give(charged - used)
            self._taken = []
        slots = self._slots
        if slots is not None:
            for state in slots:
                state.in_flight -= 1
            self._slots = None


def tokens_used(record: RequestRecord) -> float | None:
    """The tokens a request really cost the provider's limit; None when unknown (the
    estimate then stands)."""
    if record.cache_hit or record.dedup_singleflight:
        return 0
    usage = record.usage
    if usage.input_tokens is not None or usage.output_tokens is not None:
        return (usage.input_tokens or 0) + (usage.output_tokens or 0)
    if record.success is False:
        return 0
    return None


def estimate_tokens(body: bytes | None, parsed: dict[str, Any] | None, default: int) -> int:
    """Tokens charged up front (see the module's table)."""
    if body is None:
        return 0
    if parsed is not None:
        for name in _MAX_TOKEN_FIELDS:
            if name in parsed:
                value = parsed[name]
                if type(value) is int and value > 0:
                    return len(body) // 4 + value
    return len(body) // 4 + default


class Limiter:
    """Every limit of every workspace this process knows, with their counters."""

    def __init__(
        self,
        metrics: LimitMetrics,
        *,
        window_s: float,
        default_max_tokens: int,
        leases: RedisLeases | None = None,
        lease_s: float = 1.0,
        lease_share: float = 0.05,
    ) -> None:
        self._metrics = metrics
        self._window = window_s
        self._default_max_tokens = default_max_tokens
        self._leases = leases
        self._lease_s = lease_s
        self._share = lease_share
        self._by_workspace: dict[str, tuple[RuleState, ...]] = {}
        self._states: dict[str, RuleState] = {}
        self._sweeper: asyncio.Task[None] | None = None
        #: what keeps the limits current (set by `limits_setup.open_limits`)
        self.book: LimitBook | None = None

    # -- configuration ------------------------------------------------------------

    def install(self, workspace_id: str | None, found: dict[str, tuple[LimitRule, ...]]) -> None:
        """Take the limits the book read: one workspace's, or (None) everyone's."""
        if workspace_id is None:
            self._by_workspace = {}
            kept: set[str] = set()
            for workspace, rules in found.items():
                self._by_workspace[workspace] = self._states_for(rules)
                kept.update(rule.id for rule in rules)
            self._forget(lambda rule_id: rule_id not in kept)
            return
        rules = found.get(workspace_id, ())
        if rules:
            self._by_workspace[workspace_id] = self._states_for(rules)
        else:
            self._by_workspace.pop(workspace_id, None)
        ids = {rule.id for rule in rules}
        self._forget(
            lambda rule_id: (
                self._states[rule_id].rule.workspace_id == workspace_id and rule_id not in ids
            )
        )

    def _forget(self, gone: Any) -> None:
        for rule_id in [r for r in self._states if gone(r)]:
            del self._states[rule_id]

    def _states_for(self, rules: tuple[LimitRule, ...]) -> tuple[RuleState, ...]:
        states = []
        for rule in rules:
            state = self._states.get(rule.id)
            if state is None:
                state = RuleState(rule, self._metrics.decisions.tallies[rule.scope])
                state.requests = self._bucket(rule, "requests", rule.rpm)
                state.tokens = self._bucket(rule, "tokens", rule.tpm)
                self._states[rule.id] = state
            else:
                if state.rule.rpm != rule.rpm:
                    state.requests = self._bucket(rule, "requests", rule.rpm)
                if state.rule.tpm != rule.tpm:
                    state.tokens = self._bucket(rule, "tokens", rule.tpm)
                state.rule = rule
                state.everyone = rule.scope == "workspace" and rule.model is None
            states.append(state)
        return tuple(states)

    def _bucket(self, rule: LimitRule, kind: str, limit: int | None) -> Bucket | None:
        if limit is None:
            return None
        if self._leases is None:
            return LocalBucket(limit, self._window, time.monotonic())
        return LeasedBucket(
            bucket_key(rule.id, kind),
            limit,
            self._window,
            self._leases,
            lease_s=self._lease_s,
            share=self._share,
        )

    async def reload(self, workspace_id: str) -> None:
        """Read a workspace's limits again now (after this process changed them)."""
        if self.book is not None:
            await self.book.reload(workspace_id)

    # -- the request path ---------------------------------------------------------

    async def admit(
        self,
        principal: Principal,
        model: str | None,
        body: bytes | None,
        parsed: dict[str, Any] | None,
        shape: str,
    ) -> Ticket | None:
        """Admit a request under every limit that applies (None: none applies), or
        raise the 429. `body` None: a streamed upload (no tokens charged up front)."""
        states = self._by_workspace.get(principal.workspace_id)
        if states is None:
            return None
        ticket: Ticket | None = None
        estimate = -1
        now = time.monotonic()
        for state in states:
            rule = state.rule
            if not state.everyone and not rule.applies(
                principal.project_id, principal.team_id, principal.key_id, model
            ):
                continue
            if ticket is None:
                ticket = Ticket()
            tally = state.tally
            # The common case (room in a bucket, or in the lease held) is answered here
            # without awaiting; `_take` leases, or refuses.
            bucket = state.requests
            if bucket is not None:
                if bucket.try_take(1, now) == TAKEN:
                    ticket._taken.append((bucket, 1, False))
                else:
                    await self._take(ticket, state, bucket, 1, "requests", shape)
                tally[_REQUESTS + ADMITTED] += 1
            bucket = state.tokens
            if bucket is not None:
                if estimate < 0:
                    estimate = estimate_tokens(body, parsed, self._default_max_tokens)
                charge = estimate if estimate < bucket.limit else bucket.limit
                if bucket.try_take(charge, now) == TAKEN:
                    ticket._taken.append((bucket, charge, True))
                else:
                    await self._take(ticket, state, bucket, charge, "tokens", shape)
                tally[_TOKENS + ADMITTED] += 1
            if rule.concurrency is not None:
                if state.in_flight >= rule.concurrency:
                    tally[_CONCURRENCY + REFUSAL] += 1
                    ticket._rollback()
                    raise limit_headers.too_many_in_flight(rule.scope, rule.concurrency)
                state.in_flight += 1
                if ticket._slots is None:
                    ticket._slots = [state]
                else:
                    ticket._slots.append(state)
                tally[_CONCURRENCY + ADMITTED] += 1
        return ticket

    async def _take(
        self,
        ticket: Ticket,
        state: RuleState,
        bucket: Bucket,
        amount: float,
        kind: str,
        shape: str,
    ) -> bool:
        """Take `amount` from a bucket that could not give it at once: lease (True
        taken, False admitted unchecked: fail-open), or raise the 429 (after a
        rollback)."""
        now = time.monotonic()
        outcome = bucket.try_take(amount, now)
        if outcome == ASK:
            assert isinstance(bucket, LeasedBucket)
            try:
                outcome = await bucket.lease(amount)
            except LeaseUnavailable as exc:
                if not state.rule.fail_closed:
                    self._metrics.failed_open(exc.reason)
                    return False
                self._metrics.failed_closed(exc.reason)
                self._refused(ticket, state, kind)
                raise limit_headers.unverifiable(kind, state.rule.scope) from None
            now = time.monotonic()
        if outcome == REFUSED:
            self._refused(ticket, state, kind)
            raise limit_headers.rate_limited(
                shape,
                kind,
                state.rule.scope,
                limit=bucket.limit,
                remaining=bucket.remaining(now),
                reset_s=bucket.reset_s(now),
                wait_s=bucket.wait_s(amount, now),
                window_s=self._window,
            )
        ticket._taken.append((bucket, amount, kind == "tokens"))
        return True

    @staticmethod
    def _refused(ticket: Ticket, state: RuleState, kind: str) -> None:
        state.tally[(_REQUESTS if kind == "requests" else _TOKENS) + REFUSAL] += 1
        ticket._rollback()

    # -- the sweep (Redis only) ---------------------------------------------------

    def start(self) -> None:
        """Return expired leases' rests in the background (with Redis)."""
        if self._leases is not None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="recovea-lease-sweep")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._leases is not None:
            await self._leases.close()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s)
            try:
                await self._sweep()
            except LeaseUnavailable:
                pass  # Redis is away: the rests are gone with it (see limit_buckets)
            except Exception:  # the sweep outlives any one round
                _log.exception("lease_sweep_failed")

    async def _sweep(self) -> None:
        for state in list(self._states.values()):
            for bucket in (state.requests, state.tokens):
                if isinstance(bucket, LeasedBucket):
                    await bucket.give_back()
