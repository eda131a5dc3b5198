"""Masks anything shaped like a secret down to its last four characters.

A backstop, not the first line of defence: code never passes a key to a logger,
an error or a metric label on purpose. This catches the accidents.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET = re.compile(
    r"(?:sk-ant-[A-Za-z0-9_\-]{6,}"
    r"|sk-(?:proj-|or-v1-|svcacct-)?[A-Za-z0-9_\-]{6,}"
    r"|rcv_(?:live|test)_[A-Za-z0-9_\-]{4,}"
    r"|(?<=[Bb]earer )[A-Za-z0-9_\-\.=+/]{8,})"
)
_HINTS = ("sk-", "rcv_", "earer ")
_CONTAINERS = frozenset({dict, list, tuple})


def _mask(match: re.Match[str]) -> str:
    return "****" + match.group(0)[-4:]


def redact_text(text: str) -> str:
    """`text` with every key-shaped token replaced by `****` and its last four characters."""
    for hint in _HINTS:
        if hint in text:
            return _SECRET.sub(_mask, text)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings inside a log value (nested dicts, lists and tuples included)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every string value of the event.

    One joined scan decides whether any value needs the regex, so a clean line
    (nearly every line) costs a single pass over its strings.
    """
    strings: list[str] = []
    nested: list[str] = []
    for key, value in event_dict.items():
        kind = type(value)
        if kind is str:
            strings.append(value)
        elif kind in _CONTAINERS and value:
            nested.append(key)
    joined = "\x00".join(strings)
    if any(hint in joined for hint in _HINTS):
        for key, value in event_dict.items():
            if type(value) is str:
                event_dict[key] = redact_text(value)
    for key in nested:
        event_dict[key] = redact_value(event_dict[key])
    return event_dict
