"""Masks anything shaped like a secret down to its last four characters.

A backstop, not the first line of defence: code never passes a key to a logger,
an error or a metric label on purpose. This catches the accidents.

| shape                          | example (masked)                  |
| `sk-ant-…`                     | `sk-ant-api03-…WXYZ` → `****WXYZ` |
| `sk-proj-…`, `sk-or-v1-…`,     | `sk-proj-…1234` → `****1234`      |
| `sk-svcacct-…`, `sk-…`         |                                   |
| `rcv_live_…`, `rcv_test_…`     | `rcv_live_…abcd` → `****abcd`     |
| `Bearer <token>`, in any case  | `bearer eyJ….sig0` → `bearer ****sig0` |

A log value that is not a string, a number or a container (an exception, a
header mapping, bytes) is rendered with `repr` after this step, so its `repr` is
checked too and, when it holds a key, replaced by the masked text.
"""

from __future__ import annotations

import re
from typing import Any

_SECRET = re.compile(
    r"(?P<scheme>(?i:bearer)[ \t]+)(?P<token>[A-Za-z0-9_\-\.~+/=]{8,})"
    r"|sk-ant-[A-Za-z0-9_\-]{6,}"
    r"|sk-(?:proj-|or-v1-|svcacct-)?[A-Za-z0-9_\-]{6,}"
    r"|rcv_(?:live|test)_[A-Za-z0-9_\-]{4,}"
)
_CONTAINERS = frozenset({dict, list, tuple})
_PLAIN = frozenset({int, float, bool, type(None)})
#: structlog's own bookkeeping in a standard-library record's event, never rendered
_META = frozenset({"_record", "_from_structlog"})


def _mask(match: re.Match[str]) -> str:
    scheme = match.group("scheme")
    if scheme is None:
        return "****" + match.group(0)[-4:]
    return scheme + "****" + match.group("token")[-4:]


def _hinted(text: str) -> bool:
    """Whether `text` may hold a key: a few substring checks on its lowercased copy (a
    superset of what the pattern matches), far cheaper than the pattern itself."""
    lowered = text.lower()
    return "sk-" in lowered or "rcv_" in lowered or "bearer" in lowered


def redact_text(text: str) -> str:
    """`text` with every key-shaped token replaced by `****` and its last four characters."""
    lowered = text.lower()  # _hinted, inline: this runs on the hot path (clean_text)
    if "sk-" in lowered or "rcv_" in lowered or "bearer" in lowered:
        return _SECRET.sub(_mask, text)
    return text


def redact_value(value: Any) -> Any:
    """Redact strings inside a log value (nested dicts, lists and tuples included, and
    the `repr` of any other object the renderer would print)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {
            (redact_text(k) if isinstance(k, str) else k): redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if type(value) in _PLAIN:
        return value
    shown = repr(value)
    masked = redact_text(shown)
    return value if masked == shown else masked


def redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every value of the event.

    One joined scan decides whether any string value needs the regex, so a clean
    line (nearly every line) costs a single pass over its strings.
    """
    strings: list[str] = []
    others: list[str] = []
    for key, value in event_dict.items():
        kind = type(value)
        if kind is str:
            strings.append(value)
        elif kind in _CONTAINERS:
            if value:
                others.append(key)
        elif kind not in _PLAIN and key not in _META:
            others.append(key)
    if _hinted("\x00".join(strings)):
        for key, value in event_dict.items():
            if type(value) is str:
                event_dict[key] = redact_text(value)
    for key in others:
        event_dict[key] = redact_value(event_dict[key])
    return event_dict
