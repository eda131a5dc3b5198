"""What the usage taps' mutation tests share: the providers, a tap fed whole, SSE
events built from payloads, Anthropic's message events."""

from __future__ import annotations

from typing import Any

import orjson

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import (
    StreamTap,
)
from recovea_proxy.providers.usage import Usage

OPENAI = PROVIDERS["openai"]
ANTHROPIC = PROVIDERS["anthropic"]


def fed(tap: StreamTap, *chunks: bytes) -> Usage:
    for chunk in chunks:
        tap.feed(chunk)
    tap.close()
    return tap.usage


def events(*payloads: dict[str, Any] | str, crlf: bool = False) -> list[bytes]:
    """SSE events, one `data:` line each (a str payload is sent as it is)."""
    end = b"\r\n" if crlf else b"\n"
    return [
        b"data: " + (p.encode() if isinstance(p, str) else orjson.dumps(p)) + end + end
        for p in payloads
    ]


def message_start(usage: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message_start", "message": {"type": "message", "usage": usage}}


def message_delta(output: int, reason: object = "end_turn") -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": reason},
        "usage": {"output_tokens": output},
    }
