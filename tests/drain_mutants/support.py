"""What the drainer mutation tests share: a drainer built on its own queue, spool,
dead-letter directory and metrics (`new_drain`), a workspace's row held locked by
another session (`WorkspaceLock`), and polling without blocking the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.drain import Drainer
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics
from tests.drain_support import COLUMN
from tests.support import Postgres


class WorkspaceLock:
    """A workspace's row held FOR UPDATE by another session (as a deletion in progress
    holds it): a write of that workspace's events waits until `release`."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @classmethod
    async def hold(cls, postgres: Postgres, workspace: str) -> WorkspaceLock:
        conn = await asyncpg.connect(postgres.url)
        await conn.execute("BEGIN")
        await conn.execute(
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1::uuid FOR UPDATE", workspace
        )
        return cls(conn)

    async def waited_on(self) -> bool:
        """Whether a write is waiting for this lock."""
        await self._conn.execute("SELECT pg_stat_clear_snapshot()")  # fresh, in a transaction
        waiting = await self._conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%FOR KEY SHARE%'"
        )
        return bool(waiting)

    async def release(self) -> None:
        if not self._conn.is_closed():
            await self._conn.execute("ROLLBACK")
            await self._conn.close()


@dataclass
class Drain:
    drainer: Drainer
    queue: MeterQueue
    spool: Spool
    metrics: GatewayMetrics
    dead_dir: Path

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("meter_events_total", {"outcome": outcome})
        return float(value or 0)

    def fail_open(self, reason: str) -> float:
        labels = {"layer": "meter", "reason": reason}
        value = self.metrics.registry.get_sample_value("gateway_fail_open_total", labels)
        return float(value or 0)

    def gauge(self, name: str) -> float:
        return float(self.metrics.registry.get_sample_value(name) or 0)

    def batches(self) -> tuple[float, float]:
        """(batches written, events in them), from the batch-size histogram."""
        registry = self.metrics.registry
        count = registry.get_sample_value("meter_batch_size_count") or 0
        total = registry.get_sample_value("meter_batch_size_sum") or 0
        return float(count), float(total)


def new_drain(
    url: str,
    data_dir: Path,
    *,
    batch_max: int = 5000,
    interval_s: float = 0.05,
    spool_bytes: int = 64 * 1024 * 1024,
    dead_bytes: int = 64 * 1024 * 1024,
    dead_dir: Path | None = None,
    queue_max: int = 100_000,
    write_timeout_s: float = 5.0,
) -> Drain:
    metrics = GatewayMetrics()
    queue = MeterQueue(queue_max, batch_max, lambda: None)
    spool = Spool(data_dir / "spool", spool_bytes)
    dead_dir = dead_dir or data_dir / "dead-letter"
    drainer = Drainer(
        queue,
        EventWriter(url, timeout_s=write_timeout_s),
        spool,
        DeadLetters(dead_dir, dead_bytes),
        metrics,
        batch_max=batch_max,
        interval_s=interval_s,
    )
    return Drain(drainer, queue, spool, metrics, dead_dir)


async def until(predicate: Callable[[], bool], what: str, deadline_s: float = 10.0) -> None:
    """Poll `predicate` without blocking the event loop; fail after the deadline."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def until_waited_on(lock: WorkspaceLock) -> None:
    end = time.monotonic() + 10
    while not await lock.waited_on():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for a write to wait on the lock")
        await asyncio.sleep(0.01)


def request_id(event: Item) -> str:
    return str(event[COLUMN["request_id"]])
