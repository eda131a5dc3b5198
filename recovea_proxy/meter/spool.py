"""The metering spool: where batches wait while the database cannot be written.

One append-only file per process under `<data dir>/spool/`, one JSON line per batch,
held under an exclusive `flock` so no other process touches it while its owner
lives. A file whose lock can be taken belongs to a process that is gone: it is
adopted and replayed. The spool is bounded (`RECOVEA_METER_SPOOL_MAX_MB`); `append`
refuses a batch that would not fit. A torn last line (a process killed mid-write)
is skipped on replay. Replaying twice is harmless: the writer ignores rows it
already has. A row spooled by an older version, with fewer staging columns, is read
with NULLs for the ones it lacks. File work runs in a thread, never on the event
loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from pathlib import Path
from typing import IO, Any

import orjson

from recovea_proxy.meter.event import STAGING_COLUMNS
from recovea_proxy.meter.queue import Item

_WIDTH = len(STAGING_COLUMNS)


class Spool:
    """Bounded on-disk overflow for metering batches."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self._dir = directory
        self._max = max_bytes
        self._own: IO[bytes] | None = None
        self._own_path: Path | None = None
        self._adopted: list[tuple[Path, IO[bytes]]] = []
        self.size = 0

    @property
    def pending(self) -> bool:
        """Whether anything waits to be replayed."""
        return self.size > 0 or bool(self._adopted)

    async def adopt_orphans(self) -> int:
        """Take over the spool files of processes that are gone; their byte count."""
        return await asyncio.to_thread(self._adopt_orphans)

    async def append(self, batch: list[Item]) -> bool:
        """Write one batch durably; False when it would not fit."""
        line = orjson.dumps(batch) + b"\n"
        if self.size + len(line) > self._max:
            return False
        await asyncio.to_thread(self._append, line)
        self.size += len(line)
        return True

    async def read_all(self) -> list[list[Item]]:
        """Every spooled batch (own file and adopted ones), oldest first."""
        return await asyncio.to_thread(self._read_all)

    async def clear(self) -> None:
        """Forget what was replayed: empty the own file, delete adopted ones."""
        await asyncio.to_thread(self._clear)
        self.size = 0

    def close(self) -> None:
        """Release the files; a non-empty own file stays for the next process."""
        for handle in self._handles():
            handle.close()
        if self._own is not None and self._own_path is not None and self.size == 0:
            self._own_path.unlink(missing_ok=True)
        self._own = None
        self._adopted = []

    def _handles(self) -> list[IO[bytes]]:
        handles = [handle for _, handle in self._adopted]
        if self._own is not None:
            handles.append(self._own)
        return handles

    def _adopt_orphans(self) -> int:
        if not self._dir.is_dir():
            return 0
        total = 0
        for path in sorted(self._dir.glob("meter-*.jsonl")):
            if path == self._own_path:
                continue
            handle = path.open("r+b")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()  # a live process owns it
                continue
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                path.unlink(missing_ok=True)
                handle.close()
                continue
            self._adopted.append((path, handle))
            total += size
        return total

    def _open_own(self) -> IO[bytes]:
        if self._own is None:
            self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = self._dir / f"meter-{os.getpid()}-{os.urandom(4).hex()}.jsonl"
            handle = path.open("a+b")
            fcntl.flock(handle, fcntl.LOCK_EX)
            os.chmod(path, 0o600)
            self._own, self._own_path = handle, path
        return self._own

    def _append(self, line: bytes) -> None:
        handle = self._open_own()
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())

    def _read_all(self) -> list[list[Item]]:
        batches: list[list[Item]] = []
        for handle in self._handles():
            handle.seek(0)
            for line in handle.read().splitlines():
                batch = _parse_line(line)
                if batch is not None:
                    batches.append(batch)
        return batches

    def _clear(self) -> None:
        for path, handle in self._adopted:
            path.unlink(missing_ok=True)
            handle.close()
        self._adopted = []
        if self._own is not None:
            self._own.truncate(0)
            self._own.flush()
            os.fsync(self._own.fileno())


def _parse_line(line: bytes) -> list[Item] | None:
    try:
        raw: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None  # torn by a crash mid-write
    if not isinstance(raw, list):
        return None
    return [_widened(row) for row in raw]


def _widened(row: Any) -> Item:
    """A spooled row as a staging row: one spooled before columns were added to the
    staging table's end gets NULLs for them."""
    if isinstance(row, list) and len(row) < _WIDTH:
        row = row + [None] * (_WIDTH - len(row))
    return tuple(row)
