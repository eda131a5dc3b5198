"""The exact cache: a shareable request (`cache_key`) is answered from a stored answer
when there is a fresh one, and a miss's answer is recorded for the next time.

Per request, `X-Recovea-Cache: skip` neither reads nor writes (nor joins a flight),
`refresh` does not read but writes; the request's `Cache-Control` (`cache_control.py`)
may say `no-cache` (as `refresh`), `no-store` (the answer is not kept) and `max-age=N`
(caps the age of an entry the request accepts). A hit replays the stored bytes as they
first came — JSON, or a stream event for event — with an `age` header, and the row
says `cache_hit`, `cache_type = exact`, with the original's usage (read from the
replayed bytes; for a JSON answer, once: later hits of the entry copy it, `ReplayPlan`).

Stored only: a 200 answer, complete (a terminal event, `success`), whose finish
reason is not `length` or `content_filter`, not a tool call unless the workspace
allows them, and not larger than `RECOVEA_CACHE_ENTRY_MAX_KB`. Partial streams never.
A miss's answer is kept by the request's `flights.Flight` as it passes and stored by
the lever's `Keeper`.

Singleflight (`dedup`) is the same lever's second half: a shareable request that
misses joins the flight in progress under its key (`dedup: hit`: it is answered by
the shared call, its row says `dedup_singleflight`), or leads a new one (`dedup:
miss`: its own upstream call becomes the shared one). See `flights.py` for what a
flight guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable

import orjson

from recovea_proxy.levers.cache_control import NO_DIRECTIVES, CacheControl
from recovea_proxy.levers.cache_key import key_of, shareable
from recovea_proxy.levers.cache_store import CacheEntry, CacheStore
from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.levers.flights import Flight, FlightRegistry
from recovea_proxy.observability.cache_stats import CacheStats
from recovea_proxy.sources import ReplayPlan, ReplaySource

#: finish reasons of answers that are not kept (cut short, filtered)
_INCOMPLETE = frozenset({"length", "content_filter", "max_tokens", "refusal"})
#: finish reasons of tool calls (kept only when the workspace allows them)
_TOOL_CALLS = frozenset({"tool_calls", "function_call", "tool_use"})


class CacheLever:
    """The `cache` and `dedup` levers of one workspace policy, as one step: both share
    the request's key and its `Flight`, so a miss computes the key once and makes one
    flight, which keeps the answer for the cache and is the shared call that identical
    requests join. It reports under both names: `cache` (hit, miss) and `dedup`
    (hit: it joined a flight in progress; miss: it leads one)."""

    name = "cache"
    also = ("dedup",)
    #: the request is changed only once the lookup has answered
    contained = True

    def __init__(
        self,
        store: CacheStore,
        flights: FlightRegistry,
        *,
        policy: str,
        ttl_s: int,
        entry_max_bytes: int,
        tool_calls: bool,
        stats: CacheStats,
        generation: int = 0,
    ) -> None:
        self._store = store
        self._stats = stats
        self._shared = store.shared
        self._flights = flights
        #: the workspace policy's `cache` (`deterministic` or `all`)
        self._policy = policy
        #: the workspace's cache generation (part of every key; raised by a purge)
        self._generation = generation
        # Two keepers: a request that offers the model no tools needs no scan of its
        # answer for tool calls (with tools, one is looked for unless they are allowed).
        self._keeper = Keeper(store, stats, ttl_s, entry_max_bytes, tool_calls, scan=False)
        self._keeper_scanning = Keeper(store, stats, ttl_s, entry_max_bytes, tool_calls, scan=True)
        self.budget_s = store.budget_s

    def applies(self, request: LeverRequest) -> bool:
        parsed = request.parsed
        return (
            parsed is not None
            and request.record.method == "POST"
            and request.headers.cache != "skip"
            and shareable(parsed, self._policy)
            # the provider stores what it answers unless told not to (as `store: true`)
            and (not request.surface.stores_by_default or parsed.get("store") is False)
        )

    def before(self, request: LeverRequest) -> str | Awaitable[str]:
        record = request.record
        plan = request.plan
        surface = request.surface
        parsed = request.parsed
        assert parsed is not None  # `applies`
        headers = request.headers
        # what the provider reads besides the body: the query, answer-shaping headers
        query, shaping = request.query, headers.answer_headers
        beside = (
            (query + b"\n" + (shaping or b"")).decode("latin-1")
            if query or shaping is not None
            else ""
        )
        try:
            key = key_of(
                record.workspace_id,
                record.method,
                surface.provider.name,
                surface.upstream_path,
                parsed,
                plan.key if plan is not None else "",
                self._generation,
                beside,
            )
        except orjson.JSONEncodeError:
            # nested deeper than orjson writes (~250 levels; it reads 1024): a body
            # no client sends in earnest, not a fault of the lever, and not shared
            record.levers_fired["dedup"] = "skip"
            return "skip"
        control = (
            NO_DIRECTIVES
            if headers.cache_control is None
            else CacheControl.parse(headers.cache_control)
        )
        if headers.cache != "refresh" and not control.no_cache:
            entry = self._store.get(key)
            if entry is not None:
                if control.accepts(entry.stored_at):
                    self._stats.hits += 1
                    return _hit(request, key, entry)
            elif self._shared:
                return self._look_beyond(request, key, control)  # awaited by the chain
        return self._miss(request, key, control.no_store)

    async def _look_beyond(self, request: LeverRequest, key: bytes, control: CacheControl) -> str:
        """The lookup in the shared store (Redis), when memory had nothing."""
        entry = await self._store.lookup_shared(key)
        if entry is not None and control.accepts(entry.stored_at):
            stats = self._stats
            stats.hits += 1
            stats.redis_hits += 1
            return _hit(request, key, entry)
        return self._miss(request, key, control.no_store)

    def _miss(self, request: LeverRequest, key: bytes, no_store: bool) -> str:
        """Keep the answer as it passes (unless the request says `no-store`), and lead
        a flight or join the one in progress.

        The flight observes this request's response either way: a leader's (its own
        upstream call), or a follower's (what it receives), kept for the cache by the
        first follower to finish when the leader's client left (the leader's own
        answer is then not kept)."""
        parsed = request.parsed
        record = request.record
        stats = self._stats
        stats.misses += 1
        keeper = (
            None
            if no_store
            else self._keeper_scanning
            if parsed is not None and ("tools" in parsed or "functions" in parsed)
            else self._keeper
        )
        flight, subscription = self._flights.lead_or_join(key, record, keeper)
        request.observers.append(flight)
        request.cache_key = key
        if subscription is None:
            request.flight = flight
            record.levers_fired["dedup"] = "miss"
            if no_store:
                stats.not_kept["no_store"] += 1
        else:
            request.answer = subscription
            record.dedup_singleflight = True
            record.levers_fired["dedup"] = "hit"
        return "miss"


def _hit(request: LeverRequest, key: bytes, entry: CacheEntry) -> str:
    age = max(0, int(time.time() - entry.stored_at))
    plan = entry.plan
    if plan is None:  # an entry read from Redis (the memory store makes one when it reads)
        plan = entry.plan = ReplayPlan(entry.headers)
    request.answer = ReplaySource(entry.status, plan, entry.chunks, age)
    request.cache_key = key
    record = request.record
    record.cache_hit = True
    record.cache_type = "exact"
    return "hit"


class Keeper:
    """Stores a missed request's answer, kept by its `Flight` as it passed, when the
    answer qualifies (one per lever and kind of request, shared by its requests).

    A follower's flight keeps its answer only when its leader's did not (the leader's
    client left before the end): the same bytes are not packed and written again, to
    memory and Redis, once per follower. What became of each answer a leader saw (or
    a follower kept) is counted in `CacheStats`."""

    __slots__ = ("_refused", "_scan", "_stats", "_store", "_ttl", "entry_max")

    def __init__(
        self,
        store: CacheStore,
        stats: CacheStats,
        ttl_s: int,
        entry_max_bytes: int,
        tool_calls: bool,
        *,
        scan: bool,
    ) -> None:
        self._store = store
        self._stats = stats
        self._ttl = ttl_s
        #: answers larger than this are not kept (the flight stops keeping them)
        self.entry_max = entry_max_bytes
        #: the finish reasons of answers not kept: cut short or filtered, and tool calls
        #: unless the workspace allows them...
        self._refused = _INCOMPLETE if tool_calls else _INCOMPLETE | _TOOL_CALLS
        #: ... and whether the answer is searched for a tool call (the request offered
        #: tools, and the workspace has not allowed them)
        self._scan = scan and not tool_calls

    def keep(self, flight: Flight) -> None:
        """Store the flight's answer if it is a complete, cacheable 200."""
        record, upstream = flight.leader, flight.upstream
        # `success` is True only for a whole answer: the pipe settles it None when the
        # client left and False after an error (a broken or cut stream), before this.
        if (
            record.success is not True
            or upstream is None
            or upstream.status != 200
            or not upstream.identity_encoded
        ):
            refused = "incomplete"
        elif (finish := record.usage.finish_reason) in self._refused:
            refused = "tool_call" if finish in _TOOL_CALLS else "incomplete"
        elif self._scan and any(_calls_a_tool(chunk) for chunk in flight.chunks):
            refused = "tool_call"
        elif flight.leads or not self._store.holds(flight.key):
            # The headers as they came (a tuple of pairs already): those not to be
            # replayed are left out when the entry is replayed or written to Redis.
            self._store.keep(flight.key, 200, upstream.raw_headers, flight.chunks, self._ttl)
            self._stats.kept += 1
            return
        else:
            return  # a follower: its leader kept this answer
        if flight.leads:
            self._stats.not_kept[refused] += 1

    def too_large(self) -> None:
        """A leader's flight stopped keeping its answer: past `entry_max`."""
        self._stats.not_kept["too_large"] += 1


def _calls_a_tool(chunk: bytes) -> bool:
    """Whether a piece of an answer holds a tool call: Chat's `tool_calls` (a forced
    `tool_choice` ends with `stop`, not `tool_calls`), a Responses `function_call`
    item, an Anthropic `tool_use` block. Only looked for when the request offered
    tools; a false alarm only means the answer is not kept."""
    # `find`, not `in`: see `header_check.holds_refused_byte`
    return (
        chunk.find(b'"tool_calls"') >= 0
        or chunk.find(b'"function_call"') >= 0
        or chunk.find(b'"tool_use"') >= 0
    )
