"""Slim: lossless request trimming, opt-in per workspace (`recovea slim set`).

Only transforms that change no meaning, are deterministic (the same input gives the
same bytes, every time, on every replica) and idempotent (`slim(slim(x)) ==
slim(x)`), so that a conversation's prefix stays the same across turns and the
provider's prompt cache keeps hitting:

- top-level fields whose value is `null` (the API reads them as absent);
- insignificant whitespace in the JSON that tools returned: an OpenAI `tool`
  message's content (or its text parts), an Anthropic `tool_result` block's content
  (or its text blocks), a Responses `function_call_output`'s output — when that text
  is a whole JSON document. Only whitespace between JSON tokens goes: strings,
  numbers, escapes and key order are kept byte for byte.

Never touched: message text, the model's own tool-call arguments, thinking blocks and
their signatures, encrypted reasoning, `cache_control` markers and their placement,
images, tool schemas (objects, not text: the provider renders them itself). When
nothing changes the original bytes go upstream untouched; when something does, the
body is serialized again (compact, key order kept) and what it saved is counted.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from recovea_proxy.json_bytes import dumps_held
from recovea_proxy.levers.chain import LeverRequest
from recovea_proxy.observability.metrics import GatewayMetrics

#: JSON string tokens (the split keeps them at odd positions); the loop unrolled
_STRINGS = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")')
#: JSON's whitespace, removed with str.translate
_WHITESPACE = str.maketrans("", "", " \t\n\r")
_JSON_STARTS = frozenset("{[")


def slim_body(parsed: dict[str, Any]) -> bool:
    """Trim `parsed` in place; whether anything changed."""
    changed = False
    if None in parsed.values():
        for name in [name for name, value in parsed.items() if value is None]:
            del parsed[name]
        changed = True
    messages = parsed.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                changed |= _slim_message(message)
    items = parsed.get("input")
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                changed |= _slim_field(item, "output")
    return changed


def _slim_message(message: dict[str, Any]) -> bool:
    """An OpenAI `tool` message, or the `tool_result` blocks of an Anthropic message."""
    if message.get("role") == "tool":
        return _slim_content(message)
    content = message.get("content")
    if not isinstance(content, list):
        return False
    changed = False
    for block in content:
        if isinstance(block, dict) and block.get("type") == "tool_result":
            changed |= _slim_content(block)
    return changed


def _slim_content(holder: dict[str, Any]) -> bool:
    """A tool result's `content`: a string, or a list of text parts (`text` blocks)."""
    content = holder.get("content")
    if isinstance(content, str):
        return _slim_field(holder, "content")
    if not isinstance(content, list):
        return False
    changed = False
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            changed |= _slim_field(part, "text")
    return changed


def _slim_field(holder: dict[str, Any], name: str) -> bool:
    text = holder.get(name)
    if not isinstance(text, str):
        return False
    compact = minified_json(text)
    if compact is None or compact == text:
        return False
    holder[name] = compact
    return True


def minified_json(text: str) -> str | None:
    """`text` without the whitespace between its JSON tokens, when it is one whole JSON
    object or array (else None). Strings, numbers and escapes are kept as written."""
    stripped = text.strip()
    if stripped[:1] not in _JSON_STARTS:
        return None
    try:
        value = orjson.loads(stripped)
    except orjson.JSONDecodeError:
        return None
    # Usually the compact serialization is it: orjson writes no whitespace between
    # tokens and keeps strings' spaces; if nothing but whitespace differs, every number
    # and escape was written as orjson writes it.
    compact = orjson.dumps(value).decode()
    if compact.translate(_WHITESPACE) == stripped.translate(_WHITESPACE):
        return compact
    parts = _STRINGS.split(stripped)
    parts[::2] = [between.translate(_WHITESPACE) for between in parts[::2]]
    return "".join(parts)


class SlimLever:
    """The `slim` lever: trims the body when that changes some bytes (`hit`), leaves
    it as it came otherwise (`miss`). Runs without a timer: pure CPU, bounded by the
    body, which is bounded by `RECOVEA_MAX_BODY_MB`."""

    name = "slim"
    budget_s: float | None = None

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._saved = metrics.slim_bytes_saved

    def applies(self, request: LeverRequest) -> bool:
        return request.parsed is not None

    def before(self, request: LeverRequest) -> str:
        parsed = request.parsed
        assert parsed is not None
        if not slim_body(parsed):
            return "miss"
        body = dumps_held(parsed)
        saved = len(request.body) - len(body)
        if saved <= 0:
            # Compact serialization of a body sent with unusual escapes can be longer:
            # then the original bytes go, and the original parse with them.
            request.parsed = orjson.loads(request.body)
            return "miss"
        request.body = body
        self._saved.labels(request.record.provider or "unknown").inc(saved)
        return "hit"
