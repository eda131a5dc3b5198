"""The `usage` object of a JSON body too large to buffer, read from the body's last bytes.

Providers put `usage` at the end of a response body (embeddings, chat, Responses,
Messages), after the part that makes a body large (vectors, choices, output). So a
JSON body that streams through the gateway unbuffered keeps only its last
`TAIL_BYTES` in a `JsonTail` as it passes — memory does not grow with the body — and
when it ends, `usage_object` finds the last `"usage"` key of the top-level object in
that tail and parses only its value.

How a key is told from text inside a string, without parsing the tail from the start
(which may begin mid-string): inside a JSON string every `"` is escaped, so the bytes
`"usage"` with an even number of backslashes before them open a string, and the
string is exactly `usage`; followed by `:` it is a key. From there on the position is
known to be outside any string, so scanning forward token by token (strings skipped
whole) finds the end of its value and whether it sits in the top-level object: the
object that holds it must be the last thing in the body. Anything else — a `"usage"`
in a nested object, a tail cut off mid-document, a value that is not an object, bytes
that do not parse — gives None: the usage stays unknown, never guessed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

#: bytes of a body's end kept: usage plus whatever follows it (Responses' metadata, a
#: chat body's service tier and fingerprint) fits many times over
TAIL_BYTES = 64 * 1024

_KEY = b'"usage"'
_WHITESPACE = b" \t\r\n"
# A whole string, a lone quote (a string the tail cuts off), or a bracket.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["{}\[\]]', re.DOTALL)
# A whole string, or what ends a scalar value: a comma or a closing bracket.
_SCALAR_END = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[,}\]]', re.DOTALL)
# Keys named usage looked at, newest first, before giving up: each costs a scan of
# the rest of the tail, and a body full of nested ones is not a provider's usage.
_MAX_KEYS = 8
_OPENERS = frozenset(b"{[")


class JsonTail:
    """The last `bound` bytes of a body, kept as its chunks pass."""

    __slots__ = ("_bound", "_buf", "trimmed")

    def __init__(self, bound: int = TAIL_BYTES) -> None:
        self._bound = bound
        self._buf = bytearray()
        #: bytes before the kept ones were dropped (the tail is not the whole body)
        self.trimmed = False

    def feed(self, chunk: bytes) -> None:
        """Keep the chunk's bytes that are among the body's last `bound`."""
        buf, bound = self._buf, self._bound
        size = len(chunk)
        if size >= bound:
            self.trimmed = self.trimmed or size > bound or bool(buf)
            buf[:] = memoryview(chunk)[size - bound :]
            return
        excess = len(buf) + size - bound
        if excess > 0:
            # CPython drops a bytearray's head by moving its start, not its bytes.
            del buf[:excess]
            self.trimmed = True
        buf += chunk

    @property
    def held(self) -> int:
        """Bytes kept now (never more than the bound)."""
        return len(self._buf)

    def value(self) -> bytes:
        """The kept bytes."""
        return bytes(self._buf)

    def complete(self) -> bool:
        """The kept bytes end like a whole JSON object (a closing brace)."""
        return self._buf.rstrip(_WHITESPACE).endswith(b"}")

    def usage_object(self) -> dict[str, Any] | None:
        """The top-level `usage` object in the kept bytes, or None (see the module)."""
        return usage_object(bytes(self._buf), whole=not self.trimmed)


def usage_object(tail: bytes, *, whole: bool = False) -> dict[str, Any] | None:
    """The value of the top-level object's last `"usage"` key in `tail`, the end of a
    JSON body (`whole`: the body itself), when it is an object; else None."""
    end = len(tail)
    keys = 0
    while (at := tail.rfind(_KEY, 0, end)) >= 0 and keys < _MAX_KEYS:
        end = at
        start = at
        while start and tail[start - 1] == 0x5C:  # a backslash
            start -= 1
        if (at - start) % 2 or (start == 0 and not whole):
            continue  # an escaped quote inside a string, or its escapes cut off
        colon = _skip_space(tail, at + len(_KEY))
        if tail[colon : colon + 1] != b":":
            continue  # a string value "usage", not a key
        keys += 1
        value = _skip_space(tail, colon + 1)
        closes = _closing(tail, value)
        if closes is None:
            return None  # a broken or cut-off value: the document does not parse
        value_end, top_level = closes
        if not top_level:
            continue  # a key of a nested object
        if tail[value : value + 1] != b"{":
            return None  # reported as null (or something that is not usage)
        try:
            parsed = orjson.loads(tail[value:value_end])
        except orjson.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _skip_space(buf: bytes, at: int) -> int:
    while at < len(buf) and buf[at] in _WHITESPACE:
        at += 1
    return at


def _closing(buf: bytes, at: int) -> tuple[int, bool] | None:
    """Where the value starting at `at` ends, and whether the object holding it is the
    body's outermost one (its closing brace is the last thing in `buf`); None when the
    bytes from `at` on are not the end of a JSON document."""
    depth = 0
    value_end = -1
    if buf[at : at + 1] not in (b"{", b"["):
        # A scalar: it ends at the next comma or closing bracket outside a string.
        match = _SCALAR_END.search(buf, at)
        if match is None:
            return None
        value_end = match.start() if match.group() in (b",", b"}", b"]") else match.end()
    for match in _TOKENS.finditer(buf, at if value_end < 0 else value_end):
        token = match.group()
        first = token[0]
        if first == 0x22:  # a quote: a whole string, or a cut-off one
            if len(token) == 1:
                return None
            continue
        if first in _OPENERS:
            depth += 1
            continue
        depth -= 1
        if depth == 0 and value_end < 0:
            value_end = match.end()
        elif depth == -1:
            # The closer of the object holding the key: the document's last byte?
            if buf[match.end() :].strip(_WHITESPACE):
                return value_end, False
            return value_end, token == b"}"
    return None
