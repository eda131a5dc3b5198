"""The checkpoint task (RECOVEA_RECEIPT_SIGNING=checkpoint): signs the head of every
receipt chain that moved, off the hot path, and queues the checkpoints for the ledger.

It signs every `RECOVEA_RECEIPT_CHECKPOINT_MS`, as soon as a chain has
`RECOVEA_RECEIPT_CHECKPOINT_EVERY` receipts not yet covered (the signer sets `due`;
the request never signs), and once more at shutdown, after the last request has
finished and before the drainer's final flush, so every receipt a process issued
is covered.

A checkpoint rides the metering queue as a staging row with no `request_id` (the
writer moves such rows to `receipt_checkpoints`), so it is written, retried,
spooled while the database is down and replayed exactly as the events are. What
can be lost is what the queue can lose: a checkpoint dropped because queue and
spool are full (the next one covers its receipts, as every checkpoint covers its
whole chain up to its seq), and, when the process is killed outright, the
receipts issued since the last checkpoint — at most `EVERY` per chain, or
`MS` worth of traffic — which stay unsigned for good.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from recovea_proxy.meter.event import STAGING_COLUMNS
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.receipts import CheckpointSigner

_CUSTOMER = STAGING_COLUMNS.index("customer_id")
_TS = STAGING_COLUMNS.index("ts")
_PLACE = STAGING_COLUMNS.index("chain_id")
_EMPTY: list[object] = [None] * len(STAGING_COLUMNS)


def checkpoint_row(workspace: str, chain: str, seq: int, kid: str, ts_ms: int, token: str) -> Item:
    """A checkpoint as a staging row: no request_id; the workspace, the time, and the
    chain, seq, kid and token in the receipt's place."""
    row = list(_EMPTY)
    row[_CUSTOMER] = workspace
    row[_TS] = ts_ms
    row[_PLACE : _PLACE + 4] = (chain, seq, kid, token)
    return tuple(row)


class Checkpointer:
    """Owns the checkpoint task; `close()` signs the final checkpoints."""

    def __init__(self, signer: CheckpointSigner, queue: MeterQueue, interval_ms: int) -> None:
        self._signer = signer
        self._queue = queue
        self._interval = interval_ms / 1000
        self._task: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("recovea.meter")
        #: checkpoints signed by this process
        self.signed = 0

    def start(self) -> None:
        """Start the task."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="receipt-checkpoints")

    async def close(self) -> None:
        """Stop the task, then sign every chain that moved since its last checkpoint."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.sign_moved()

    def sign_moved(self) -> None:
        """Sign and queue a checkpoint for each chain that moved."""
        for checkpoint in self._signer.checkpoints():
            self._queue.put(checkpoint_row(*checkpoint))
            self.signed += 1

    async def _run(self) -> None:
        due = self._signer.due
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(due.wait(), self._interval)
            due.clear()
            try:
                self.sign_moved()
            except Exception:  # a signing fault must not end the task
                self._log.exception("receipt_checkpoint_failed")
