"""Shadow evaluation's comparable form of one answer, reassembled from its bytes: the
text, the tool calls (name and canonical arguments), the finish reason and whether
the model refused. This is the one place the gateway reassembles response text; it
runs off the hot path (a shadow worker, in a thread) on bytes already bounded by the
capture, and the result lives only until the comparison is made.

| endpoint | JSON body | SSE stream |
| --- | --- | --- |
| Chat Completions | `choices[0].message` | `delta` content, refusal, tool-call pieces |
| Responses | `output` items | the terminal event's whole `response` |
| Messages | `content` blocks | text and tool_use `input_json_delta` by block |

Finish reasons are put in one vocabulary (`stop`, `length`, `tool`, `filter`, else
the provider's own word). An answer that cannot be read (not JSON, an error event,
an endpoint shadow evaluation does not know) is None: the sample is dropped, never
counted as a disagreement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from recovea_proxy.providers.base import CHAT, MESSAGES, RESPONSES
from recovea_proxy.providers.sse import whole_events

#: endpoint kinds shadow evaluation can reassemble
KINDS = frozenset({CHAT, RESPONSES, MESSAGES})

_FINISH = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "completed": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool",
    "function_call": "tool",
    "tool_use": "tool",
    "content_filter": "filter",
    "refusal": "filter",
}


@dataclass(frozen=True, slots=True)
class Answer:
    """What a comparison needs of one answer (no ids, no usage)."""

    text: str
    #: (name, arguments as canonical JSON — keys sorted — or as sent when not JSON)
    tool_calls: tuple[tuple[str, str], ...] = ()
    finish: str | None = None
    refusal: bool = False


def canonical_arguments(raw: object) -> str:
    """Tool-call arguments as canonical JSON (parsed, keys sorted, no spaces); a string
    that is not JSON is kept as it is, stripped."""
    value = raw
    if isinstance(raw, str):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.strip()
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return str(value)


def finish_of(raw: object) -> str | None:
    """A finish (stop) reason in the shared vocabulary."""
    if not isinstance(raw, str):
        return None
    return _FINISH.get(raw, raw)


def reassemble(kind: str, body: bytes, *, streamed: bool) -> Answer | None:
    """The answer in `body` (a whole JSON body, or the bytes of an SSE stream)."""
    if kind not in KINDS:
        return None
    try:
        if not streamed:
            doc = orjson.loads(body)
            return _from_json(kind, doc) if isinstance(doc, dict) else None
        return _from_events(kind, _events(body))
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError):
        return None


def _from_json(kind: str, doc: dict[str, Any]) -> Answer | None:
    if doc.get("error") or doc.get("type") == "error":
        return None
    if kind == CHAT:
        return _chat_json(doc)
    if kind == RESPONSES:
        return _responses_json(doc)
    return _messages_json(doc)


def _chat_json(doc: dict[str, Any]) -> Answer | None:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message") or {}
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append((str(function.get("name")), canonical_arguments(function.get("arguments"))))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        calls.append((str(legacy.get("name")), canonical_arguments(legacy.get("arguments"))))
    return Answer(
        text=content if isinstance(content, str) else "",
        tool_calls=tuple(calls),
        finish=finish_of(choice.get("finish_reason")),
        refusal=bool(message.get("refusal")),
    )


def _responses_json(doc: dict[str, Any]) -> Answer | None:
    status = doc.get("status")
    if status == "failed" or not isinstance(doc.get("output"), list):
        return None
    text: list[str] = []
    calls = []
    refusal = False
    for item in doc["output"]:
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(str(part.get("text", "")))
                elif part.get("type") == "refusal":
                    refusal = True
        elif kind == "function_call":
            calls.append((str(item.get("name")), canonical_arguments(item.get("arguments"))))
    finish: str | None
    if status == "incomplete":
        finish = finish_of((doc.get("incomplete_details") or {}).get("reason")) or "length"
    else:
        finish = "tool" if calls else finish_of(status)
    return Answer("".join(text), tuple(calls), finish, refusal)


def _messages_json(doc: dict[str, Any]) -> Answer | None:
    content = doc.get("content")
    if not isinstance(content, list):
        return None
    text: list[str] = []
    calls = []
    for block in content:
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append((str(block.get("name")), canonical_arguments(block.get("input"))))
    stop = doc.get("stop_reason")
    return Answer("".join(text), tuple(calls), finish_of(stop), stop == "refusal")


def _events(body: bytes) -> list[tuple[bytes | None, bytes]]:
    """(event name, joined data) of each complete SSE event; `[DONE]` left out."""
    return [
        (name, data)
        for name, data in whole_events(body, complete_only=False)
        if data is not None and data != b"[DONE]"
    ]


def _from_events(kind: str, events: list[tuple[bytes | None, bytes]]) -> Answer | None:
    if not events:
        return None
    if kind == CHAT:
        return _chat_events(events)
    if kind == RESPONSES:
        return _responses_events(events)
    return _messages_events(events)


def _chat_events(events: list[tuple[bytes | None, bytes]]) -> Answer | None:
    text: list[str] = []
    names: dict[int, list[str]] = {}
    arguments: dict[int, list[str]] = {}
    finish: str | None = None
    refusal = False
    for name, data in events:
        chunk = orjson.loads(data)
        if name == b"error" or not isinstance(chunk, dict) or "error" in chunk:
            return None
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text.append(delta["content"])
            if delta.get("refusal"):
                refusal = True
            for call in delta.get("tool_calls") or ():
                index = call.get("index", 0)
                function = call.get("function") or {}
                if function.get("name"):
                    names.setdefault(index, []).append(function["name"])
                if isinstance(function.get("arguments"), str):
                    arguments.setdefault(index, []).append(function["arguments"])
            if choice.get("finish_reason") is not None:
                finish = finish_of(choice["finish_reason"])
    calls = tuple(
        ("".join(names.get(i, ())), canonical_arguments("".join(arguments.get(i, ()))))
        for i in sorted(set(names) | set(arguments))
    )
    return Answer("".join(text), calls, finish, refusal)


def _responses_events(events: list[tuple[bytes | None, bytes]]) -> Answer | None:
    for _, data in reversed(events):
        event = orjson.loads(data)
        if not isinstance(event, dict):
            continue
        if event.get("type") in ("response.completed", "response.incomplete"):
            response = event.get("response")
            return _responses_json(response) if isinstance(response, dict) else None
        if event.get("type") in ("response.failed", "error"):
            return None
    return None


def _messages_events(events: list[tuple[bytes | None, bytes]]) -> Answer | None:
    blocks: dict[int, dict[str, Any]] = {}
    stop: object = None
    for _, data in events:
        event = orjson.loads(data)
        kind = event.get("type")
        if kind == "error":
            return None
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            blocks[event.get("index", 0)] = {
                "type": block.get("type"),
                "name": block.get("name"),
                "text": [str(block.get("text", ""))] if block.get("type") == "text" else [],
                "json": [],
                "input": block.get("input"),
            }
        elif kind == "content_block_delta":
            block = blocks.get(event.get("index", 0))
            delta = event.get("delta") or {}
            if block is None:
                continue
            if delta.get("type") == "text_delta":
                block["text"].append(str(delta.get("text", "")))
            elif delta.get("type") == "input_json_delta":
                block["json"].append(str(delta.get("partial_json", "")))
        elif kind == "message_delta":
            stop = (event.get("delta") or {}).get("stop_reason", stop)
    text: list[str] = []
    calls = []
    for index in sorted(blocks):
        block = blocks[index]
        if block["type"] == "text":
            text.extend(block["text"])
        elif block["type"] == "tool_use":
            raw = "".join(block["json"])
            arguments = canonical_arguments(raw) if raw else canonical_arguments(block["input"])
            calls.append((str(block["name"]), arguments))
    return Answer("".join(text), tuple(calls), finish_of(stop), stop == "refusal")
