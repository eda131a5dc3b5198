"""The mock's reply text (`mock reply: ` + the prompt) and how a stream cuts it up.

The prompt is the text of the last user message (chat, messages, responses input
items) or the prompt/input string, so a marker a test puts in the request comes back
in the reply and can be followed through a gateway. A model the request names in
`x-mock-disagree-model` answers `mock dissent: ` + the prompt reversed instead: a
cheap model that disagrees with the caller's, for shadow evaluation's tests.
"""

from __future__ import annotations

from typing import Any

PREFIX = "mock reply: "
DISSENT = "mock dissent: "
PROMPT_CHARS = 200


def prompt_text(body: dict[str, Any]) -> str:
    """The last user text of a chat, completions, responses or messages request."""
    for key in ("messages", "input", "prompt"):
        value = body.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value:
            return _last_user_text(value)
    return ""


def _last_user_text(items: list[Any]) -> str:
    fallback: Any = items[-1]
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            return _content_text(item.get("content"))
    if isinstance(fallback, str):
        return fallback
    if isinstance(fallback, dict):
        return _content_text(fallback.get("content"))
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def reply_text(body: dict[str, Any], *, disagree: bool = False) -> str:
    """`mock reply: ` + the first 200 characters of the prompt (`disagree`: `mock
    dissent: ` + those characters reversed)."""
    if disagree:
        return DISSENT + prompt_text(body)[:PROMPT_CHARS][::-1]
    return PREFIX + prompt_text(body)[:PROMPT_CHARS]


def pieces(text: str, count: int) -> list[str]:
    """`text` cut into `count` consecutive pieces (some empty when the text is short)."""
    count = max(1, count)
    size, extra = divmod(len(text), count)
    out: list[str] = []
    start = 0
    for i in range(count):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out
