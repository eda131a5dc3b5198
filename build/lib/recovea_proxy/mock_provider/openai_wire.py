"""OpenAI's wire format as the mock writes it: JSON bodies and SSE events for chat,
completions, embeddings, the Responses API and models (OpenRouter reuses it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.mock_provider.text import pieces, reply_text


def _max_tokens(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def output_and_reason(body: dict[str, Any], plan: Plan, *names: str) -> tuple[int, bool]:
    """(completion tokens, cut by the max-tokens limit?)."""
    limit = _max_tokens(body, *names)
    out = plan.shape.output_tokens
    if limit is not None and limit < out:
        return limit, True
    return out, False


def chat_usage(plan: Plan, output: int, *, openrouter: bool = False) -> dict[str, Any]:
    s = plan.shape
    usage: dict[str, Any] = {
        "prompt_tokens": s.input_tokens,
        "completion_tokens": output,
        "total_tokens": s.input_tokens + output,
        "prompt_tokens_details": {"cached_tokens": s.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": s.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if openrouter:
        cost = round((s.input_tokens + output) * 1e-6, 8)
        usage["cost"] = cost
        usage["cost_details"] = {"upstream_inference_cost": cost}
    return usage


def chat_json(body: dict[str, Any], plan: Plan, *, legacy: bool, openrouter: bool) -> bytes:
    output, cut = output_and_reason(body, plan, "max_completion_tokens", "max_tokens")
    text = reply_text(body)
    choice: dict[str, Any]
    if legacy:
        choice = {"index": 0, "text": text, "logprobs": None}
    else:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
        }
    choice["finish_reason"] = "length" if cut else "stop"
    doc: dict[str, Any] = {
        "id": ("cmpl-" if legacy else "chatcmpl-") + plan.digest[:24],
        "object": "text_completion" if legacy else "chat.completion",
        "created": plan.created,
        "model": body.get("model"),
        "choices": [choice],
        "system_fingerprint": "fp_mock",
    }
    if plan.fault != "no-usage":
        doc["usage"] = chat_usage(plan, output, openrouter=openrouter)
    return orjson.dumps(doc)


def chat_events(
    body: dict[str, Any], plan: Plan, *, legacy: bool, openrouter: bool
) -> Iterator[bytes]:
    """Every SSE event of a chat or completions stream, in order."""
    output, cut = output_and_reason(body, plan, "max_completion_tokens", "max_tokens")
    options = body.get("stream_options")
    include_usage = openrouter or (
        isinstance(options, dict) and options.get("include_usage") is True
    )
    if plan.fault == "no-usage":
        include_usage = False
    base = (
        b'{"id":"'
        + (b"cmpl-" if legacy else b"chatcmpl-")
        + plan.digest[:24].encode()
        + b'","object":"'
        + (b"text_completion" if legacy else b"chat.completion.chunk")
        + b'","created":'
        + str(plan.created).encode()
        + b',"model":'
        + orjson.dumps(body.get("model"))
        + b',"system_fingerprint":"fp_mock"'
        + b',"choices":['
    )
    tail = b'],"usage":null}' if include_usage and not openrouter else b"]}"

    def event(choice: dict[str, Any]) -> bytes:
        return b"data: " + base + orjson.dumps(choice) + tail + b"\n\n"

    def delta(content: dict[str, Any] | str, reason: str | None = None) -> dict[str, Any]:
        if legacy:
            text = content if isinstance(content, str) else ""
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        return {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}

    if not legacy:
        yield event(delta({"role": "assistant", "content": "", "refusal": None}))
    for piece in pieces(reply_text(body), plan.shape.chunks):
        yield event(delta(piece if legacy else {"content": piece}))
    yield event(delta("" if legacy else {}, "length" if cut else "stop"))
    if include_usage:
        usage = orjson.dumps(chat_usage(plan, output, openrouter=openrouter))
        yield b"data: " + base + b'],"usage":' + usage + b"}\n\n"
    yield b"data: [DONE]\n\n"


def embeddings_json(body: dict[str, Any], plan: Plan) -> bytes:
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    doc: dict[str, Any] = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.125 * (j - i) for j in range(8)]}
            for i in range(count)
        ],
        "model": body.get("model"),
    }
    if plan.fault != "no-usage":
        doc["usage"] = {
            "prompt_tokens": plan.shape.input_tokens,
            "total_tokens": plan.shape.input_tokens,
        }
    return orjson.dumps(doc)


def _response_object(body: dict[str, Any], plan: Plan, status: str) -> dict[str, Any]:
    output, cut = output_and_reason(body, plan, "max_output_tokens")
    final = status != "in_progress"
    s = plan.shape
    text = reply_text(body)
    doc: dict[str, Any] = {
        "id": "resp_" + plan.digest[:24],
        "object": "response",
        "created_at": plan.created,
        "status": ("incomplete" if cut else "completed") if final else status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if final and cut else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model"),
        "output": [_message_item(plan, text)] if final else [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }
    if final and plan.fault != "no-usage":
        doc["usage"] = {
            "input_tokens": s.input_tokens,
            "input_tokens_details": {"cached_tokens": s.cached_tokens},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": s.reasoning_tokens},
            "total_tokens": s.input_tokens + output,
        }
    return doc


def _message_item(plan: Plan, text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_" + plan.digest[:24],
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def responses_json(body: dict[str, Any], plan: Plan) -> bytes:
    return orjson.dumps(_response_object(body, plan, "completed"))


def responses_events(body: dict[str, Any], plan: Plan) -> Iterator[bytes]:
    """Every named SSE event of a Responses API stream, in order."""
    seq = 0

    def event(kind: str, payload: dict[str, Any]) -> bytes:
        nonlocal seq
        data = orjson.dumps({"type": kind, "sequence_number": seq, **payload})
        seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    text = reply_text(body)
    item_id = "msg_" + plan.digest[:24]
    started = _response_object(body, plan, "in_progress")
    yield event("response.created", {"response": started})
    yield event("response.in_progress", {"response": started})
    item = {**_message_item(plan, ""), "status": "in_progress", "content": []}
    yield event("response.output_item.added", {"output_index": 0, "item": item})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event(
        "response.content_part.added",
        {"item_id": item_id, "output_index": 0, "content_index": 0, "part": part},
    )
    for piece in pieces(text, plan.shape.chunks):
        yield event(
            "response.output_text.delta",
            {
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "delta": piece,
                "logprobs": [],
            },
        )
    yield event(
        "response.output_text.done",
        {"item_id": item_id, "output_index": 0, "content_index": 0, "text": text, "logprobs": []},
    )
    yield event(
        "response.content_part.done",
        {"item_id": item_id, "output_index": 0, "content_index": 0, "part": {**part, "text": text}},
    )
    yield event("response.output_item.done", {"output_index": 0, "item": _message_item(plan, text)})
    final = _response_object(body, plan, "completed")
    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
    yield event(kind, {"response": final})


MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small", "o3-mini")


def model_json(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}


def models_json() -> bytes:
    return orjson.dumps({"object": "list", "data": [model_json(m) for m in MODELS]})


def error_json(status: int, message: str, kind: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}})


MID_STREAM_ERROR = (
    b'data: {"error":{"message":"mock mid-stream error","type":"server_error",'
    b'"param":null,"code":null}}\n\n'
)
