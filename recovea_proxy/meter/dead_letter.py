"""The dead-letter file: metering events Postgres refuses for their content, set aside
with the reason, so they never block the events behind them.

An event lands here when writing it alone fails with a data error (see
`writer.is_data_error`): a value Postgres cannot store, a constraint it breaks, a
value the driver cannot encode. Writing it again could never succeed, so it is not
retried; it is kept for an operator to read. One append-only file per process,
`<data dir>/dead-letter/meter-<pid>-<random>.jsonl`, one JSON object per event:

    {"at": "<UTC time>", "reason": "<error class and message>",
     "event": {"<staging column>": <value>, ...}}

Values are made JSON-safe on the way in: a string keeps at most `VALUE_MAX`
characters (`"…[+N chars]"` marks a cut) with lone surrogates escaped; an integer
outside 64 bits and any other type are written as their `repr`. The file is bounded
(`RECOVEA_METER_DEAD_LETTER_MAX_MB`); `append` refuses an event that would not fit.
File work runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from recovea_proxy.meter.event import STAGING_COLUMNS
from recovea_proxy.meter.queue import Item

#: characters of one string value kept in the file
VALUE_MAX = 4096
REASON_MAX = 500
_INT64 = 2**63


class DeadLetters:
    """Bounded append-only file of refused events."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max = max_bytes
        self._file: IO[bytes] | None = None
        self.path: Path | None = None
        self.size = 0

    async def append(self, event: Item, reason: str) -> bool:
        """Set one event aside with the reason; False when the file is full."""
        line = entry(event, reason)
        if self.size + len(line) > self._max:
            return False
        await asyncio.to_thread(self._append, line)
        self.size += len(line)
        return True

    def close(self) -> None:
        """Close the file (it stays on disk)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _append(self, line: bytes) -> None:
        if self._file is None:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self._dir / f"meter-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
            self._file = path.open("ab")
            os.chmod(path, 0o600)
            self.path = path
        self._file.write(line)
        self._file.flush()
        os.fsync(self._file.fileno())


def entry(event: Item, reason: str) -> bytes:
    """One dead-letter line: the time, the reason and the event's values, JSON-safe."""
    names = STAGING_COLUMNS if len(event) == len(STAGING_COLUMNS) else range(len(event))
    record = {
        "at": datetime.now(UTC).isoformat(),
        "reason": _safe(reason, REASON_MAX),
        "event": {
            str(name): _safe(value, VALUE_MAX) for name, value in zip(names, event, strict=True)
        },
    }
    return orjson.dumps(record) + b"\n"


def _safe(value: Any, limit: int) -> Any:
    """A value orjson can write and a reader can open: bounded, valid UTF-8."""
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else repr(value)
    if not isinstance(value, str):
        value = repr(value)
    if len(value) > limit:
        value = f"{value[:limit]}…[+{len(value) - limit} chars]"
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
