"""The exact cache shared by two gateway processes (replicas) through one Redis: what
one stores the other answers from; a corrupt or planted value is a miss, not an
error; Redis stopped mid-run, then started again, and a Redis that never answers,
cost requests nothing but the cache.

Against a real `redis-server` that the tests start, real gateway processes and the
mock provider."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recovea_proxy.levers.cache_store import CacheEntry
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.redis_support import RedisServer, SilentServer
from tests.support import Gateway, MockServer, grew, metric_value, wait_until


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
    # counted as a difference: the replicas serve the whole module (the corrupt value
    # above was counted by this gateway too)
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
