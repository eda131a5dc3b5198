"""What a gateway's levers did during a run, in the gateway's own words: its JSON
request log (one line per request, `levers_fired` among the fields), read between
two offsets of the target's log file.

It is how a run shows that a mode did what it says — every `cache-hit` request a
hit, every `cache-miss` request a miss, 19 of each 20-way burst answered by the
flight — without asking the gateway anything while it is measured. The log is
written in batches (at most 0.1 s after a line, `RequestLog.FLUSH_AFTER_S`), so a
reader waits, up to a deadline, for the lines of the requests it sent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

_REQUEST = b'"event":"request"'
_CACHE_HIT = b'"cache":"hit"'
_DEDUP_HIT = b'"dedup":"hit"'
_POLL_S = 0.05


@dataclass(frozen=True)
class Seen:
    """Request lines between two offsets of a log, and what answered them."""

    requests: int
    cache_hits: int
    #: answered by a flight in progress (`levers_fired.dedup` = hit)
    flight_joins: int
    #: where the next read starts (just past the last whole line read)
    end: int


def size(log: Path) -> int:
    """The log's length now (where a reader starts)."""
    try:
        return log.stat().st_size
    except OSError:
        return 0


def read(log: Path, start: int, expected: int, deadline_s: float = 5.0) -> Seen:
    """The request lines written since `start`, once there are `expected` of them or
    the deadline has passed (whichever comes first)."""
    end_by = time.monotonic() + deadline_s
    while True:
        seen = _count(log, start)
        if seen.requests >= expected or time.monotonic() > end_by:
            return seen
        time.sleep(_POLL_S)  # the gateway flushes its log on a timer of its own


def _count(log: Path, start: int) -> Seen:
    try:
        with log.open("rb") as f:
            f.seek(start)
            data = f.read()
    except OSError:
        return Seen(0, 0, 0, start)
    whole = data[: data.rfind(b"\n") + 1]  # a batch may be half written
    return Seen(
        whole.count(_REQUEST),
        whole.count(_CACHE_HIT),
        whole.count(_DEDUP_HIT),
        start + len(whole),
    )
