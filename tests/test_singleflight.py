"""Singleflight: identical shareable requests in flight at once share one upstream
call; a request that joins mid-stream gets what has passed, then the rest live; the
leader's client leaving does not cut the others; a call that breaks ends every stream
alike; past the first-byte wait or the followers bound, a request goes on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recovea_proxy.meter.verify import split_response
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, grew, metric_value, wait_until

SLOW = {"x-mock-chunk-delay-ms": "40", "x-mock-chunks": "30"}


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "singleflight")


def body(prompt: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "stream": True,
    }


async def test_twenty_identical_streams_share_one_call_and_survive_the_leader_leaving(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The leader starts a slow stream; 19 identical requests join it mid-stream; the
    leader's client then leaves. The provider is called once; the 19 followers each
    receive the whole stream, byte-identical to each other and to a later cache hit,
    and every request has its row (followers marked dedup_singleflight, with usage)."""
    prompt = "flight-twenty"
    headers = {**tenant.bearer, **SLOW}
    before = gateway.metrics()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        leader = client.stream("POST", "/v1/chat/completions", json=body(prompt), headers=headers)
        response = await leader.__aenter__()
        leader_id = response.headers["x-request-id"]
        assert response.headers["x-recovea-cache"] == "miss"
        chunks = response.aiter_raw()
        await anext(chunks)  # the stream has begun: followers will join mid-stream

        async def join() -> httpx.Response:
            """A follower's request, answered as far as its status and headers: the
            gateway sends those once the request has joined the flight."""
            request = client.build_request(
                "POST", "/v1/chat/completions", json=body(prompt), headers=headers
            )
            reply = await client.send(request, stream=True)
            assert reply.status_code == 200
            return reply

        async def finish(reply: httpx.Response) -> tuple[str, bytes]:
            content = await reply.aread()
            await reply.aclose()
            return reply.headers["x-request-id"], content

        # Every follower has joined before the leader leaves (no race with its exit).
        joined = await asyncio.gather(*(join() for _ in range(19)))
        await leader.__aexit__(None, None, None)  # the leader's client goes away
        results = await asyncio.gather(*(finish(reply) for reply in joined))

        hit = await client.post("/v1/chat/completions", json=body(prompt), headers=headers)
    assert hit.headers["x-recovea-cache"] == "hit"
    contents = {split_response(content)[0] for _, content in results}
    assert len(contents) == 1
    assert contents == {split_response(hit.content)[0]}
    assert next(iter(contents)).endswith(b"data: [DONE]\n\n")
    assert mock.calls_holding(prompt) == 1

    leader_row = stored(gateway, tenant, "requests", leader_id)
    assert leader_row["dedup_singleflight"] is False
    for request_id, _ in results:
        row = stored(gateway, tenant, "requests", request_id)
        assert row["dedup_singleflight"] is True
        assert row["levers_fired"]["dedup"] == "hit"
        assert (row["input_tokens"], row["output_tokens"]) == (12, 16)
        assert row["success"] is True

    # /metrics: 20 misses (the leader and its followers) and the later hit; 19 joins;
    # the answer the leader's client left is not kept, and the first follower to finish
    # keeps it for all (the others do not pack and store the same bytes again)
    after = gateway.metrics()
    assert grew(before, after, "recovea_cache_requests_total", outcome="miss") == 20
    assert grew(before, after, "recovea_cache_requests_total", outcome="hit") == 1
    assert grew(before, after, "recovea_singleflight_joins_total") == 19
    assert grew(before, after, "recovea_cache_answers_total", outcome="kept") == 1
    assert grew(before, after, "recovea_cache_answers_total", outcome="incomplete") == 1
    assert metric_value(after, "recovea_cache_entries") >= 1
    assert metric_value(after, "recovea_cache_bytes") > len(next(iter(contents)))


async def test_a_failed_shared_call_sends_followers_upstream_on_their_own(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """When the shared call fails before its first byte (the provider resets the
    connection), the leader gets the 502 and the followers each call upstream
    themselves."""
    prompt = "flight-reset"
    headers = {**tenant.bearer, "x-mock-fault": "reset", "x-mock-first-byte-delay-ms": "300"}
    before = gateway.metrics()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body(prompt), headers=headers)
                for _ in range(3)
            )
        )
    assert [r.status_code for r in replies] == [502, 502, 502]
    assert mock.calls_holding(prompt) == 3
    after = gateway.metrics()
    assert grew(before, after, "recovea_singleflight_joins_total") == 2
    assert grew(before, after, "recovea_singleflight_alone_total", reason="failed") == 2


async def test_a_shared_call_that_breaks_after_its_first_byte_ends_every_stream_alike(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The provider cuts the shared stream after three events, once three followers
    have joined: the leader and every follower get the same bytes, ending with the
    same provider-shaped error event; one upstream call; every row says it failed, and
    the broken answer is not kept."""
    prompt = "flight-broken"
    headers = {
        **tenant.bearer,
        "x-mock-fault": "reset-mid-stream",
        # the cut comes after three events: time enough for the followers to join
        "x-mock-chunk-delay-ms": "600",
        "x-mock-chunks": "30",
    }
    before = gateway.metrics()
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        leader, chunks, first = await begin_stream(client, prompt, headers)

        async def follow() -> httpx.Response:
            return await client.post("/v1/chat/completions", json=body(prompt), headers=headers)

        followers = await asyncio.gather(*(follow() for _ in range(3)))
        leader_bytes = first + b"".join([part async for part in chunks])
        await leader.aclose()
    streams = {split_response(leader_bytes)[0]} | {split_response(f.content)[0] for f in followers}
    assert len(streams) == 1
    stream = next(iter(streams))
    assert b"data: [DONE]" not in stream
    last_event = stream.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert b'"error"' in last_event and b"stream broke" in last_event
    assert mock.calls_holding(prompt) == 1
    for response in (leader, *followers):
        row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
        assert row["success"] is False
        assert row["status"] == "error"
    after = gateway.metrics()
    assert grew(before, after, "recovea_singleflight_joins_total") == 3
    assert grew(before, after, "recovea_cache_answers_total", outcome="kept") == 0
    assert grew(before, after, "recovea_cache_answers_total", outcome="incomplete") == 1


@pytest.fixture(scope="module")
def bounded(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """A gateway whose followers wait 0.3 s for a first byte, one follower a flight."""
    env = {
        **upstream_env(mock),
        **db_env,
        "RECOVEA_FLIGHT_FIRST_BYTE_WAIT_S": "0.3",
        "RECOVEA_FLIGHT_FOLLOWERS_MAX": "1",
    }
    gw = Gateway(env, workdir)
    yield gw
    gw.stop()


async def test_a_follower_waits_for_the_first_byte_only_so_long(
    bounded: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A follower whose flight has not begun within RECOVEA_FLIGHT_FIRST_BYTE_WAIT_S
    calls upstream on its own: two calls, both answered, the follower's row not marked
    as shared."""
    prompt = "flight-first-byte-wait"
    headers = {**tenant.bearer, "x-mock-first-byte-delay-ms": "3000"}
    before = bounded.metrics()
    async with httpx.AsyncClient(base_url=bounded.url, timeout=60) as client:
        leader = asyncio.ensure_future(
            client.post("/v1/chat/completions", json=body(prompt), headers=headers)
        )
        await asyncio.to_thread(wait_until, lambda: mock.calls_holding(prompt) == 1, 10)
        follower = await client.post("/v1/chat/completions", json=body(prompt), headers=headers)
        first = await leader
    assert (first.status_code, follower.status_code) == (200, 200)
    assert follower.headers["x-recovea-cache"] == "miss"
    assert mock.calls_holding(prompt) == 2
    row = stored(bounded, tenant, "requests", follower.headers["x-request-id"])
    assert (row["dedup_singleflight"], row["levers_fired"]["dedup"]) == (False, "miss")
    after = bounded.metrics()
    assert grew(before, after, "recovea_singleflight_joins_total") == 1
    assert grew(before, after, "recovea_singleflight_alone_total", reason="waited") == 1


async def test_past_the_followers_bound_a_request_calls_upstream_on_its_own(
    bounded: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """With RECOVEA_FLIGHT_FOLLOWERS_MAX=1, the first identical request joins the slow
    stream in flight and the second goes upstream itself: two calls for three
    requests, three whole streams."""
    prompt = "flight-followers-bound"
    # 3 s of stream: both later requests arrive while it is in flight
    headers = {**tenant.bearer, "x-mock-chunk-delay-ms": "100", "x-mock-chunks": "30"}
    before = bounded.metrics()
    async with httpx.AsyncClient(base_url=bounded.url, timeout=60) as client:
        leader, chunks, _ = await begin_stream(client, prompt, headers)
        joined, alone = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=body(prompt), headers=headers) for _ in "ab")
        )
        rest = b"".join([part async for part in chunks])
        await leader.aclose()
    assert b"data: [DONE]\n\n" in rest  # before the receipt's line
    assert all(r.status_code == 200 for r in (joined, alone))
    shared = sorted(
        stored(bounded, tenant, "requests", r.headers["x-request-id"])["dedup_singleflight"]
        for r in (joined, alone)
    )
    assert shared == [False, True]
    assert mock.calls_holding(prompt) == 2
    after = bounded.metrics()
    assert grew(before, after, "recovea_singleflight_joins_total") == 1
    assert grew(before, after, "recovea_singleflight_alone_total", reason="followers") == 1


async def begin_stream(
    client: httpx.AsyncClient, prompt: str, headers: dict[str, str]
) -> tuple[httpx.Response, AsyncIterator[bytes], bytes]:
    """The leader's streamed request, once its first bytes have come (the flight is
    open for followers): the response, the rest of its bytes, and the first."""
    request = client.build_request(
        "POST", "/v1/chat/completions", json=body(prompt), headers=headers
    )
    leader = await client.send(request, stream=True)
    chunks = leader.aiter_raw()
    return leader, chunks, await anext(chunks)
