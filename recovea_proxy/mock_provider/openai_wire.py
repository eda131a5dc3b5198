"""OpenAI's wire format as the mock writes it for Chat Completions, legacy Completions,
Embeddings and Models — and OpenRouter's variant of it.

Streams are written the compact way the real API writes them (orjson, no spaces):
`data: {chunk}\\n\\n` events ended by `data: [DONE]`. With
`stream_options.include_usage` every chunk ends with `"usage":null` and one more chunk
with `"choices":[]` carries the usage; without it no chunk has a `usage` key.
OpenRouter always sends the usage chunk (its chunks have no `"usage":null`) and adds
`cost` and `cost_details` to usage, and `cache_write_tokens` to its prompt details.
Bodies and chunks name the `service_tier` that served (`default` unless the request
asks otherwise).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from typing import Any

import orjson

from recovea_proxy.mock_provider.controls import Plan
from recovea_proxy.mock_provider.text import pieces, reply_text

EMBEDDING_DIMENSIONS = 8
MAX_DIMENSIONS = 3072
DONE = b"data: [DONE]\n\n"


def chat_usage(plan: Plan, output: int, *, openrouter: bool) -> dict[str, Any]:
    """Chat/Completions usage; cached tokens are part of the prompt tokens, reasoning
    tokens part of the completion tokens."""
    s = plan.shape
    prompt_details: dict[str, Any] = {
        "cached_tokens": min(s.cached_tokens, s.input_tokens),
        "audio_tokens": 0,
    }
    usage: dict[str, Any] = {
        "prompt_tokens": s.input_tokens,
        "completion_tokens": output,
        "total_tokens": s.input_tokens + output,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": min(s.reasoning_tokens, output),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    if openrouter:
        prompt_details["cache_write_tokens"] = plan.input_parts().written
        cost = round((s.input_tokens + 4 * output) * 1e-7, 12)
        usage["cost"] = cost
        usage["is_byok"] = False
        usage["cost_details"] = {"upstream_inference_cost": cost}
    return usage


def max_tokens_of(body: dict[str, Any]) -> Any:
    """The request's output limit (`max_completion_tokens`, else `max_tokens`)."""
    return _limit(body)


def _limit(body: dict[str, Any]) -> Any:
    limit = body.get("max_completion_tokens")
    return body.get("max_tokens") if limit is None else limit


def chat_json(body: dict[str, Any], plan: Plan, *, legacy: bool, openrouter: bool) -> bytes:
    """A whole `chat.completion` (or legacy `text_completion`) body."""
    output, cut = plan.output_tokens(_limit(body))
    text = reply_text(body, disagree=plan.disagree)
    reason = plan.reason("length" if cut else "stop")
    choice: dict[str, Any]
    if legacy:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
        forced = _forced_function(body)
        if forced is not None:
            # A named function forced with `tool_choice`: the answer is the call, and the
            # finish reason stays `stop` (as OpenAI's does), not `tool_calls`.
            call = {"name": forced, "arguments": "{}"}
            message.update(content=None, tool_calls=[{"id": "call_mock", "type": "function",
                                                      "function": call}])  # fmt: skip
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
    doc: dict[str, Any] = {
        "id": plan.ident("cmpl-" if legacy else "chatcmpl-"),
        "object": "text_completion" if legacy else "chat.completion",
        "created": plan.created,
        "model": body.get("model"),
        "choices": [choice],
    }
    if plan.usage:
        doc["usage"] = chat_usage(plan, output, openrouter=openrouter)
    doc["service_tier"] = plan.tier("default")
    doc["system_fingerprint"] = "fp_mock"
    return orjson.dumps(doc)


def _forced_function(body: dict[str, Any]) -> str | None:
    """The function a request forces with `tool_choice: {"type": "function", ...}`."""
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        return name if isinstance(name, str) else None
    return None


_ROLE = b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},' + (
    b'"logprobs":null,"finish_reason":null}'
)


def chat_events(
    body: dict[str, Any], plan: Plan, *, legacy: bool, openrouter: bool
) -> Iterator[bytes]:
    """Every SSE event of a chat or completions stream, in order."""
    output, cut = plan.output_tokens(_limit(body))
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    include_usage = (openrouter or asked) and plan.usage
    head = (
        b'data: {"id":"'
        + plan.ident("cmpl-" if legacy else "chatcmpl-").encode()
        + (b'","object":"text_completion"' if legacy else b'","object":"chat.completion.chunk"')
        + b',"created":'
        + str(plan.created).encode()
        + b',"model":'
        + orjson.dumps(body.get("model"))
        + b',"service_tier":'
        + orjson.dumps(plan.tier("default"))
        + b',"system_fingerprint":"fp_mock","choices":['
    )
    tail = b'],"usage":null}\n\n' if include_usage and not openrouter else b"]}\n\n"
    reason = orjson.dumps(plan.reason("length" if cut else "stop"))
    if legacy:
        yield from (
            head + b'{"index":0,"text":' + orjson.dumps(piece) + b',"logprobs":null,'
            b'"finish_reason":null}' + tail
            for piece in pieces(reply_text(body, disagree=plan.disagree), plan.shape.chunks)
        )
        yield head + b'{"index":0,"text":"","logprobs":null,"finish_reason":' + reason + b"}" + tail
    else:
        yield head + _ROLE + tail
        yield from (
            head + b'{"index":0,"delta":{"content":' + orjson.dumps(piece) + b"},"
            b'"logprobs":null,"finish_reason":null}' + tail
            for piece in pieces(reply_text(body, disagree=plan.disagree), plan.shape.chunks)
        )
        yield (
            head + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":' + reason + b"}" + tail
        )
    if include_usage:
        usage = orjson.dumps(chat_usage(plan, output, openrouter=openrouter))
        yield head + b'],"usage":' + usage + b"}\n\n"
    yield DONE


def _input_count(inputs: Any) -> int:
    """Embeddings inputs: a string or a token list is one; a list of those is many."""
    if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int):
        return len(inputs)
    return 1


def _vector(index: int, size: int) -> list[float]:
    return [0.125 * ((j + index) % EMBEDDING_DIMENSIONS) - 0.5 for j in range(size)]


def _dimensions(value: Any) -> int:
    """The request's `dimensions` (1 to MAX_DIMENSIONS), else EMBEDDING_DIMENSIONS."""
    if type(value) is int and 1 <= value <= MAX_DIMENSIONS:
        return value
    return EMBEDDING_DIMENSIONS


def embeddings_json(body: dict[str, Any], plan: Plan) -> bytes:
    """A `list` of one embedding per input (base64 float32 when the request asks), of
    the requested `dimensions`; indented, usage last, with `x-mock-pretty: 1`."""
    as_base64 = body.get("encoding_format") == "base64"
    size = _dimensions(body.get("dimensions"))
    pack = struct.Struct(f"<{size}f")
    data: list[dict[str, Any]] = []
    for i in range(_input_count(body.get("input"))):
        vector = _vector(i, size)
        embedding: Any = base64.b64encode(pack.pack(*vector)).decode() if as_base64 else vector
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    doc: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
    if plan.usage:
        tokens = plan.shape.input_tokens
        doc["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 if plan.pretty else None)


MODELS = (
    ("gpt-4o", "system"),
    ("gpt-4o-mini", "system"),
    ("gpt-4.1", "system"),
    ("o3-mini", "system"),
    ("gpt-3.5-turbo-instruct", "system"),
    ("text-embedding-3-small", "system"),
)
MODEL_CREATED = 1_700_000_000


def model_json(model_id: str) -> bytes:
    """One model object (any id is known to the mock)."""
    owner = dict(MODELS).get(model_id, "mock")
    return orjson.dumps(
        {"id": model_id, "object": "model", "created": MODEL_CREATED, "owned_by": owner}
    )


MODELS_JSON = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": MODEL_CREATED, "owned_by": owner}
            for model, owner in MODELS
        ],
    }
)
