"""Anthropic's Messages wire format as the mock writes it: JSON and named SSE events.

Anthropic's `input_tokens` excludes cached input: the mock reports
`input_tokens = input - cached` and `cache_read_input_tokens = cached`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.mock_provider.text import pieces, reply_text


def _usage(plan: Plan, output: int) -> dict[str, Any]:
    s = plan.shape
    return {
        "input_tokens": max(0, s.input_tokens - s.cached_tokens),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": s.cached_tokens,
        "output_tokens": output,
    }


def _output(body: dict[str, Any], plan: Plan) -> tuple[int, str]:
    limit = body.get("max_tokens")
    out = plan.shape.output_tokens
    if isinstance(limit, int) and limit < out:
        return limit, "max_tokens"
    return out, "end_turn"


def _message(
    body: dict[str, Any], plan: Plan, content: list[Any], stop: str | None
) -> dict[str, Any]:
    return {
        "id": "msg_" + plan.digest[:24],
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }


def message_json(body: dict[str, Any], plan: Plan) -> bytes:
    output, stop = _output(body, plan)
    doc = _message(body, plan, [{"type": "text", "text": reply_text(body)}], stop)
    if plan.fault != "no-usage":
        doc["usage"] = _usage(plan, output)
    return orjson.dumps(doc)


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"
    )


def message_events(body: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """Every SSE event of a Messages stream, in order."""
    output, stop = _output(body, plan)
    usage = plan.fault != "no-usage"
    start = _message(body, plan, [], None)
    if usage:
        start["usage"] = {**_usage(plan, 1)}
    yield _event("message_start", {"message": start})
    yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield _event("ping", {})
    for piece in pieces(reply_text(body), plan.shape.chunks):
        yield _event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}}
        )
    yield _event("content_block_stop", {"index": 0})
    delta: dict[str, Any] = {"delta": {"stop_reason": stop, "stop_sequence": None}}
    if usage:
        delta["usage"] = {"output_tokens": output}
    yield _event("message_delta", delta)
    yield _event("message_stop", {})


def count_tokens_json(plan: Plan) -> bytes:
    return orjson.dumps({"input_tokens": plan.shape.input_tokens})


def error_json(kind: str, message: str, request_id: str) -> bytes:
    return orjson.dumps(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}
    )


MID_STREAM_ERROR = (
    b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
    b'"message":"Overloaded"}}\n\n'
)
