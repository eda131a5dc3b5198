"""Anthropic's Messages wire format as the mock writes it: the message JSON, the named
SSE events of a stream, token counting and the model list.

Anthropic's `input_tokens` excludes cached input: the mock reports
`input_tokens = input - cached - written`, `cache_read_input_tokens = cached`,
`cache_creation_input_tokens = written` with its `cache_creation` breakdown by
lifetime, and `service_tier` (`standard` unless the request asks otherwise).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.mock_provider.text import pieces, reply_text


def _usage(plan: Plan, output: int) -> dict[str, Any]:
    parts = plan.input_parts()
    return {
        "input_tokens": parts.uncached,
        "cache_creation_input_tokens": parts.written,
        "cache_read_input_tokens": parts.read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": parts.write_5m,
            "ephemeral_1h_input_tokens": parts.write_1h,
        },
        "output_tokens": output,
        "service_tier": plan.tier("standard"),
    }


def _message(
    body: dict[str, Any], plan: Plan, content: list[Any], stop: str | None
) -> dict[str, Any]:
    return {
        "id": plan.ident("msg_"),
        "type": "message",
        "role": "assistant",
        "model": body.get("model"),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }


def message_json(body: dict[str, Any], plan: Plan) -> bytes:
    """A whole `message` body."""
    output, cut = plan.output_tokens(body.get("max_tokens"))
    stop = plan.reason("max_tokens" if cut else "end_turn")
    text = reply_text(body, disagree=plan.disagree)
    doc = _message(body, plan, [{"type": "text", "text": text}], stop)
    if plan.usage:
        doc["usage"] = _usage(plan, output)
    return orjson.dumps(doc)


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": kind, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


_BLOCK_START = _event(
    "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
)
_PING = _event("ping", {})
_BLOCK_STOP = _event("content_block_stop", {"index": 0})
_MESSAGE_STOP = _event("message_stop", {})
_DELTA_HEAD = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)


def message_events(body: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """Every SSE event of a Messages stream, in order."""
    output, cut = plan.output_tokens(body.get("max_tokens"))
    start = _message(body, plan, [], None)
    if plan.usage:
        start["usage"] = _usage(plan, 1)
    yield _event("message_start", {"message": start})
    yield _BLOCK_START
    yield _PING
    for piece in pieces(reply_text(body, disagree=plan.disagree), plan.shape.chunks):
        yield _DELTA_HEAD + orjson.dumps(piece) + b"}}\n\n"
    yield _BLOCK_STOP
    delta: dict[str, Any] = {
        "delta": {
            "stop_reason": plan.reason("max_tokens" if cut else "end_turn"),
            "stop_sequence": None,
        }
    }
    if plan.usage:
        delta["usage"] = {"output_tokens": output}
    yield _event("message_delta", delta)
    yield _MESSAGE_STOP


def count_tokens_json(plan: Plan) -> bytes:
    """`{"input_tokens": n}` (all input, cached or not)."""
    return orjson.dumps({"input_tokens": plan.shape.input_tokens})


MODELS = (
    ("claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-opus-4-7", "Claude Opus 4.7"),
)
_CREATED_AT = "2025-01-01T00:00:00Z"


def _model(model_id: str, name: str) -> dict[str, Any]:
    return {"type": "model", "id": model_id, "display_name": name, "created_at": _CREATED_AT}


def model_json(model_id: str) -> bytes:
    """One model object (any id is known to the mock)."""
    return orjson.dumps(_model(model_id, dict(MODELS).get(model_id, model_id)))


MODELS_JSON = orjson.dumps(
    {
        "data": [_model(model_id, name) for model_id, name in MODELS],
        "has_more": False,
        "first_id": MODELS[0][0],
        "last_id": MODELS[-1][0],
    }
)
