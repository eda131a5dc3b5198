"""Singleflight: identical shareable requests in flight at once share one upstream call.

The first of them leads: its upstream call runs in a task the `FlightRegistry` owns
(the lifespan owns the registry), not in the leader's own task, and its response is
kept in the flight's buffer as it arrives. Every request of the flight — the leader
too — reads it through a `Subscription`: what has passed, then the rest live. A
request that joins mid-stream gets the same bytes as the first.

- The upstream call is cancelled only when its last subscriber leaves: the leader's
  client going away does not cut the others.
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
from collections.abc import Awaitable, Callable

import aiohttp
import structlog

from recovea_proxy.sources import Headers, UpstreamSource
from recovea_proxy.upstream import classify

_log = structlog.get_logger("recovea.flights")

OpenUpstream = Callable[[], Awaitable[aiohttp.ClientResponse]]


class FlightBroken(Exception):
    """The shared call broke off after its response began; `kind` names how."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Flight:
    """One shared upstream call and what it has answered so far."""

    __slots__ = (
        "_changed",
        "chunks",
        "content_length",
        "content_type",
        "failure",
        "followers",
        "identity_encoded",
        "joinable",
        "key",
        "raw_headers",
        "size",
        "state",
        "status",
        "subscribers",
        "task",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        #: waiting (for the response) | streaming | done | failed (before the first
        #: byte) | broken (after it)
        self.state = "waiting"
        self.status = 0
        self.raw_headers: Headers = ()
        self.content_type = b""
        self.content_length: int | None = None
        self.identity_encoded = True
        self.chunks: list[bytes] = []
        self.size = 0
        self.failure = ""
        self.subscribers = 0
        self.followers = 0
        self.joinable = True
        self.task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake whoever waits for this flight to change."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def changed(self) -> None:
        """Wait for the next change (a chunk, the start, the end)."""
        await self._changed.wait()


class Subscription:
    """One request's view of a flight: a response source read from the flight's buffer."""

    __slots__ = ("_flight", "_left", "_next")

    errors: tuple[type[BaseException], ...] = (FlightBroken,)

    def __init__(self, flight: Flight) -> None:
        self._flight = flight
        self._next = 0
        self._left = False
        flight.subscribers += 1

    @property
    def status(self) -> int:
        return self._flight.status

    @property
    def raw_headers(self) -> Headers:
        return self._flight.raw_headers

    @property
    def content_type(self) -> bytes:
        return self._flight.content_type

    @property
    def content_length(self) -> int | None:
        return self._flight.content_length

    @property
    def identity_encoded(self) -> bool:
        return self._flight.identity_encoded

    @property
    def failure(self) -> str:
        """How the shared call failed before its first byte (`connect`, `timeout`, ...)."""
        return self._flight.failure

    async def ready(self, wait_s: float | None) -> bool:
        """Wait (at most `wait_s`) for the shared response to begin; False when it failed
        before its first byte or did not begin in time."""
        flight = self._flight
        try:
            async with asyncio.timeout(wait_s):
                while flight.state == "waiting":
                    await flight.changed()
        except TimeoutError:
            return False
        return flight.state != "failed"

    async def read(self) -> bytes:
        flight = self._flight
        while True:
            if self._next < len(flight.chunks):
                chunk = flight.chunks[self._next]
                self._next += 1
                return chunk
            if flight.state == "done":
                return b""
            if flight.state == "broken":
                raise FlightBroken(flight.failure)
            await flight.changed()

    def kind_of(self, exc: BaseException) -> str:
        return exc.kind if isinstance(exc, FlightBroken) else "error"

    def start_body(self) -> None:
        return None  # the flight's own read bounds the upstream's silences

    def finish(self, *, clean: bool) -> None:
        """This request is done with the flight (the last one out cancels the call)."""
        if self._left:
            return
        self._left = True
        flight = self._flight
        flight.subscribers -= 1
        if flight.subscribers <= 0 and flight.task is not None and not flight.task.done():
            flight.task.cancel()


class FlightRegistry:
    """The flights in progress, by key, and the tasks that make their calls."""

    def __init__(self, *, buffer_max_bytes: int, followers_max: int, idle_timeout_s: float) -> None:
        self._flights: dict[bytes, Flight] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._buffer_max = buffer_max_bytes
        self._followers_max = followers_max
        self._idle_s = idle_timeout_s

    def __len__(self) -> int:
        return len(self._flights)

    def join(self, key: bytes) -> Subscription | None:
        """A subscription to the flight in progress under `key`, when one can be joined."""
        flight = self._flights.get(key)
        if flight is None or not flight.joinable or flight.followers >= self._followers_max:
            return None
        flight.followers += 1
        return Subscription(flight)

    def lead(self, key: bytes, open_upstream: OpenUpstream) -> Subscription:
        """Start the shared call for `key`; the leader's subscription to it."""
        flight = Flight(key)
        self._flights[key] = flight
        subscription = Subscription(flight)
        task = asyncio.get_running_loop().create_task(
            self._fly(flight, open_upstream), name="flight"
        )
        flight.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return subscription

    async def close(self) -> None:
        """Cancel every call still in flight (the lifespan's exit)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _fly(self, flight: Flight, open_upstream: OpenUpstream) -> None:
        try:
            try:
                response = await open_upstream()
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                flight.joinable = False
                flight.failure = classify(exc)
                flight.state = "failed"
                return
            await self._relay(flight, UpstreamSource(response, self._idle_s))
        finally:
            flight.joinable = False
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            if flight.state in ("waiting", "streaming"):
                # cancelled (every subscriber left) or a bug: nobody may wait forever
                flight.failure = flight.failure or "cancelled"
                flight.state = "failed" if flight.state == "waiting" else "broken"
            flight.notify()

    async def _relay(self, flight: Flight, source: UpstreamSource) -> None:
        """Keep the shared response in the flight's buffer as it arrives."""
        flight.status = source.status
        flight.raw_headers = source.raw_headers
        flight.content_type = source.content_type
        flight.content_length = source.content_length
        flight.identity_encoded = source.identity_encoded
        flight.state = "streaming"
        flight.notify()
        source.start_body()
        clean = False
        try:
            read = source.read
            while chunk := await read():
                flight.chunks.append(chunk)
                flight.size += len(chunk)
                if flight.size > self._buffer_max:
                    flight.joinable = False
                flight.notify()
            flight.state = "done"
            clean = True
        except source.errors as exc:
            flight.failure = source.kind_of(exc)
            flight.state = "broken"
            _log.warning("flight_broken", kind=flight.failure)
        finally:
            source.finish(clean=clean)
