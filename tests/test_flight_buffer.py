"""A shareable request's `Flight` keeps its response for the cache and for followers,
and no more than they need: past the cache's entry bound and the flight's buffer bound,
with no follower reading, it buffers nothing more; a follower that joined in time
still reads every byte."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from recovea_proxy.headers import response_headers
from recovea_proxy.levers.cache import Keeper
from recovea_proxy.levers.cache_store import CacheEntry, MemoryStore
from recovea_proxy.levers.flights import Flight, FlightRegistry
from recovea_proxy.observability.cache_stats import CacheStats
from recovea_proxy.record import RequestRecord
from recovea_proxy.sources import PIECE_MAX, ReplayPlan, ReplaySource, take

CHUNK = b"data: " + b"x" * 94 + b"\n\n"  # 102 bytes
HEADERS = ((b"Content-Type", b"text/event-stream"), (b"Set-Cookie", b"session=1"))


def keeper(store: MemoryStore, entry_max: int) -> Keeper:
    """A keeper of answers up to `entry_max` bytes for 60 s, tool calls not kept."""
    return Keeper(store, CacheStats(), 60, entry_max, False, scan=False)


def settled_record() -> RequestRecord:
    """The leader's record as the pipe leaves it after a complete answer."""
    record = RequestRecord("r" * 32, "t" * 32, time.perf_counter_ns(), 0)
    record.success = True
    record.usage.finish_reason = "stop"
    return record


class ProviderAnswer:
    """What a flight reads of the provider's response when it begins (its headers as
    aiohttp hands them over: names as the provider wrote them)."""

    status = 200
    raw_headers = HEADERS
    content_type = b"text/event-stream"
    content_length = None
    identity_encoded = True


def answered(flight: Flight, chunks: int) -> None:
    """The leader's response passes: begun, `chunks` chunks fed, closed."""
    flight.begin(ProviderAnswer())  # type: ignore[arg-type]
    for _ in range(chunks):
        flight.feed(CHUNK)
    flight.close()


def test_an_answer_within_the_entry_bound_is_stored_with_its_headers_as_they_came() -> None:
    store = MemoryStore(1 << 20)
    flight = Flight(b"k" * 32, settled_record(), keeper(store, 1024))
    answered(flight, 5)
    entry = store.get(b"k" * 32)
    assert entry is not None and entry.chunks == (CHUNK,) * 5
    # the memory bound counts the key, and at least the body and every header's name
    # and value
    assert (
        store.size - 32 == entry.size >= 5 * len(CHUNK) + sum(len(n) + len(v) for n, v in HEADERS)
    )
    # never replayed: the cookie stays out of what a hit sends
    replayed = ReplaySource(entry.status, ReplayPlan(entry.headers), entry.chunks)
    assert replayed.raw_headers == [(b"content-type", b"text/event-stream")]
    assert b"session=1" not in entry.to_bytes()


def test_past_the_entry_bound_a_cache_only_flight_buffers_nothing_more() -> None:
    store = MemoryStore(1 << 20)
    flight = Flight(b"k" * 32, settled_record(), keeper(store, 1024))
    flight.begin(ProviderAnswer())  # type: ignore[arg-type]
    for _ in range(10):  # 1,020 bytes: within the bound
        flight.feed(CHUNK)
    assert len(flight.chunks) == 10
    for _ in range(30):
        flight.feed(CHUNK)
    assert flight.chunks == [] and flight.keeper is None
    flight.close()
    assert store.get(b"k" * 32) is None and len(store) == 0


def test_an_open_flight_past_its_buffer_bound_stops_taking_followers_but_keeps_for_the_cache() -> (
    None
):
    registry = FlightRegistry(buffer_max_bytes=512, followers_max=10)
    store = MemoryStore(1 << 20)
    flight, joined = registry.lead_or_join(b"k" * 32, settled_record(), keeper(store, 4096))
    assert joined is None  # it leads
    for _ in range(8):  # 816 bytes: past the flight's bound, within the entry's
        flight.feed(CHUNK)
    assert registry.lead_or_join(b"k" * 32, settled_record(), None)[1] is None  # no one joins
    assert len(flight.chunks) == 8
    for _ in range(40):  # past both, nobody following: nothing more is buffered
        flight.feed(CHUNK)
    assert flight.chunks == []
    flight.close()
    assert store.get(b"k" * 32) is None


def test_a_follower_that_joined_in_time_reads_every_byte_past_both_bounds() -> None:
    registry = FlightRegistry(buffer_max_bytes=512, followers_max=10)
    flight, joined = registry.lead_or_join(
        b"k" * 32, settled_record(), keeper(MemoryStore(1 << 20), 1024)
    )
    assert joined is None  # it leads
    follower = registry.lead_or_join(b"k" * 32, settled_record(), None)[1]
    assert follower is not None
    answered(flight, 50)

    async def read_all() -> bytes:
        assert await follower.ready(1.0)
        parts = []
        while chunk := await follower.read():
            parts.append(chunk)
        return b"".join(parts)

    assert asyncio.run(read_all()) == CHUNK * 50


def taken_inline(flight: Flight, chunks: int) -> None:
    """The leader's response passes as the pipe hands it over (`Recorder`): appended to
    the buffer within the room `intake` gives, `feed_past` beyond it, `settle` last."""
    flight.begin(ProviderAnswer())  # type: ignore[arg-type]
    keep, room = flight.intake()
    taken = 0
    for _ in range(chunks):
        if taken + len(CHUNK) <= room:
            keep(CHUNK)
            taken += len(CHUNK)
        else:
            flight.feed_past(taken, CHUNK)
            keep, room = flight.intake()
            taken = 0
    flight.settle(taken)
    flight.close()


def test_chunks_appended_inline_are_bounded_as_chunks_fed_one_by_one() -> None:
    """Within both bounds, past the flight's, past both: a flight the pipe appends to
    inline buffers and keeps for the cache exactly as one fed chunk by chunk."""
    for chunks in (3, 8, 12, 48):
        outcomes = []
        for drive in (answered, taken_inline):
            registry = FlightRegistry(buffer_max_bytes=512, followers_max=10)
            store = MemoryStore(1 << 20)
            flight, joined = registry.lead_or_join(b"k" * 32, settled_record(), keeper(store, 1024))
            assert joined is None  # it leads
            drive(flight, chunks)
            entry = store.get(b"k" * 32)
            outcomes.append((flight.size, len(flight.chunks), entry and entry.chunks))
        assert outcomes[0] == outcomes[1], chunks
        size, buffered, kept = outcomes[1]
        assert size == chunks * len(CHUNK)
        assert kept == ((CHUNK,) * chunks if size <= 1024 else None)
        assert buffered == (chunks if size <= 1024 else 0)


def fill(store: MemoryStore, count: int, *, headers_each: int) -> None:
    """Save `count` entries, each with its own headers and body (nothing shared)."""
    for number in range(count):
        headers = tuple((b"x-header-%d" % i, b"value %d" % number) for i in range(headers_each))
        entry = CacheEntry.of(200, headers, (b"body %d" % number,), time.time())
        store.save(number.to_bytes(32, "big"), entry, 60)


def test_a_full_memory_store_leaves_nothing_for_the_collector_to_walk() -> None:
    """Held entries are plain tuples of bytes and numbers, which the collector stops
    tracking once it has seen them: a cache of thousands of entries adds nothing to
    every later full collection (an object per entry would be walked for its life)."""
    store = MemoryStore(1 << 30)
    gc.collect()
    before = len(gc.get_objects())
    fill(store, 2000, headers_each=6)
    gc.collect()
    gc.collect()
    assert len(store) == 2000
    assert len(gc.get_objects()) - before < 100
    found = store.get((7).to_bytes(32, "big"))
    assert found is not None and found.chunks == (b"body 7",)


def test_a_kept_entry_gives_the_collector_one_new_object_not_one_per_header() -> None:
    """Until the next collection, every object a miss leaves behind counts toward it
    and is walked by it: an entry with a dozen headers leaves one tuple, not a dozen
    header pairs (which made the running gateway's collector run ~15 times as often)."""
    store = MemoryStore(1 << 30)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        fill(store, 500, headers_each=12)
        left = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert len(store) == 500
    assert left <= 500 + 50


def test_the_memory_store_gives_back_each_chunk_and_header_as_it_was_kept() -> None:
    """Held compactly (one header block, one body), an entry comes back as it went in:
    a stream chunk for chunk, the headers pair for pair in the form a replay sends
    them (names lowercased), values holding `: ` intact."""
    store = MemoryStore(1 << 20)
    chunks = (b'data: {"a":1}\n\n', b"", b"data: [DONE]\n\n", b"x" * 5000)
    headers = ((b"Content-Type", b"text/event-stream"), (b"X-Note", b"a: b: c"), (b"X-Empty", b""))
    store.save(b"s" * 32, CacheEntry.of(200, headers, chunks, 1.5), 60)
    store.save(b"j" * 32, CacheEntry.of(201, (), (b"{}",), 2.5), 60)
    stream, json = store.get(b"s" * 32), store.get(b"j" * 32)
    assert stream is not None and json is not None
    assert (stream.chunks, stream.stored_at) == (chunks, 1.5)
    assert [tuple(pair) for pair in stream.headers] == [(n.lower(), v) for n, v in headers]
    assert (json.status, json.headers, json.chunks) == (201, (), (b"{}",))
    again = store.get(b"s" * 32)  # unpacked by the first read, held so for the next
    assert again is not None and (again.chunks, again.headers) == (chunks, stream.headers)
    assert store.size == sum(entry.size + 32 for entry in (stream, json))  # and the keys


def test_a_header_value_with_a_line_break_comes_back_as_one_value_never_as_two_headers() -> None:
    """The packed form keeps each name and value whole: a value holding a line break
    (or a `: `) is read back as that one value, and the next header as the next."""
    store = MemoryStore(1 << 20)
    headers = ((b"content-type", b"application/json"), (b"x-odd", b"1\r\nx-injected: yes"))
    store.save(b"k" * 32, CacheEntry.of(200, headers, (b"{}",), 1.0), 60)
    entry = store.get(b"k" * 32)
    assert entry is not None and entry.headers == headers


def test_followers_keep_the_answer_only_when_their_leader_did_not() -> None:
    """Every request of a flight observes the answer; the leader keeps it, and its
    followers do not pack and store the same bytes again (in Redis, one write per
    follower). When the leader's client left before the end, the first follower to
    finish keeps it, once."""
    for leader_stayed in (True, False):
        store = MemoryStore(1 << 20)
        registry = FlightRegistry(buffer_max_bytes=1 << 16, followers_max=10)
        stats = registry.stats
        keeps = Keeper(store, stats, 60, 4096, False, scan=False)
        leader_record = settled_record()
        if not leader_stayed:
            leader_record.success = None  # as the pipe settles a client that left
        flight, _ = registry.lead_or_join(b"k" * 32, leader_record, keeps)
        followers = [registry.lead_or_join(b"k" * 32, settled_record(), keeps) for _ in range(3)]
        answered(flight, 5)
        for own, subscription in followers:
            assert subscription is not None
            answered(own, 5)  # a follower's own flight saw the same bytes
        assert store.get(b"k" * 32) is not None
        assert stats.joins == 3
        assert stats.kept == 1  # one store: the leader's, or the first follower's
        assert stats.not_kept["incomplete"] == (0 if leader_stayed else 1)


def test_the_memory_store_counts_what_it_evicts() -> None:
    """Entries dropped to make room are counted (`recovea_cache_evictions_total`);
    an entry that alone is past the bound is never held, so never evicted."""
    one = MemoryStore(1 << 20).keep(b"k" * 32, 200, HEADERS, [CHUNK], 60) + 32
    store = MemoryStore(3 * one)
    for n in range(5):
        store.keep(n.to_bytes(32, "big"), 200, HEADERS, [CHUNK], 60)
    assert (len(store), store.evicted) == (3, 2)
    assert not store.holds((0).to_bytes(32, "big"))  # least recently used: out first
    assert store.holds((4).to_bytes(32, "big"))
    store.keep(b"x" * 32, 200, HEADERS, [CHUNK * 100], 60)
    assert (len(store), store.evicted) == (3, 2)


def test_an_entry_once_read_counts_what_it_then_holds() -> None:
    """The first read unpacks an entry into objects and gives it a replay plan; it then
    counts for those (several times its packed bytes for a small answer), and the store
    makes room for it, least recently used first, so read entries stay within the bound
    too."""
    packed = MemoryStore(1 << 20).keep(b"k" * 32, 200, HEADERS, [CHUNK], 60)
    store = MemoryStore(8 * (packed + 32))
    keys = [n.to_bytes(32, "big") for n in range(8)]
    for key in keys:
        store.keep(key, 200, HEADERS, [CHUNK], 60)
    assert (len(store), store.evicted, store.size) == (8, 0, 8 * (packed + 32))
    entry = store.get(keys[7])
    assert entry is not None and entry.size > 2 * packed
    assert store.size <= 8 * (packed + 32) and store.evicted > 0
    assert store.holds(keys[7]) and not store.holds(keys[0])
    assert store.size == entry.size + 32 + (len(store) - 1) * (packed + 32)
    again = store.get(keys[7])  # held unpacked: counted once
    assert again is entry and store.size == entry.size + 32 + (len(store) - 1) * (packed + 32)


async def read_out(source: ReplaySource) -> list[bytes]:
    """Every read of `source` until its end."""
    pieces = []
    while piece := await source.read():
        pieces.append(piece)
    return pieces


def test_the_replays_of_one_entry_share_its_plan_and_say_their_own_age() -> None:
    """Every hit of an entry is handed the same entry and plan by the memory store (its
    headers are lowercased and cleared of those never replayed once, not per hit); each
    replay says its own age, and one replay's headers never reach another's."""
    store = MemoryStore(1 << 20)
    store.keep(b"k" * 40, 200, HEADERS, [CHUNK], 60)
    first, second = store.get(b"k" * 40), store.get(b"k" * 40)
    assert first is not None and first is second
    plan = ReplayPlan(first.headers)
    assert plan.headers == ((b"content-type", b"text/event-stream"),)
    assert plan.content_type == b"text/event-stream"
    young, old = ReplaySource(200, plan, first.chunks, 1), ReplaySource(200, plan, first.chunks, 9)
    assert young.raw_headers == [(b"content-type", b"text/event-stream"), (b"age", b"1")]
    assert old.raw_headers == [(b"content-type", b"text/event-stream"), (b"age", b"9")]
    young.raw_headers.append((b"x-one", b"1"))
    assert plan.headers == ((b"content-type", b"text/event-stream"),)
    assert ReplaySource(200, plan, first.chunks).raw_headers == [
        (b"content-type", b"text/event-stream")
    ]


@pytest.mark.parametrize("age", [None, 0, 42])
def test_a_replays_returned_headers_are_the_ones_its_raw_headers_give(age: int | None) -> None:
    """The headers a JSON replay returns, worked out once per entry by its plan, are
    those `response_headers` gives for the replay's own raw headers (the age aside,
    which the plan puts last): the provider's request id moved to
    `x-recovea-upstream-request-id`, framing and per-connection headers left out; and
    for another provider's request-id header the plan works them out again."""
    stored = (
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"120"),
        (b"X-Request-Id", b"req_fallback"),
        (b"Request-Id", b"req_anthropic"),
        (b"Set-Cookie", b"s=1"),
        (b"Date", b"Sat, 05 Dec 2026 23:00:00 GMT"),
        (b"Transfer-Encoding", b"chunked"),
        (b"OpenAI-Processing-Ms", b"120"),
    )
    plan = ReplayPlan(stored)
    for id_header, upstream in (
        (b"x-request-id", b"req_fallback"),
        (b"request-id", b"req_anthropic"),
    ):
        for _ in range(2):  # the second time from what the plan kept
            replay = ReplaySource(200, plan, [b"{}"], age)
            returned, upstream_id = plan.returned_headers(id_header, replay.raw_headers)
            expected, expected_id = response_headers(
                replay.raw_headers, id_header, keep_length=False
            )
            assert upstream_id == expected_id == upstream
            assert sorted(returned) == sorted(expected)
            if age is not None:
                assert returned[-1] == (b"age", b"%d" % age)
            assert (b"x-recovea-upstream-request-id", upstream) in returned
            names = {name for name, _ in returned}
            assert not names & {b"content-length", b"set-cookie", b"date", b"x-request-id"}


def test_a_stored_stream_is_replayed_in_few_pieces_byte_for_byte() -> None:
    """A streamed answer stored as 1,000 reads of the provider (a token an event) is
    handed to the pipe in pieces of at most `PIECE_MAX`, not 1,000 sends: the same
    bytes, so the client's parser reads the same events."""
    chunks = [CHUNK] * 1000  # 102,000 bytes
    pieces = asyncio.run(read_out(ReplaySource(200, ReplayPlan(HEADERS), chunks)))
    assert b"".join(pieces) == CHUNK * 1000
    assert [len(piece) for piece in pieces] == [
        (PIECE_MAX // len(CHUNK)) * len(CHUNK),
        (1000 - PIECE_MAX // len(CHUNK)) * len(CHUNK),
    ]


def test_a_chunk_larger_than_a_piece_is_handed_on_alone_and_whole() -> None:
    large = b"y" * (PIECE_MAX + 1)
    assert take([CHUNK, large, CHUNK], 0) == (CHUNK, 1)
    assert take([CHUNK, large, CHUNK], 1) == (large, 2)
    assert take([CHUNK, large, CHUNK], 2) == (CHUNK, 3)
    exact = [b"z" * (PIECE_MAX // 2)] * 3
    assert take(exact, 0) == (b"z" * PIECE_MAX, 2)


def test_a_follower_that_joins_late_reads_what_passed_at_once() -> None:
    """What passed before a follower joined is one read (then the rest live, as it
    comes)."""
    registry = FlightRegistry(buffer_max_bytes=1 << 20, followers_max=10)
    flight, _ = registry.lead_or_join(b"k" * 32, settled_record(), None)
    flight.begin(ProviderAnswer())  # type: ignore[arg-type]
    for _ in range(100):
        flight.feed(CHUNK)
    follower = registry.lead_or_join(b"k" * 32, settled_record(), None)[1]
    assert follower is not None

    async def follow() -> list[bytes]:
        assert await follower.ready(1.0)
        passed = await follower.read()
        reading = asyncio.ensure_future(follower.read())
        await asyncio.sleep(0)
        flight.feed(b"data: [DONE]\n\n")
        live = await reading
        flight.close()
        return [passed, live, await follower.read()]

    assert asyncio.run(follow()) == [CHUNK * 100, b"data: [DONE]\n\n", b""]
