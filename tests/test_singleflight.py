"""Singleflight: identical shareable requests in flight at once share one upstream
call; a request that joins mid-stream gets what has passed, then the rest live; the
leader's client leaving does not cut the others."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recovea_proxy.meter.verify import split_response
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer

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


async def test_a_failed_shared_call_sends_followers_upstream_on_their_own(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """When the shared call fails before its first byte (the provider resets the
    connection), the leader gets the 502 and the followers each call upstream
    themselves."""
    prompt = "flight-reset"
    headers = {**tenant.bearer, "x-mock-fault": "reset", "x-mock-first-byte-delay-ms": "300"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as client:
        replies = await asyncio.gather(
            *(
                client.post("/v1/chat/completions", json=body(prompt), headers=headers)
                for _ in range(3)
            )
        )
    assert [r.status_code for r in replies] == [502, 502, 502]
    assert mock.calls_holding(prompt) == 3
