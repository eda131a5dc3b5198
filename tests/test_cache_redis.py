"""The exact cache shared in Redis: what one replica stores another answers from, and
Redis is fail-open — stopped, corrupt, or silent, it never becomes the caller's error;
the memory tier keeps answering what it holds, the fault is counted, and a Redis
that comes back is used again without a restart.

Against a real `redis-server` that the tests start, real gateway processes and the
mock provider."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from recovea_proxy.levers.cache_redis import CacheUnavailable, RedisStore, redis_key
from recovea_proxy.levers.cache_store import CacheEntry, MemoryStore
from recovea_proxy.levers.cache_tiers import TieredStore
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.redis_support import RedisServer, SilentServer
from tests.support import Gateway, MockServer, grew, metric_value, wait_until

T = TypeVar("T")

ENTRY = CacheEntry.of(
    200,
    ((b"content-type", b"text/event-stream"),),
    (b'data: {"choices":[]}\n\n', b"data: [DONE]\n\n"),
    time.time(),
)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (a test that kills it starts it again)."""
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, which it may kill and start again."""
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def new_key() -> bytes:
    return os.urandom(32)


# The store on its own -------------------------------------------------------------


async def test_what_one_store_saves_another_finds_until_its_ttl(
    redis_server: RedisServer,
) -> None:
    """A saved entry is written off the caller's path under recovea:cache:v1:<hex key>
    with Redis's own expiry at its TTL; another store (another replica) reads the
    same entry back, with the seconds it has left."""
    key = new_key()
    faults: list[str] = []
    writer = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    writer.start()
    writer.save(key, ENTRY, 60)
    await writer.close()  # writes what is pending
    reader = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        found = await reader.fetch(key)
    finally:
        await reader.close()
    assert found is not None
    entry, left_s = found
    assert entry == ENTRY
    assert 50 < left_s <= 60
    with redis_server.client() as client:
        assert redis_key(key) == b"recovea:cache:v1:" + key.hex().encode()
        assert 50 < client.ttl(redis_key(key)) <= 60
    assert faults == []


async def test_a_value_that_is_not_an_entry_is_a_counted_miss(
    redis_server: RedisServer,
) -> None:
    """Bytes under an entry's key that do not parse are a miss, counted `corrupt`."""
    key = new_key()
    with redis_server.client() as client:
        client.set(redis_key(key), b"RCV1 but not really", ex=60)
    faults: list[str] = []
    store = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        assert await store.lookup(key) is None
    finally:
        await store.close()
    assert faults == ["corrupt"]


def _with(**changes: Any) -> CacheEntry:
    """`ENTRY` with some fields changed, as a value in Redis could hold it."""
    fields = {"status": ENTRY.status, "headers": ENTRY.headers, "stored_at": ENTRY.stored_at}
    fields.update(changes)
    return CacheEntry.of(fields["status"], fields["headers"], ENTRY.chunks, fields["stored_at"])


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (_with(status=500), "a status never kept"),
        (_with(status=0), "a status never kept"),
        (_with(stored_at=float("nan")), "no real time"),
        (_with(stored_at=float("inf")), "no real time"),
        (_with(headers=((b"x-a", b"one\r\nset-cookie: s=1"),)), "cannot be written"),
        (_with(headers=((b"x-a", b"nul\x00"),)), "cannot be written"),
        (_with(headers=((b"bad name", b"v"),)), "cannot be written"),
        (_with(headers=((b"", b"v"),)), "cannot be written"),
        (_with(headers=((b"Content-Encoding", b"gzip"),)), "an encoded body"),
    ],
)
def test_an_entry_no_gateway_could_have_stored_does_not_parse(
    entry: CacheEntry, reason: str
) -> None:
    """Well-formed bytes whose entry could not be replayed as it is (another status
    than 200, no real time to reckon an age from, a header the response writer refuses,
    an encoded body the replay would call identity) are refused like garbage: the
    lookup is then a counted miss, not a broken answer to the client."""
    with pytest.raises(ValueError, match=reason):
        CacheEntry.from_bytes(entry.to_bytes())


def test_an_entry_a_gateway_stores_parses_back() -> None:
    """The rules above refuse nothing a gateway keeps: a provider's usual headers, an
    explicit identity encoding, a tab inside a value."""
    entry = _with(
        headers=(
            (b"Content-Type", b"application/json"),
            (b"content-encoding", b"identity"),
            (b"x-request-id", b"req_1\tsecond"),
        )
    )
    assert CacheEntry.from_bytes(entry.to_bytes()) == entry


async def test_pending_writes_are_bounded(redis_server: RedisServer) -> None:
    """Past `pending_max` queued writes, a save is skipped and counted `backlog`; the
    queued ones are written."""
    keys = [new_key() for _ in range(5)]
    faults: list[str] = []
    store = RedisStore(redis_server.url, budget_s=1, count=faults.append, pending_max=2)
    for key in keys:  # nothing drains yet: the writer is not started
        store.save(key, ENTRY, 60)
    assert faults == ["backlog"] * 3
    store.start()
    await store.close()
    with redis_server.client() as client:
        assert [client.exists(redis_key(key)) for key in keys] == [1, 1, 0, 0, 0]


async def test_a_stopped_redis_is_a_counted_fault_and_is_used_again_when_back(
    own_redis: RedisServer,
) -> None:
    """Redis killed: a lookup raises `CacheUnavailable` (counted `unreachable`), then
    fails at once while Redis is held down (`down`). Redis started again: the same
    store reads from it again."""
    key = new_key()
    with own_redis.client() as client:
        client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
    faults: list[str] = []
    store = RedisStore(own_redis.url, budget_s=1, count=faults.append, hold_s=0.5)
    try:
        assert await store.lookup(key) == ENTRY
        own_redis.kill()
        with pytest.raises(CacheUnavailable):
            await store.lookup(key)
        with pytest.raises(CacheUnavailable):
            await store.lookup(key)
        assert faults == ["unreachable", "down"]
        own_redis.start()
        with own_redis.client() as client:
            client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
        assert await eventually(lambda: store.lookup(key)) == ENTRY
    finally:
        await store.close()


async def test_a_silent_redis_costs_one_budget_then_is_held_down(
    silent: SilentServer,
) -> None:
    """A Redis that takes the connection and never answers: the lookup gives up at its
    budget (`timeout`); while Redis is held down the next one fails at once (`down`),
    and a save is not even tried."""
    faults: list[str] = []
    store = RedisStore(silent.url, budget_s=0.1, count=faults.append, hold_s=30)
    store.start()
    try:
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.lookup(new_key())
        first_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(CacheUnavailable):
            await store.lookup(new_key())
        second_s = time.monotonic() - started
        store.save(new_key(), ENTRY, 60)
    finally:
        await store.close()
    assert 0.1 <= first_s < 1.0
    assert second_s < 0.05
    assert faults == ["timeout", "down", "down"]


async def test_the_memory_tier_answers_what_it_holds_without_asking_redis(
    silent: SilentServer,
) -> None:
    """In front of a silent Redis, what this process saved is still a hit (no fault);
    a key memory does not hold needs Redis and raises `CacheUnavailable`."""
    faults: list[str] = []
    shared = RedisStore(silent.url, budget_s=0.1, count=faults.append)
    tiers = TieredStore(MemoryStore(1 << 20), shared)
    key = new_key()
    try:
        tiers.save(key, ENTRY, 60)
        assert await tiers.lookup(key) == ENTRY
        assert faults == []
        with pytest.raises(CacheUnavailable):
            await tiers.lookup(new_key())
        assert faults == ["timeout"]
    finally:
        await shared.close()


async def test_an_entry_found_in_redis_is_kept_in_memory_too(
    redis_server: RedisServer,
) -> None:
    """A memory miss found in Redis is answered and kept in this process's memory."""
    key = new_key()
    with redis_server.client() as client:
        client.set(redis_key(key), ENTRY.to_bytes(), ex=60)
    faults: list[str] = []
    memory = MemoryStore(1 << 20)
    shared = RedisStore(redis_server.url, budget_s=1, count=faults.append)
    try:
        assert await TieredStore(memory, shared).lookup(key) == ENTRY
    finally:
        await shared.close()
    assert await memory.lookup(key) == ENTRY
    assert faults == []


async def eventually(call: Callable[[], Awaitable[T]], deadline_s: float = 10.0) -> T:
    """`call()`'s result once it stops raising `CacheUnavailable` (polled)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return await call()
        except CacheUnavailable:
            if time.monotonic() > end:
                raise
        await asyncio.sleep(0.02)


# Two gateways sharing one Redis ----------------------------------------------------


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "cache-redis")


@pytest.fixture(scope="module")
def replicas(
    mock: MockServer, workdir: Path, db_env: dict[str, str], redis_server: RedisServer
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two gateway processes (replicas) on one Redis."""
    env = {**upstream_env(mock), **db_env, "RECOVEA_REDIS_URL": redis_server.url}
    first = Gateway(env, workdir)
    second = Gateway(env, workdir)
    yield first, second
    first.stop()
    second.stop()


def ask(
    gateway: Gateway, tenant: Tenant, prompt: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
    }
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={**tenant.bearer, **(headers or {})},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response


def upstream_calls(mock: MockServer, prompt: str) -> int:
    return sum(1 for r in mock.requests() if prompt in str(r.get("body")))


def stored_key(server: RedisServer, before: set[bytes]) -> bytes:
    """The one cache key that appeared in Redis since `before` (written off the
    request's path, so waited for)."""

    def appeared() -> bytes | None:
        with server.client() as client:
            new = set(client.keys("recovea:cache:v1:*")) - before
        assert len(new) <= 1, new
        return new.pop() if new else None

    found: bytes = wait_until(appeared, 10, "a cache entry in Redis")
    return found


def cache_keys(server: RedisServer) -> set[bytes]:
    with server.client() as client:
        return set(client.keys("recovea:cache:v1:*"))


def test_what_one_replica_stored_the_other_answers(
    replicas: tuple[Gateway, Gateway], tenant: Tenant, mock: MockServer, redis_server: RedisServer
) -> None:
    """A miss on the first gateway is stored in Redis; the same request on the second
    gateway is a hit with the same body, and the provider was called once."""
    first, second = replicas
    before = cache_keys(redis_server)
    missed = ask(first, tenant, "redis-shared-1")
    assert missed.headers["x-recovea-cache"] == "miss"
    stored_key(redis_server, before)
    hit = ask(second, tenant, "redis-shared-1")
    assert hit.headers["x-recovea-cache"] == "hit"
    assert hit.content == missed.content
    assert int(hit.headers["age"]) >= 0
    assert upstream_calls(mock, "redis-shared-1") == 1
    row = stored(second, tenant, "requests", hit.headers["x-request-id"])
    assert (row["cache_hit"], row["cache_type"]) == (True, "exact")
    # an entry found in Redis is as old as it was stored: max-age=0 takes none
    before = cache_keys(redis_server)
    ask(first, tenant, "redis-shared-2")
    stored_key(redis_server, before)
    too_old = ask(second, tenant, "redis-shared-2", {"cache-control": "max-age=0"})
    assert too_old.headers["x-recovea-cache"] == "miss"
    assert upstream_calls(mock, "redis-shared-2") == 2


def test_a_corrupt_value_in_redis_is_a_miss_not_an_error(
    replicas: tuple[Gateway, Gateway], tenant: Tenant, mock: MockServer, redis_server: RedisServer
) -> None:
    """Garbage under an entry's key: the other gateway answers from the provider (200,
    a miss), counts it `corrupt`, and stores a good entry over it."""
    first, second = replicas
    before = cache_keys(redis_server)
    ask(first, tenant, "redis-corrupt-1")
    key = stored_key(redis_server, before)
    with redis_server.client() as client:
        client.set(key, b"\x00garbage", ex=60)
    again = ask(second, tenant, "redis-corrupt-1")
    assert again.headers["x-recovea-cache"] == "miss"
    assert upstream_calls(mock, "redis-corrupt-1") == 2
    metrics = second.metrics()
    assert metric_value(metrics, "gateway_fail_open_total", layer="cache", reason="corrupt") == 1

    def parses_again() -> bool:
        with redis_server.client() as client:
            value = client.get(key)
        try:
            return value is not None and CacheEntry.from_bytes(value).status == 200
        except ValueError:
            return False

    wait_until(parses_again, 10, "a good entry over the corrupt one")


def test_an_entry_with_a_header_no_response_may_carry_is_a_miss(
    replicas: tuple[Gateway, Gateway], tenant: Tenant, mock: MockServer, redis_server: RedisServer
) -> None:
    """A well-formed entry under a request's key whose header would split the response
    (a CR LF in a value): the other gateway does not replay it but answers from the
    provider (200, a miss, no planted header), and counts it `corrupt`."""
    first, second = replicas
    # counted as a difference: the metric files of earlier tests' gateways may be summed in
    metrics_before = second.metrics()
    before = cache_keys(redis_server)
    ask(first, tenant, "redis-planted-1")
    key = stored_key(redis_server, before)
    with redis_server.client() as client:
        good = CacheEntry.from_bytes(client.get(key))
        planted = CacheEntry.of(
            200,
            (*good.headers, (b"x-planted", b"1\r\nset-cookie: session=stolen")),
            good.chunks,
            good.stored_at,
        )
        client.set(key, planted.to_bytes(), ex=60)
    again = ask(second, tenant, "redis-planted-1")
    assert again.headers["x-recovea-cache"] == "miss"
    assert "x-planted" not in again.headers and "set-cookie" not in again.headers
    assert upstream_calls(mock, "redis-planted-1") == 2
    corrupt = grew(
        metrics_before, second.metrics(), "gateway_fail_open_total", layer="cache", reason="corrupt"
    )
    assert corrupt == 1


def test_redis_stopped_mid_run_then_started_again(
    replicas: tuple[Gateway, Gateway], tenant: Tenant, mock: MockServer, redis_server: RedisServer
) -> None:
    """Redis killed: requests keep being served — what a gateway's memory holds is a
    hit, the rest goes upstream with the cache lever's `error` and
    `fell_back_to_baseline` — and the fault is counted. Redis started again: the
    replicas share the cache again, without a restart."""
    first, second = replicas
    before = cache_keys(redis_server)
    ask(first, tenant, "redis-stop-held")
    stored_key(redis_server, before)
    assert ask(second, tenant, "redis-stop-held").headers["x-recovea-cache"] == "hit"

    redis_server.kill()
    try:
        held = ask(second, tenant, "redis-stop-held")
        assert held.headers["x-recovea-cache"] == "hit"  # from its memory
        fresh = ask(second, tenant, "redis-stop-fresh")
        row = stored(second, tenant, "requests", fresh.headers["x-request-id"])
        assert row["levers_fired"]["cache"] == "error"
        assert row["fell_back_to_baseline"] is True
        assert upstream_calls(mock, "redis-stop-held") == 1
        assert upstream_calls(mock, "redis-stop-fresh") == 1
        assert (
            metric_value(
                second.metrics(), "gateway_fail_open_total", layer="cache", reason="unreachable"
            )
            >= 1
        )
    finally:
        redis_server.start()

    attempts = iter(range(1000))

    def shared_again() -> bool:
        prompt = f"redis-back-{next(attempts)}"
        before = cache_keys(redis_server)
        missed = ask(first, tenant, prompt)
        if first.record(missed.headers["x-request-id"])["levers_fired"]["cache"] != "miss":
            return False  # Redis still held down: try again with a new request
        stored_key(redis_server, before)
        return ask(second, tenant, prompt).headers["x-recovea-cache"] == "hit"

    wait_until(shared_again, 20, "the replicas sharing the cache again")


def test_a_redis_that_does_not_answer_costs_about_the_budget(
    start_gateway: Callable[..., Gateway], tenant: Tenant, silent: SilentServer
) -> None:
    """A Redis that never answers: the request is served from the provider within about
    the cache budget, the row says the cache lever's `error` and
    `fell_back_to_baseline`, and the timeout is counted."""
    gateway = start_gateway(RECOVEA_REDIS_URL=silent.url, RECOVEA_CACHE_BUDGET_MS="300")
    started = time.monotonic()
    response = ask(gateway, tenant, "redis-silent-1")
    elapsed_s = time.monotonic() - started
    assert 0.3 <= elapsed_s < 1.5
    row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
    assert row["levers_fired"]["cache"] == "error"
    assert row["fell_back_to_baseline"] is True
    metrics = gateway.metrics()
    assert metric_value(metrics, "gateway_fail_open_total", layer="cache", reason="timeout") == 1
    assert metric_value(metrics, "gateway_fail_open_total", layer="lever") == 1
