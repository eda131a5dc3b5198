"""OpenAI's Responses API (`/v1/responses`) as the mock writes it: the `response`
object and its stream of named events.

A stream is `event: <type>\\ndata: {json}\\n\\n` events numbered by `sequence_number`,
ended by `response.completed` (or `response.incomplete` when `max_output_tokens`
cut the output) carrying the whole response with usage. There is no `[DONE]`.
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
        "input_tokens": s.input_tokens,
        "input_tokens_details": {"cached_tokens": min(s.cached_tokens, s.input_tokens)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": min(s.reasoning_tokens, output)},
        "total_tokens": s.input_tokens + output,
    }


def _message_item(plan: Plan, text: str, status: str) -> dict[str, Any]:
    return {
        "id": plan.ident("msg_"),
        "type": "message",
        "status": status,
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
        "role": "assistant",
    }


def _number(value: Any, default: float) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else default


def response_object(body: dict[str, Any], plan: Plan, *, final: bool) -> dict[str, Any]:
    """The `response` object: in progress (no output yet) or final."""
    output, cut = plan.output_tokens(body.get("max_output_tokens"))
    text = reply_text(body, disagree=plan.disagree)
    status = ("incomplete" if cut else "completed") if final else "in_progress"
    doc: dict[str, Any] = {
        "id": plan.ident("resp_"),
        "object": "response",
        "created_at": plan.created,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if final and cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": [_message_item(plan, text, status)] if final else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "service_tier": plan.tier("default"),
        "store": body.get("store", True),
        "temperature": _number(body.get("temperature"), 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": _number(body.get("top_p"), 1.0),
        "truncation": "disabled",
        "usage": _usage(plan, output) if final else None,
        "user": None,
        "metadata": body.get("metadata") or {},
    }
    if not plan.usage:
        del doc["usage"]
    return doc


def responses_json(body: dict[str, Any], plan: Plan) -> bytes:
    """A whole `response` body."""
    return orjson.dumps(response_object(body, plan, final=True))


def _event(kind: str, seq: int, payload: dict[str, Any]) -> bytes:
    data = orjson.dumps({"type": kind, "sequence_number": seq, **payload})
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def responses_events(body: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """Every named SSE event of a Responses API stream, in order."""
    text = reply_text(body, disagree=plan.disagree)
    item_id = plan.ident("msg_")
    where = {"item_id": item_id, "output_index": 0, "content_index": 0}
    started = response_object(body, plan, final=False)
    final = response_object(body, plan, final=True)
    seq = 0
    yield _event("response.created", seq, {"response": started})
    yield _event("response.in_progress", seq := seq + 1, {"response": started})
    yield _event(
        "response.output_item.added",
        seq := seq + 1,
        {"output_index": 0, "item": _message_item(plan, "", "in_progress") | {"content": []}},
    )
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    yield _event("response.content_part.added", seq := seq + 1, {**where, "part": part})
    # The deltas differ only in their text and number: build the JSON around them once.
    delta_head = b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta"'
    delta_where = orjson.dumps(where)[1:-1]
    for piece in pieces(text, plan.shape.chunks):
        seq += 1
        yield (
            delta_head
            + b',"sequence_number":'
            + str(seq).encode()
            + b","
            + delta_where
            + b',"delta":'
            + orjson.dumps(piece)
            + b',"logprobs":[]}\n\n'
        )
    yield _event(
        "response.output_text.done", seq := seq + 1, {**where, "text": text, "logprobs": []}
    )
    yield _event(
        "response.content_part.done", seq := seq + 1, {**where, "part": {**part, "text": text}}
    )
    yield _event(
        "response.output_item.done", seq := seq + 1, {"output_index": 0, "item": final["output"][0]}
    )
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield _event(kind, seq + 1, {"response": final})
