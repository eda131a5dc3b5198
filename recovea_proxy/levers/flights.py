"""Singleflight: identical shareable requests in flight at once share one upstream call.

The first of them leads: it makes the upstream call and reads the response itself,
the `Flight` observing its response and keeping each chunk in its buffer as it passes; the others
read it through a `Subscription`: what has passed, then the rest live. A request
that joins mid-stream gets the same bytes as the first. (The leader reading in its
own task costs a request nothing when no one joins: no chunk waits for another task.)

- The upstream call is cancelled only when its last subscriber leaves: when the
  leader's client goes away while others still read, the `FlightRegistry` (owned by
  the lifespan) takes the reading over in a task of its own.
- A follower waits at most `RECOVEA_FLIGHT_FIRST_BYTE_WAIT_S` for the response to
  begin, then calls upstream on its own; so does every follower when the shared call
  fails before its first byte. After the first byte, a broken call ends every
  subscriber's stream with the same provider-shaped error event.
- Bounded: past `RECOVEA_FLIGHT_BUFFER_MAX_KB` of response, or
  `RECOVEA_FLIGHT_FOLLOWERS_MAX` followers, new arrivals go upstream on their own.
- A flight leaves the registry when its call ends; later identical requests are
  answered by the cache if the answer was kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from recovea_proxy.observability.cache_stats import CacheStats
from recovea_proxy.record import RequestRecord
from recovea_proxy.sources import Headers, ReplayPlan, ResponseSource, take

if TYPE_CHECKING:
    from recovea_proxy.levers.cache import Keeper

_log = structlog.get_logger("recovea.flights")


class FlightBroken(Exception):
    """The shared call broke off after its response began; `kind` names how."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Flight:
    """One shareable request's response as it passes: kept for the exact cache, and,
    once the registry opens it, the shared call that followers join.

    The cache lever makes it (a miss's answer is to be kept), attaches it as an
    observer of the request's own response, and opens it in the registry (the request
    leads a flight: its `dedup` half). The leader reads its upstream itself, in its
    own task: its pipe appends each chunk to the buffer (`intake`), and wakes
    followers only when one waits.
    One object for both jobs: the request pays for one, not a recorder and a flight.

    The buffer is bounded: past the cache's entry bound the answer is no longer kept,
    past `RECOVEA_FLIGHT_BUFFER_MAX_KB` no one new may join, and past both (with no
    follower reading it) nothing more is buffered.
    """

    __slots__ = (
        "buffer_max",
        "chunks",
        "failure",
        "followers",
        "joinable",
        "keeper",
        "key",
        "leader",
        "leads",
        "limit",
        "size",
        "state",
        "subscribers",
        "task",
        "upstream",
        "waiter",
    )

    def __init__(
        self,
        key: bytes,
        leader: RequestRecord,
        keeper: Keeper | None = None,
        buffer_max: int | None = None,
    ) -> None:
        """`buffer_max`: given when the flight is opened for followers (by the registry,
        `lead_or_join`): past this many bytes no one new may join."""
        self.key = key
        #: the leading request's record
        self.leader = leader
        #: what keeps the answer for the exact cache (None: it is not kept)
        self.keeper = keeper
        #: the response's source, once it has begun (status and headers)
        self.upstream: ResponseSource | None = None
        #: waiting (for the response) | streaming | done | failed (before the first
        #: byte) | broken (after it)
        self.state = "waiting"
        self.chunks: list[bytes] = []
        self.size = 0
        #: the size past which something changes (`_past_limit`): the smallest bound
        #: that applies; -1: nothing is kept
        limit = keeper.entry_max if keeper is not None else -1
        if buffer_max is None:
            #: whether the flight was opened for followers: its request leads the call
            #: (else it is a follower's own, observing what the follower receives)
            self.leads = False
            self.buffer_max = 0
            self.joinable = False
            #: the requests reading the call: a leader counts as its first
            self.subscribers = 0
        else:
            self.leads = True
            self.buffer_max = buffer_max
            self.joinable = True
            self.subscribers = 1
            if limit < 0 or buffer_max < limit:
                limit = buffer_max
        self.limit = limit
        self.failure = ""
        self.followers = 0
        self.task: asyncio.Task[None] | None = None
        #: set on the next change; made only when someone waits (a flight nobody
        #: joins never makes one)
        self.waiter: asyncio.Event | None = None

    def begin(self, upstream: ResponseSource) -> None:
        """The response has begun: its status and headers are known."""
        self.upstream = upstream
        self.state = "streaming"
        if self.waiter is not None:
            self.notify()

    def feed(self, chunk: bytes) -> None:
        """One more chunk of the response (followers are woken, if any wait)."""
        self.size += len(chunk)
        if self.size > self.limit:
            self._past_limit(chunk)
        else:
            self.chunks.append(chunk)
        if self.waiter is not None:
            self.notify()

    def intake(self) -> tuple[Callable[[bytes], object], int]:
        """How the leader's pipe keeps chunks without a call each (`pipe.py`): append
        them itself, while they total at most the room returned, and call `notify`
        after each when `waiter` is set; past the room, `feed_past` the chunk (then
        ask again); at the end `settle` what it appended."""
        return self.chunks.append, self.limit - self.size

    def feed_past(self, taken: int, chunk: bytes) -> None:
        """A chunk past the room `intake` gave, after `taken` bytes appended since."""
        self.size += taken
        self.feed(chunk)

    def settle(self, taken: int) -> None:
        """The pipe appended `taken` bytes since its last `intake` (the response ended)."""
        self.size += taken

    def _past_limit(self, chunk: bytes) -> None:
        """The buffer passed a bound: no one new may join, or the answer is too large
        to keep; once neither a follower nor the cache needs it, nothing is buffered."""
        size = self.size
        if self.joinable and size > self.buffer_max:
            self.joinable = False
        keeper = self.keeper
        if keeper is not None and size > keeper.entry_max:
            if self.leads:
                keeper.too_large()
            self.keeper = keeper = None
        if self.joinable or keeper is not None or self.followers:
            self.chunks.append(chunk)
            limits = [sys.maxsize]
            if self.joinable:
                limits.append(self.buffer_max)
            if keeper is not None:
                limits.append(keeper.entry_max)
            self.limit = min(limits)
        else:
            self.chunks = []
            self.limit = -1

    def close(self) -> None:
        """The leader's response has ended (its record is settled by now)."""
        leader = self.leader
        if self.state == "streaming" and not leader.client_gone:
            if leader.error_code:
                self.broken(leader.error_code.removeprefix("upstream_"))
            else:  # `done`, inline: every miss passes here
                self.state = "done"
                self.joinable = False
                if self.waiter is not None:
                    self.notify()
        # else the leader left early: `FlightRegistry.leader_left` decides
        if self.keeper is not None:
            self.keeper.keep(self)

    def whole(self, body: bytes) -> None:
        """A body read whole (a buffered JSON answer): `feed` it, then `close` — one
        call, as every JSON miss makes it."""
        # `feed`, inline, less its wake-up: `close` wakes whoever waits
        size = self.size = self.size + len(body)
        if size > self.limit:
            self._past_limit(body)
        else:
            self.chunks.append(body)
        self.close()

    def done(self) -> None:
        self.state = "done"
        self.joinable = False
        if self.waiter is not None:
            self.notify()

    def broken(self, kind: str) -> None:
        self.failure = kind
        self.state = "broken"
        self.joinable = False
        self.notify()

    def failed(self, kind: str) -> None:
        """The call failed before its first byte."""
        self.failure = kind
        self.state = "failed"
        self.joinable = False
        self.notify()

    def notify(self) -> None:
        """Wake whoever waits for this flight to change."""
        changed = self.waiter
        if changed is not None:
            self.waiter = None
            changed.set()

    async def changed(self) -> None:
        """Wait for the next change (a chunk, the start, the end)."""
        changed = self.waiter
        if changed is None:
            changed = self.waiter = asyncio.Event()
        await changed.wait()


class Subscription:
    """A follower's view of a flight: a response source read from the flight's buffer."""

    __slots__ = ("_flight", "_left", "_next", "_registry")

    errors: tuple[type[BaseException], ...] = (FlightBroken,)
    plan: ReplayPlan | None = None

    def __init__(self, registry: FlightRegistry, flight: Flight) -> None:
        self._registry = registry
        self._flight = flight
        self._next = 0
        self._left = False
        flight.subscribers += 1

    # The shared response's status and headers (read once it has begun: `ready`).
    @property
    def status(self) -> int:
        return self._upstream.status

    @property
    def raw_headers(self) -> Headers:
        return self._upstream.raw_headers

    @property
    def content_type(self) -> bytes:
        return self._upstream.content_type

    @property
    def content_length(self) -> int | None:
        return self._upstream.content_length

    @property
    def identity_encoded(self) -> bool:
        return self._upstream.identity_encoded

    @property
    def _upstream(self) -> ResponseSource:
        upstream = self._flight.upstream
        assert upstream is not None, "read before the shared response began"
        return upstream

    async def ready(self, wait_s: float | None) -> bool:
        """Wait (at most `wait_s`) for the shared response to begin; False when it failed
        before its first byte or did not begin in time."""
        flight = self._flight
        alone = self._registry.stats.alone
        try:
            async with asyncio.timeout(wait_s):
                while flight.state == "waiting":
                    await flight.changed()
        except TimeoutError:
            alone["waited"] += 1
            return False
        if flight.state == "failed":
            alone["failed"] += 1
            return False
        return True

    async def read(self) -> bytes:
        flight = self._flight
        while True:
            if self._next < len(flight.chunks):  # what has passed, several at a time
                piece, self._next = take(flight.chunks, self._next)
                return piece
            if flight.state == "done":
                return b""
            if flight.state == "broken":
                raise FlightBroken(flight.failure)
            await flight.changed()

    def kind_of(self, exc: BaseException) -> str:
        return exc.kind if isinstance(exc, FlightBroken) else "error"

    def start_body(self) -> None:
        return None  # the leader's read bounds the upstream's silences

    def finish(self, *, clean: bool) -> None:
        """This request is done with the flight (the last one out cancels the call)."""
        if not self._left:
            self._left = True
            self._registry.leave(self._flight)


class FlightRegistry:
    """The flights in progress, by key, and the tasks that make their calls."""

    def __init__(
        self, *, buffer_max_bytes: int, followers_max: int, stats: CacheStats | None = None
    ) -> None:
        self._flights: dict[bytes, Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.buffer_max = buffer_max_bytes
        self._followers_max = followers_max
        #: joins, and why requests that found a flight went on their own
        self.stats = stats if stats is not None else CacheStats()

    def __len__(self) -> int:
        return len(self._flights)

    def lead_or_join(
        self, key: bytes, leader: RequestRecord, keeper: Keeper | None
    ) -> tuple[Flight, Subscription | None]:
        """The request's flight (it observes the request's own response and keeps the
        answer by `keeper`), and a subscription to the flight in progress under `key`
        when one can be joined; else (None) the request's flight is opened under `key`
        and the request leads it (counted as its first subscriber; followers may join
        at once, and wait for its response to begin). One call for both: every
        shareable miss makes it."""
        flights = self._flights
        current = flights.get(key)
        if current is not None:
            if current.joinable and current.followers < self._followers_max:
                current.followers += 1
                self.stats.joins += 1
                return Flight(key, leader, keeper), Subscription(self, current)
            # past a bound, it leads a flight of its own (an ended one is no flight)
            if current.joinable:
                self.stats.alone["followers"] += 1
            elif current.state == "streaming":
                self.stats.alone["buffer"] += 1
        flight = flights[key] = Flight(key, leader, keeper, self.buffer_max)
        return flight, None

    def fail(self, flight: Flight, kind: str) -> None:
        """The leader's call failed before its first byte, or it never made it (an
        error before it): the followers go on their own."""
        flight.failed(kind)
        self._discard(flight)

    def leave(self, flight: Flight) -> None:
        """A follower is done with the flight; the last one out of a call the registry
        reads cancels it."""
        flight.subscribers -= 1
        if flight.subscribers <= 0 and flight.task is not None and not flight.task.done():
            flight.task.cancel()

    def leader_left(self, flight: Flight, upstream: ResponseSource, *, clean: bool) -> None:
        """The leader is done with the call: finished, or its client went away."""
        flight.subscribers -= 1
        state = flight.state
        if state != "streaming" and state != "waiting":
            # ended: `done`, `broken` and `failed` have made it unjoinable already
            upstream.finish(clean=clean and state == "done")
            # `_discard`, inline: every leader that finishes passes here (a later
            # flight under the same key is left open)
            flights = self._flights
            if flights.get(flight.key) is flight:
                del flights[flight.key]
            return
        if flight.subscribers <= 0:
            upstream.finish(clean=False)  # nobody reads on: drop the call
            flight.broken("cancelled")
            self._discard(flight)
            return
        # Followers still read: the registry reads the rest for them.
        task = asyncio.get_running_loop().create_task(self._relay(flight, upstream), name="flight")
        flight.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Cancel every call the registry still reads (the lifespan's exit)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _discard(self, flight: Flight) -> None:
        flight.joinable = False
        flights = self._flights
        if flights.get(flight.key) is flight:  # a later flight under the same key: left open
            del flights[flight.key]

    async def _relay(self, flight: Flight, upstream: ResponseSource) -> None:
        """Read the rest of the shared response for the followers."""
        clean = False
        try:
            read = upstream.read
            while chunk := await read():
                flight.feed(chunk)
            flight.done()
            clean = True
        except upstream.errors as exc:
            flight.broken(upstream.kind_of(exc))
            _log.warning("flight_broken", kind=flight.failure)
        finally:
            if flight.state in ("waiting", "streaming"):
                flight.broken("cancelled")  # every follower left (or the gateway stops)
            upstream.finish(clean=clean)
            self._discard(flight)
