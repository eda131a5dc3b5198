"""The drainer: one task per process that moves metering events from the in-memory
queue to Postgres, off the hot path.

- Batches by size (`RECOVEA_METER_BATCH_MAX`, the queue wakes it) and by time
  (`RECOVEA_METER_FLUSH_INTERVAL_S`). A pass writes the queue, then replays the
  spool: nothing spooled is ever written before newer events.
- One bad event never blocks the others. A batch that fails with a data error (an
  event Postgres or the driver refuses for its content, `writer.is_data_error`) is
  split in halves until each refused event is alone; the rest is written, and each
  refused event is set aside in the dead-letter file with the reason (counted
  `rejected`). A write that times out while the database still answers a probe is
  treated the same way (an event too large to write in time).
- Any other failure is an outage: counted (`retried`), and the database is given a
  backoff that doubles up to `_BACKOFF_MAX_S`. Meanwhile batches are spilled to the
  spool, replayed once the database is back. With the spool full, events wait in
  the queue; only when the queue is full too are new ones dropped (by the queue,
  counted).
- Events of a workspace deleted after they were queued or spooled are discarded by
  the writer (counted `discarded`).
- `close()` (the lifespan's exit) flushes everything: written when the database
  answers, spooled when it does not. Only what is in memory when the process is
  killed outright can be lost: at most the queue's contents
  (`RECOVEA_METER_QUEUE_MAX` events) plus the batch being written.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter, is_data_error, is_timeout
from recovea_proxy.observability.metrics import GatewayMetrics

_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 5.0


class _Outage(Exception):
    """A write failed for a reason other than its events' content; `unwritten` holds
    the events of the batch that were neither written nor set aside, in order."""

    def __init__(self, unwritten: list[Item], cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.unwritten = unwritten
        self.cause = cause


class Drainer:
    """Owns the writer and the spool; runs until closed."""

    def __init__(
        self,
        queue: MeterQueue,
        writer: EventWriter,
        spool: Spool,
        dead_letters: DeadLetters,
        metrics: GatewayMetrics,
        *,
        batch_max: int,
        interval_s: float,
    ) -> None:
        self._queue = queue
        self._writer = writer
        self._spool = spool
        self._dead = dead_letters
        self._batch_max = batch_max
        self._interval = interval_s
        self._written = metrics.meter_events.labels("written")
        self._retried = metrics.meter_events.labels("retried")
        self._spooled = metrics.meter_events.labels("spooled")
        self._rejected = metrics.meter_events.labels("rejected")
        self._discarded = metrics.meter_events.labels("discarded")
        self._dead_full = metrics.fail_open.labels("meter", "dead_letter_full")
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
                await self._spill_queue()  # what is left goes to the spool, not away
        await self._writer.close()
        self._spool.close()
        self._dead.close()

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
        """One pass: write the queue, then replay the spool, when the database is due a
        try; otherwise spill the queue to the spool."""
        if self._retry_at and time.monotonic() < self._retry_at and not self._closing:
            await self._spill_queue()
            return
        try:
            # What was waiting when the pass began, in full batches. Events that arrive
            # meanwhile wait for the next pass: chasing them would turn a steady stream
            # into a chain of tiny transactions, each paying the fixed cost of a batch.
            due = len(self._queue)
            while due > 0:
                batch = self._queue.take(min(self._batch_max, due))
                due -= len(batch)
                try:
                    await self._write(batch)
                except _Outage as outage:
                    if not await self._spool.append(outage.unwritten):
                        self._queue.give_back(outage.unwritten)
                    else:
                        self._spooled.inc(len(outage.unwritten))
                    raise
            if self._spool.pending:
                await self._replay_spool()
        except _Outage as exc:
            self._backoff = min(_BACKOFF_MAX_S, max(_BACKOFF_FIRST_S, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            self._log.warning(
                "meter_write_failed", error=type(exc.cause).__name__, retry_in_s=self._backoff
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
        """Write `batch`, setting aside each event the database refuses for its content;
        raise `_Outage` (with what is still unwritten) on any other failure."""
        parts = [batch]
        while parts:
            part = parts.pop()
            started = time.perf_counter()
            try:
                discarded = await self._writer.write(part)
            except Exception as exc:
                # Any failure keeps its events: the database's, the network's, and the
                # client library's own (asyncpg raises InternalClientError, outside its
                # PostgresError/InterfaceError trees, when a connection broke in the
                # middle of an operation).
                if not await self._refused_for_content(exc):
                    unwritten = part + [event for rest in reversed(parts) for event in rest]
                    self._retried.inc(len(unwritten))
                    raise _Outage(unwritten, exc) from exc
                if len(part) == 1:
                    await self._set_aside(part[0], exc)
                else:
                    half = len(part) // 2
                    parts.append(part[half:])
                    parts.append(part[:half])
                continue
            self._flush_seconds.observe(time.perf_counter() - started)
            self._batch_size.observe(len(part))
            written = len(part) - discarded
            self._written.inc(written)
            self.written += written
            if discarded:
                self._discarded.inc(discarded)

    async def _refused_for_content(self, exc: BaseException) -> bool:
        """Whether a failed write failed because of what it held: a data error, or a
        timeout while the database answers a probe (events too large to write in time)."""
        if is_data_error(exc):
            return True
        return is_timeout(exc) and await self._writer.answers()

    async def _set_aside(self, event: Item, exc: BaseException) -> None:
        """Put one refused event in the dead-letter file (or, when it is full, drop it),
        counted and logged either way; never raises."""
        reason = f"{type(exc).__name__}: {exc}"
        request_id = str(event[0])[:64] if event else None
        try:
            kept = await self._dead.append(event, reason)
        except Exception as failure:  # a full disk, say: the event is lost, and counted
            self._log.error("meter_dead_letter_failed", error=type(failure).__name__)
            kept = False
        if kept:
            self._rejected.inc()
            self._log.warning(
                "meter_event_rejected", request_id=request_id, error=type(exc).__name__
            )
        else:
            self._dropped.inc()
            self._dead_full.inc()
            self._log.error(
                "meter_event_dropped", request_id=request_id, error=type(exc).__name__
            )

    async def _replay_spool(self) -> None:
        batches = await self._spool.read_all()
        for batch in batches[self._replayed :]:
            try:
                await self._write(batch)
            except _Outage as outage:
                # What this batch wrote or set aside stays done: its remainder goes to the
                # end of the spool and the batch counts as replayed.
                if len(outage.unwritten) < len(batch) and await self._spool.append(
                    outage.unwritten
                ):
                    self._replayed += 1
                raise
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
