"""Determinism, the request journal and echo, and the mock's command line.

Every test talks to a mock on a real socket."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys

import aiohttp
import orjson

from recovea_proxy.mock_provider import (
    MockDefaults,
    add_cli_arguments,
    create_mock_app,
    defaults_from_args,
)
from tests.mock_provider.helpers import (
    CHAT,
    KEY,
    MARKER,
    MESSAGES,
    chunks,
    post,
)


async def test_same_request_gets_the_same_bytes(http: aiohttp.ClientSession, url: str) -> None:
    """Ids and `created` derive from the body: the same request is answered byte for byte."""
    for path, body in (
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/responses", {"model": "m", "input": MARKER, "stream": True}),
        ("/v1/messages", {**MESSAGES, "stream": True}),
        ("/api/v1/chat/completions", CHAT),
    ):
        first = await post(http, url + path, body)
        second = await post(http, url + path, body)
        assert first[2] == second[2], path
    one = orjson.loads((await post(http, f"{url}/v1/chat/completions", CHAT))[2])
    other = orjson.loads(
        (await post(http, f"{url}/v1/chat/completions", {**CHAT, "model": "gpt-4.1"}))[2]
    )
    assert one["id"] != other["id"]
    digest = hashlib.sha256(orjson.dumps(CHAT, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert one["id"] == "chatcmpl-" + digest[:24]
    assert one["created"] == 1_700_000_000 + int(digest[:6], 16) % 1_000_000


async def test_stream_options_do_not_change_ids(http: aiohttp.ClientSession, url: str) -> None:
    """A stream asked for usage has the ids of the same stream not asking (as via a gateway)."""
    plain = {**CHAT, "stream": True}
    asked = {"stream_options": {"include_usage": True}, **plain}
    _, _, a = await post(http, f"{url}/v1/chat/completions", plain)
    _, _, b = await post(http, f"{url}/v1/chat/completions", asked)
    assert chunks(a)[0]["id"] == chunks(b)[0]["id"]
    assert b.replace(b',"usage":null', b"").startswith(a[: a.index(b"data: [DONE]")])


async def test_journal_records_requests_and_clears(http: aiohttp.ClientSession, url: str) -> None:
    """GET /_mock/requests lists what arrived (oldest first, last 200); DELETE clears it."""
    await post(http, f"{url}/v1/chat/completions?trace=1", CHAT, {"X-Custom": "Value"})
    await post(http, f"{url}/v1/messages", b"not json")
    async with http.get(f"{url}/_mock/requests") as response:
        seen = await response.json()
    assert [r["path"] for r in seen] == ["/v1/chat/completions", "/v1/messages"]
    first = seen[0]
    assert first["method"] == "POST" and first["query"] == "trace=1"
    assert first["headers"]["x-custom"] == "Value"
    assert first["headers"]["authorization"] == f"Bearer {KEY}"
    assert first["body"] == CHAT and first["body_bytes"] == len(orjson.dumps(CHAT))
    assert seen[1]["body"] is None and seen[1]["body_bytes"] == 8
    async with http.delete(f"{url}/_mock/requests") as response:
        assert response.status == 204
    for i in range(205):
        async with http.get(f"{url}/v1/_mock/echo?i={i}"):
            pass
    async with http.get(f"{url}/_mock/requests") as response:
        seen = await response.json()
    assert len(seen) == 200 and seen[0]["query"] == "i=5" and seen[-1]["query"] == "i=204"


async def test_echo_mirrors_method_path_query_headers_and_body(
    http: aiohttp.ClientSession, url: str
) -> None:
    """…/_mock/echo (and its sub-paths) returns what it received, under /v1 and /api/v1."""
    payload = b"\x00\x01 not json"
    for path in ("/v1/_mock/echo", "/v1/_mock/echo/deeper/path", "/api/v1/_mock/echo"):
        async with http.put(
            f"{url}{path}?a=1&b=2", data=payload, headers={"X-Thing": "One"}
        ) as response:
            doc = await response.json()
        assert doc == {
            "method": "PUT",
            "path": path,
            "raw_path": f"{path}?a=1&b=2",
            "query": "a=1&b=2",
            "headers": doc["headers"],
            "body_sha256": hashlib.sha256(payload).hexdigest(),
        }
        assert doc["headers"]["x-thing"] == "One"


# --- Configuration and the command line -------------------------------------------


async def test_defaults_come_from_flags_and_apply(http: aiohttp.ClientSession) -> None:
    """The CLI flags build MockDefaults; an app's defaults shape every response."""
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert defaults_from_args(parser.parse_args([])) == MockDefaults()
    ns = parser.parse_args(["--chunks", "2", "--output-tokens", "3", "--cached-tokens", "1"])
    defaults = defaults_from_args(ns)
    assert (defaults.chunks, defaults.output_tokens, defaults.cached_tokens) == (2, 3, 1)
    runner = aiohttp.web.AppRunner(create_mock_app(defaults))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        base = f"http://127.0.0.1:{runner.addresses[0][1]}"
        _, _, raw = await post(http, f"{base}/v1/chat/completions", {**CHAT, "stream": True})
        assert len(chunks(raw)) == 1 + 2 + 1
        _, _, raw = await post(http, f"{base}/v1/chat/completions", CHAT)
        assert orjson.loads(raw)["usage"]["completion_tokens"] == 3
    finally:
        await runner.cleanup()


async def test_module_runs_on_its_own_until_sigterm(http: aiohttp.ClientSession) -> None:
    """`python -m recovea_proxy.mock_provider --port 0` serves until SIGTERM, then exits 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "recovea_proxy.mock_provider",
        "--port",
        "0",
        "--output-tokens",
        "4",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        base = line.decode().strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:")
        _, _, raw = await post(http, f"{base}/v1/chat/completions", CHAT)
        assert orjson.loads(raw)["usage"]["completion_tokens"] == 4
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
