"""The mock's reply text and how it is cut into stream pieces."""

from __future__ import annotations

from typing import Any


def prompt_text(body: dict[str, Any]) -> str:
    """The last user text of a chat, completion, responses or messages request."""
    for key in ("messages", "input", "prompt"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            last = value[-1]
            if isinstance(last, str):
                return last
            if isinstance(last, dict):
                return _content_text(last.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def reply_text(body: dict[str, Any]) -> str:
    """`mock reply: ` + the first 200 characters of the prompt."""
    return "mock reply: " + prompt_text(body)[:200]


def pieces(text: str, count: int) -> list[str]:
    """`text` cut into `count` consecutive pieces (some may be empty when text is short)."""
    count = max(1, count)
    size, extra = divmod(len(text), count)
    out = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out
