"""The spend-cap guard: a reservation at step 3 of the pipeline, settled at step 8.

- `applies`: the caps of the caller's workspace, or None — a test key, or a
  workspace without an enabled cap, which is never blocked and costs no database
  work (a dict lookup). Admin keys are not exempt; passthrough requests fall under
  the passthrough workspace's caps.
- `reserve`: the request's estimate (`caps_estimate`) taken from this process's lease
  of every cap that applies (workspace, project, team, key); all or none. No room
  → one bounded sync of the lease (`leases`) → 402 `budget_exceeded` when the cap has
  no room, 402 `budget_unverifiable` when its state cannot be confirmed. A model
  without a price or a path the gateway cannot meter → 402 `budget_unverifiable`
  naming it (unless the workspace's options cover it).
- Under a cap with `on_overrun: cut`, a streamed response is watched
  (`StreamWatch`): output is counted as one token per SSE event as the deltas pass,
  less a few framing events (the real count arrives only at the end for some
  providers; a delta that carries several tokens counts as one). Past its
  reservation it takes more from the leases; when they have no room, the stream is
  ended with the provider-shaped error event. Under `finish` (the default) nothing
  reads the chunks: the overrun is found at settlement, with the real usage.
- `settle`: the real cost (`pricing.cost` on the reported usage, at the model and tier
  that served; as integer arithmetic on a rate card read from `cost` once per model
  and tier, which gives `cost`'s exact result rounded up to the nano-dollar)
  replaces the estimate; nothing for a cache hit or a singleflight follower
  (no provider call), nor for a provider error or a call that never reached the
  provider; a 2xx without reported usage (the client left mid-stream) costs the input
  estimate plus the output so far (counted by the watch, else the bytes sent / 4),
  never more than the reservation; the whole reservation when nothing was sent. A
  cost beyond the reservation with no room left is an overrun: counted
  and logged (`finish`).
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from recovea_proxy.auth import Principal
from recovea_proxy.errors import GatewayError
from recovea_proxy.guards.caps_config import Cap, CapBook, WorkspaceCaps, to_nano
from recovea_proxy.guards.caps_estimate import (
    FREE_KINDS,
    FREE_METHODS,
    METERED_KINDS,
    RateCard,
    Unverifiable,
    estimate,
    output_limit,
    price_of,
    rate_card,
    unmeterable,
)
from recovea_proxy.guards.caps_metrics import CapMetrics
from recovea_proxy.guards.leases import CapStateUnknown, Lease, LeaseBook
from recovea_proxy.observers import StopStream
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.rates import Price
from recovea_proxy.record import RequestRecord
from recovea_proxy.sources import ResponseSource

_log = structlog.get_logger("recovea.caps")
_PERIOD_WORD = {"day": "today (UTC)", "month": "this month (UTC)"}
#: SSE events of a stream that carry no output (a role or start event, the finish
#: event, the usage event, `[DONE]`): never counted against the reservation
_FRAMING_EVENTS = 4
_CARDS_MAX = 4096


class Reservation:
    """The budget one request holds: `amount` nano-USD on each of `leases`."""

    __slots__ = ("amount", "caps", "card", "fixed", "input_tokens", "leases", "price", "watch")

    def __init__(
        self,
        amount: int,
        caps: list[Cap],
        leases: list[Lease],
        price: Price | None,
        input_tokens: int,
        card: RateCard | None = None,
    ) -> None:
        self.amount = amount
        self.card = card
        self.caps = caps
        self.leases = leases
        #: None: an unmetered path, charged its fixed reserve
        self.price = price
        self.fixed = price is None
        self.input_tokens = input_tokens
        self.watch: StreamWatch | None = None

    def extend(self, extra: int) -> bool:
        """Take `extra` more from every lease (all or none)."""
        now = time.monotonic()
        taken: list[Lease] = []
        for lease in self.leases:
            if not lease.take(extra, now):
                for back in taken:
                    back.reserved -= extra
                return False
            taken.append(lease)
        self.amount += extra
        return True


class StreamWatch:
    """Counts a stream's output as it passes (one token per SSE event) and keeps it
    within its reservation (see the module doc). An observer of the response pipe."""

    __slots__ = ("base", "cut", "events", "limit", "off", "per_token", "record", "reservation")

    def __init__(self, reservation: Reservation, record: RequestRecord, cut: bool) -> None:
        price = reservation.price
        assert price is not None
        self.reservation = reservation
        self.record = record
        self.cut = cut
        card = reservation.card
        self.base = estimate(price, reservation.input_tokens, 0, card=card)
        self.per_token = max(estimate(price, 0, 1000, card=card) // 1000, 1)
        self.events = 0
        self.off = False
        #: the output events the reservation covers now
        self.limit = self._covered()

    def _covered(self) -> int:
        amount = self.reservation.amount
        return max((amount - self.base) // self.per_token, 0) + _FRAMING_EVENTS

    def begin(self, source: ResponseSource) -> None:
        # An answer from the cache or another request's flight costs nothing.
        self.off = self.record.cache_hit or self.record.dedup_singleflight

    def feed(self, chunk: bytes) -> None:
        self.events += chunk.count(b"data:")
        if self.events <= self.limit or self.off:
            return
        reservation = self.reservation
        extra = max((self.events - self.limit) * self.per_token, reservation.amount // 4)
        if reservation.extend(extra):
            self.limit = self._covered()
            return
        if self.cut:
            self.off = True
            raise StopStream(
                "budget_exceeded",
                "The spend cap was reached while this response streamed; it was cut.",
            )
        self.off = True  # `finish`: recorded at settlement, with the real usage

    def close(self) -> None:
        pass


class SpendCaps:
    """The guard (see the module doc): the caps in memory and this process's leases."""

    def __init__(
        self,
        book: CapBook,
        leases: LeaseBook,
        metrics: CapMetrics,
        *,
        default_output_tokens: int,
    ) -> None:
        self.book = book
        self.leases = leases
        self.metrics = metrics
        metrics.fullest = self.fullest
        self._default_output = default_output_tokens
        #: rate cards by (id(price), tier), with the price they were read from
        self._cards: dict[tuple[int, str | None], tuple[Price, RateCard | None]] = {}

    def fullest(self) -> float:
        """How full the fullest enabled cap is, as this process last synced it (for
        `recovea_cap_fullest_ratio`, at scrape time)."""
        return self.leases.fullest(self.book.enabled)

    def card(self, price: Price, tier: str | None) -> RateCard | None:
        """The rate card of `price` at `tier`, read once per price object."""
        key = (id(price), tier)
        entry = self._cards.get(key)
        if entry is None or entry[0] is not price:
            if len(self._cards) >= _CARDS_MAX:
                self._cards.clear()
            entry = self._cards[key] = (price, rate_card(price, tier))
        return entry[1]

    def applies(self, principal: Principal) -> WorkspaceCaps | None:
        """The caps of the caller's workspace; None for test keys and uncapped workspaces."""
        caps = self.book.for_workspace(principal.workspace_id)
        if caps is None or principal.env != "live":
            return None
        return caps

    async def reserve(
        self,
        caps: WorkspaceCaps,
        principal: Principal,
        record: RequestRecord,
        upstream_path: str,
        parsed: dict[str, Any] | None,
        upload_length: int | None = None,
    ) -> Reservation | None:
        """Reserve the request's estimate under every cap that applies; None when none
        applies or the request costs nothing. GatewayError 402 when refused."""
        applying = caps.applying(principal.project_id, principal.team_id, principal.key_id)
        kind = record.kind
        if not applying or record.method in FREE_METHODS or kind in FREE_KINDS:
            return None
        price: Price | None = None
        card: RateCard | None = None
        input_tokens = 0
        try:
            if kind in METERED_KINDS:
                price = price_of(caps, record.model)
                size = record.request_bytes if upload_length is None else upload_length
                input_tokens = size // 4 + 1
                output = output_limit(parsed, kind, self._default_output)
                tier = parsed.get("service_tier") if parsed is not None else None
                if tier is not None and not (isinstance(tier, str) and tier in price.service_tiers):
                    tier = None
                card = self.card(price, tier)
                if card is not None and (card.above is None or input_tokens <= card.above):
                    amount = card.nano(input_tokens, 0, 0, input_tokens, output)
                else:
                    amount = estimate(price, input_tokens, output, tier)
            elif caps.unmetered_reserve is not None:
                amount = caps.unmetered_reserve
            else:
                self.metrics.refused("path")
                raise unmeterable(upstream_path)
        except Unverifiable as exc:
            if kind in METERED_KINDS:
                self.metrics.refused("model")
            raise GatewayError(402, "budget_unverifiable", str(exc)) from None
        leases = self._take_now(applying, amount)
        if leases is None:
            leases = await self._take(applying, amount)
        reservation = Reservation(amount, applying, leases, price, input_tokens, card)
        if record.stream and price is not None:
            for cap in applying:
                if cap.on_overrun == "cut":  # only `cut` needs to watch every chunk
                    reservation.watch = StreamWatch(reservation, record, cut=True)
                    break
        self.metrics.reservations += 1
        return reservation

    async def charge_session(
        self, caps: WorkspaceCaps, principal: Principal, upstream_path: str
    ) -> None:
        """A WebSocket handshake under the caller's caps: its cost is known only as its
        responses arrive, so it is a path the gateway cannot bound up front — refused
        (402 `budget_unverifiable`) unless the workspace allows unmetered paths; then
        the session is charged the unmetered reserve at once (402 `budget_exceeded`
        when a cap has no room for it)."""
        applying = caps.applying(principal.project_id, principal.team_id, principal.key_id)
        if not applying:
            return
        amount = caps.unmetered_reserve
        if amount is None:
            self.metrics.refused("path")
            raise GatewayError(402, "budget_unverifiable", str(unmeterable(upstream_path)))
        for lease in await self._take(applying, amount):
            lease.settle(amount, amount)
        self.metrics.reserved()

    def _take_now(self, applying: list[Cap], amount: int) -> list[Lease] | None:
        """The fast path: `amount` from the current lease of every cap, in memory; None
        (nothing taken) when one of them needs the slow path."""
        now = time.monotonic()
        current = self.leases.current
        taken: list[Lease] = []
        for cap in applying:
            lease = current(cap, now)
            if lease is None or not lease.take(amount, now):
                for back in taken:
                    back.reserved -= amount
                return None
            taken.append(lease)
        return taken

    async def _take(self, applying: list[Cap], amount: int) -> list[Lease]:
        now = time.monotonic()
        epoch = time.time()
        taken: list[Lease] = []
        try:
            for cap in applying:
                lease = self.leases.lease(cap, epoch)
                if lease.take(amount, now) or await self.leases.fill_and_take(lease, amount):
                    taken.append(lease)
                    continue
                self.metrics.refused("exceeded")
                raise GatewayError(
                    402,
                    "budget_exceeded",
                    f"The spend cap of this {cap.scope} is reached for {_PERIOD_WORD[cap.period]}.",
                )
        except CapStateUnknown:
            self.metrics.refused("state")
            for lease in taken:
                lease.reserved -= amount
            raise GatewayError(
                402,
                "budget_unverifiable",
                "The spend cap's state could not be confirmed; the request is refused.",
            ) from None
        except BaseException:
            for lease in taken:
                lease.reserved -= amount
            raise
        return taken

    def settle(self, reservation: Reservation, record: RequestRecord) -> None:
        """Step 8: the real cost replaces the estimate on every lease."""
        actual = self._actual(reservation, record)
        over = actual > reservation.amount and not reservation.extend(actual - reservation.amount)
        if over or record.error_code == "budget_exceeded":
            self._overrun(reservation, record, actual)
        amount = reservation.amount
        for lease in reservation.leases:
            lease.settle(amount, actual)

    def _actual(self, reservation: Reservation, record: RequestRecord) -> int:
        if record.cache_hit or record.dedup_singleflight:
            return 0
        ok = 200 <= record.status_code < 300
        price = reservation.price
        if price is None:
            return reservation.amount if ok else 0
        usage = record.usage
        if usage.input_tokens is not None or usage.output_tokens is not None:
            served = record.realized_model
            if served and served != record.model:
                price = self.book_price(reservation, served) or price
            tier = usage.service_tier
            card = reservation.card
            if tier is not None or card is None or price is not reservation.price:
                card = self.card(price, tier)
            size = usage.input_tokens or 0
            if card is not None and (card.above is None or size <= card.above):
                return card.nano(
                    size,
                    usage.cached_tokens or 0,
                    usage.cache_write_5m_tokens or 0,
                    usage.cache_write_1h_tokens or 0,
                    usage.output_tokens or 0,
                )
            tokens = Tokens(
                usage.input_tokens,
                usage.cached_tokens,
                usage.cache_write_5m_tokens,
                usage.cache_write_1h_tokens,
                usage.output_tokens,
            )
            real = cost(price, tokens, usage.service_tier) or cost(price, tokens)
            return reservation.amount if real is None else to_nano(real)
        if not ok:
            return 0  # the provider refused (it bills no error), or was never reached
        watch = reservation.watch
        if watch is not None and (watch.events or record.client_gone):
            events = max(watch.events - _FRAMING_EVENTS, 0)
            return min(watch.base + events * watch.per_token, reservation.amount)
        if record.response_bytes or (record.client_gone and record.responded):
            # No usage and no watch: the output so far at 4 bytes a token (framing
            # included, so an overestimate), never more than the reservation.
            output = record.response_bytes // 4
            card = reservation.card
            if card is not None:
                spent = card.nano(reservation.input_tokens, 0, 0, reservation.input_tokens, output)
            else:
                spent = estimate(price, reservation.input_tokens, output)
            return min(spent, reservation.amount)
        return reservation.amount

    def book_price(self, reservation: Reservation, model: str) -> Price | None:
        caps = self.book.for_workspace(reservation.caps[0].workspace_id)
        if caps is None:
            return None
        return caps.price_for(model) or caps.fallback

    def _overrun(self, reservation: Reservation, record: RequestRecord, actual: int) -> None:
        cut = record.error_code == "budget_exceeded"
        self.metrics.overrun("cut" if cut else "finish")
        _log.warning(
            "cap_overrun",
            request_id=record.request_id,
            workspace_id=record.workspace_id,
            reserved_usd=str(reservation.amount / 1e9),
            cost_usd=str(actual / 1e9),
            action="cut" if cut else "finish",
        )
