"""The drainer: one task per process that moves metering events from the in-memory
queue to Postgres, off the hot path.

- Batches by size (`RECOVEA_METER_BATCH_MAX`, the queue wakes it) and by time
  (`RECOVEA_METER_FLUSH_INTERVAL_S`).
- A failed write is counted (`retried`), and the database is given a backoff that
  doubles up to `_BACKOFF_MAX_S`. Meanwhile batches are spilled to the spool; the
  next attempt replays the spool first, then the queue. With the spool full,
  events wait in the queue; only when the queue is full too are new ones dropped
  (by the queue, counted).
- `close()` (the lifespan's exit) flushes everything: written when the database
  answers, spooled when it does not. Only what is in memory when the process is
  killed outright can be lost: at most the queue's contents
  (`RECOVEA_METER_QUEUE_MAX` events) plus the batch being written.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics

_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


class Drainer:
    """Owns the writer and the spool; runs until closed."""

    def __init__(
        self,
        queue: MeterQueue,
        writer: EventWriter,
        spool: Spool,
        metrics: GatewayMetrics,
        *,
        batch_max: int,
        interval_s: float,
    ) -> None:
        self._queue = queue
        self._writer = writer
        self._spool = spool
        self._batch_max = batch_max
        self._interval = interval_s
        self._written = metrics.meter_events.labels("written")
        self._retried = metrics.meter_events.labels("retried")
        self._spooled = metrics.meter_events.labels("spooled")
        self._flush_seconds = metrics.meter_flush_seconds
        self._batch_size = metrics.meter_batch_size
        metrics.meter_queue_depth.set_function(lambda: len(queue))
        metrics.meter_spool_bytes.set_function(lambda: spool.size)
        self._log = structlog.get_logger("recovea.meter")
        self._backoff = 0.0
        self._retry_at = 0.0
        self._closing = False
        #: spooled batches already written by an interrupted replay (skipped next time)
        self._replayed = 0
        self._dropped = metrics.meter_events.labels("dropped")
        self._drop = metrics.fail_open.labels("meter", "queue_and_spool_full")
        self._task: asyncio.Task[None] | None = None
        self.written = 0

    async def start(self) -> None:
        """Adopt orphaned spool files and start the task."""
        adopted = await self._spool.adopt_orphans()
        if adopted:
            self._log.info("meter_spool_adopted", bytes=adopted)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meter-drainer")

    async def close(self, timeout_s: float) -> None:
        """Flush the queue (to the database, or the spool when it is down), then stop."""
        self._closing = True
        self._queue.wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                self._log.error("meter_flush_timeout", left_in_queue=len(self._queue))
        await self._writer.close()
        self._spool.close()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not self._closing and len(queue) < self._batch_max:
                try:
                    await asyncio.wait_for(queue.wake.wait(), self._wait_s())
                except TimeoutError:
                    pass
            queue.wake.clear()
            try:
                await self._cycle()
            except Exception:
                self._log.exception("meter_drainer_failed")
            if self._closing and (not len(queue) or self._retry_at):
                self._drop_left_over()
                return

    def _drop_left_over(self) -> None:
        """Closing with the database down and the spool full: what is left is lost."""
        left = len(self._queue)
        if left:
            self._queue.take(left)
            self._queue.dropped += left
            self._drop.inc(left)
            self._dropped.inc(left)
            self._log.error("meter_events_dropped_at_exit", events=left)

    def _wait_s(self) -> float:
        if self._retry_at:
            return max(0.001, min(self._interval, self._retry_at - time.monotonic()))
        return self._interval

    async def _cycle(self) -> None:
        """One pass: write (spool first, then queue) when the database is due a try,
        otherwise spill the queue to the spool."""
        if self._retry_at and time.monotonic() < self._retry_at and not self._closing:
            await self._spill_queue()
            return
        try:
            if self._spool.pending:
                await self._replay_spool()
            # What was waiting when the pass began, in full batches. Events that arrive
            # meanwhile wait for the next pass: chasing them would turn a steady stream
            # into a chain of tiny transactions, each paying the fixed cost of a batch.
            due = len(self._queue)
            while due > 0:
                batch = self._queue.take(min(self._batch_max, due))
                due -= len(batch)
                try:
                    await self._write(batch)
                except Exception:
                    if not await self._spool.append(batch):
                        self._queue.give_back(batch)
                    else:
                        self._spooled.inc(len(batch))
                    raise
        except Exception as exc:
            self._backoff = min(_BACKOFF_MAX_S, max(_BACKOFF_FIRST_S, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            self._log.warning(
                "meter_write_failed", error=type(exc).__name__, retry_in_s=self._backoff
            )
            if self._closing:
                await self._spill_queue()
                return
        else:
            if self._retry_at:
                self._log.info("meter_write_recovered")
            self._backoff = 0.0
            self._retry_at = 0.0

    async def _write(self, batch: list[Item]) -> None:
        started = time.perf_counter()
        try:
            await self._writer.write(batch)
        except Exception:
            # Any failure is a failed attempt whose batch is kept: the database's, the
            # network's, and the client library's own (asyncpg raises InternalClientError,
            # outside its PostgresError/InterfaceError trees, when a connection broke in
            # the middle of an operation).
            self._retried.inc(len(batch))
            raise
        self._flush_seconds.observe(time.perf_counter() - started)
        self._batch_size.observe(len(batch))
        self._written.inc(len(batch))
        self.written += len(batch)

    async def _replay_spool(self) -> None:
        batches = await self._spool.read_all()
        for batch in batches[self._replayed :]:
            await self._write(batch)
            self._replayed += 1
        await self._spool.clear()
        self._replayed = 0
        if batches:
            self._log.info("meter_spool_replayed", batches=len(batches))

    async def _spill_queue(self) -> None:
        while len(self._queue):
            batch = self._queue.take(self._batch_max)
            if not await self._spool.append(batch):
                self._queue.give_back(batch)
                return
            self._spooled.inc(len(batch))
