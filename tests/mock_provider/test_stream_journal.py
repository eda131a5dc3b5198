"""The journal follows every stream the mock sends: how many events it wrote and how the
stream ended — completed, closed by the client, or cut by the mock's own fault.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from tests.mock_provider.helpers import AUTH, CHAT, post, sse

STREAM = {**CHAT, "stream": True}


async def journal(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with http.get(f"{url}/_mock/requests") as response:
        entries: list[dict[str, Any]] = await response.json()
    return entries


async def eventually(
    http: aiohttp.ClientSession,
    url: str,
    check: Callable[[list[dict[str, Any]]], bool],
    deadline_s: float = 5.0,
) -> list[dict[str, Any]]:
    """The journal once `check` holds for it; fail after the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while True:
        entries = await journal(http, url)
        if check(entries):
            return entries
        assert loop.time() < end, f"journal never matched: {entries}"
        await asyncio.sleep(0.02)  # poll interval, not a synchronization


async def test_a_whole_stream_is_journalled_as_completed(
    http: aiohttp.ClientSession, url: str
) -> None:
    """A stream read to its end: every event it wrote is counted and it `completed`."""
    status, _, raw = await post(http, f"{url}/v1/chat/completions", STREAM, {"x-mock-chunks": "5"})
    assert status == 200
    (entry,) = await journal(http, url)
    assert entry["stream"] == {"events": len(sse(raw)), "end": "completed"}


async def test_a_request_answered_with_json_has_no_stream_record(
    http: aiohttp.ClientSession, url: str
) -> None:
    """Only streamed answers get a `stream` record."""
    await post(http, f"{url}/v1/chat/completions", CHAT)
    (entry,) = await journal(http, url)
    assert "stream" not in entry


async def test_a_client_that_closes_mid_stream_is_journalled(
    http: aiohttp.ClientSession, url: str
) -> None:
    """A client that reads two events and closes the connection: the mock stops within
    a chunk delay and says `client_closed`, having written far fewer than the 50 events."""
    headers = {**AUTH, "x-mock-chunks": "50", "x-mock-chunk-delay-ms": "100"}
    async with http.post(f"{url}/v1/chat/completions", json=STREAM, headers=headers) as response:
        assert response.status == 200
        read = b""
        while read.count(b"\n\n") < 2:
            read += await response.content.readany()
        response.close()  # drop the connection, as a proxy whose client left does
    entries = await eventually(
        http, url, lambda seen: seen[0]["stream"]["end"] != "streaming", deadline_s=3
    )
    assert entries[0]["stream"]["end"] == "client_closed"
    assert 2 <= entries[0]["stream"]["events"] < 50


async def test_the_mocks_own_reset_is_journalled_as_reset(
    http: aiohttp.ClientSession, url: str
) -> None:
    """`x-mock-fault: reset-mid-stream` writes 3 events, cuts the connection, says `reset`."""
    headers = {**AUTH, "x-mock-fault": "reset-mid-stream"}
    try:
        async with http.post(
            f"{url}/v1/chat/completions", json=STREAM, headers=headers
        ) as response:
            await response.read()
    except aiohttp.ClientPayloadError:
        pass  # the cut, as the client sees it
    (entry,) = await journal(http, url)
    assert entry["stream"] == {"events": 3, "end": "reset"}
