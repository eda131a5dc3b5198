"""Shared constants and wire helpers of the mock provider tests."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

KEY = "sk-test-mock-provider"
AUTH = {"authorization": f"Bearer {KEY}"}
USAGE = {
    "x-mock-input-tokens": "120",
    "x-mock-output-tokens": "33",
    "x-mock-cached-tokens": "100",
    "x-mock-reasoning-tokens": "5",
}
MARKER = "marker-7f3a"
PROMPT: list[ChatCompletionMessageParam] = [{"role": "user", "content": f"say {MARKER}"}]
CLAUDE = "claude-haiku-4-5"
TURNS: list[MessageParam] = [{"role": "user", "content": f"say {MARKER}"}]
CHAT: dict[str, Any] = {"model": "gpt-4o", "messages": PROMPT}
MESSAGES: dict[str, Any] = {"model": CLAUDE, "max_tokens": 256, "messages": TURNS}
REPLY = f"mock reply: say {MARKER}"


async def post(
    http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with http.post(url, data=data, headers={**AUTH, **(headers or {})}) as response:
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, await response.read()


def sse(raw: bytes) -> list[tuple[str | None, bytes]]:
    """(event name, data) of each event; comment-only blocks are skipped."""
    out: list[tuple[str | None, bytes]] = []
    for block in raw.split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            if line.startswith(b"event: "):
                name = line[7:].decode()
            elif line.startswith(b"data: "):
                data.append(line[6:])
        if data:
            out.append((name, b"\n".join(data)))
    return out


def chunks(raw: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(d) for _, d in sse(raw) if d != b"[DONE]"]
