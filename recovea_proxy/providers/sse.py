"""Incremental SSE reading for the response taps, cheap enough for every chunk.

Chunks from the upstream break anywhere, including inside a line. `MarkedLines`
keeps the unfinished tail and hands back only the complete lines that contain one
of a few byte markers, so a tap parses the handful of events that carry usage or a
finish reason and skips the rest with a couple of `bytes.find` calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A provider line longer than this is not an event a tap needs; the tail is dropped
# rather than grown without bound.
MAX_PENDING_LINE = 4 * 1024 * 1024


class MarkedLines:
    """Splits a byte stream into lines and returns those holding any marker."""

    __slots__ = ("_pattern", "_tail")

    def __init__(self, markers: Iterable[bytes]) -> None:
        # One compiled alternation scans a chunk once for every marker.
        self._pattern = re.compile(b"|".join(re.escape(m) for m in markers))
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete lines of `chunk` (joined to the earlier tail) with a marker."""
        buf = self._tail + chunk if self._tail else chunk
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r"))
        if cut < 0:
            self._tail = buf if len(buf) <= MAX_PENDING_LINE else b""
            return []
        self._tail = buf[cut + 1 :]
        found = self._pattern.search(buf, 0, cut)
        if found is None:
            return []
        # Markers are rare: cut out only the lines that hold them.
        lines = []
        at = found.start()
        while at >= 0:
            start = max(buf.rfind(b"\n", 0, at), buf.rfind(b"\r", 0, at)) + 1
            end = buf.find(b"\n", at, cut + 1)
            cr = buf.find(b"\r", at, cut + 1)
            if end < 0 or 0 <= cr < end:
                end = cr
            lines.append(buf[start:end])
            found = self._pattern.search(buf, end, cut)
            at = found.start() if found is not None else -1
        return lines


def data_of(line: bytes) -> bytes | None:
    """The value of an SSE `data:` field line (one leading space dropped), else None."""
    if not line.startswith(b"data:"):
        return None
    value = line[5:]
    return value[1:] if value[:1] == b" " else value
