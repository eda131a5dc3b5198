"""A real drainer (queue, writer, spool, dead-letter file) against the session's
Postgres, run in the test's own event loop, with events built the way the hot path
builds them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from recovea_proxy.meter.dead_letter import DeadLetters
from recovea_proxy.meter.drain import Drainer
from recovea_proxy.meter.event import STAGING_COLUMNS, RouteIds, event_row
from recovea_proxy.meter.queue import Item, MeterQueue
from recovea_proxy.meter.spool import Spool
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord
from recovea_proxy.store.database import APP_ROLE, connect
from recovea_proxy.store.migrate import apply_migrations
from recovea_proxy.store.service import ensure_partitions, service_mode

COLUMN = {name: index for index, name in enumerate(STAGING_COLUMNS)}


def app_url_of(owner: str) -> str:
    """The app role's URL on the same embedded server."""
    return owner.replace("postgres:@", f"{APP_ROLE}@", 1)


async def prepare(owner: str, names: list[str]) -> list[str]:
    """Migrate, and create one workspace per name; their ids."""
    conn = await connect(owner)
    try:
        await apply_migrations(conn)
        await ensure_partitions(conn)
        ids = [str(uuid.uuid4()) for _ in names]
        async with conn.transaction():
            await service_mode(conn)
            for workspace, name in zip(ids, names, strict=True):
                await conn.execute(
                    "INSERT INTO recovea.workspaces (customer_id, name) VALUES ($1::uuid, $2)",
                    workspace,
                    f"{name}-{workspace[:8]}",
                )
    finally:
        await conn.close()
    return ids


def good_event(workspace: str, **fields: Any) -> Item:
    """A realistic staging row (as `event_row` builds it), with `fields` replaced."""
    record = RequestRecord(uuid.uuid4().hex, uuid.uuid4().hex, 0, time.time_ns() // 1_000_000)
    record.provider, record.route, record.model = "openai", "/v1/chat/completions", "gpt-4o"
    record.workspace_id, record.env, record.feature = workspace, "live", "tests"
    record.usage = Usage(input_tokens=10, output_tokens=5)
    record.success = True
    record.end(1_000_000)
    row = list(event_row(record, RouteIds().id_for(record)))
    for name, value in fields.items():
        row[COLUMN[name]] = value
    return tuple(row)


@dataclass
class Drain:
    """A running drainer and what it counts."""

    drainer: Drainer
    queue: MeterQueue
    metrics: GatewayMetrics
    dead_dir: Path

    def count(self, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("meter_events_total", {"outcome": outcome})
        return float(value or 0)

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead-letter entry written so far."""
        return [
            orjson.loads(line)
            for path in sorted(self.dead_dir.glob("*.jsonl"))
            for line in path.read_bytes().splitlines()
        ]

    async def settled(self, total: int, deadline_s: float = 60) -> None:
        """Wait until `total` events have an outcome (written, rejected or discarded)."""
        end = time.monotonic() + deadline_s
        while self.count("written") + self.count("rejected") + self.count("discarded") < total:
            if time.monotonic() > end:
                raise AssertionError(
                    f"only {self.count('written')} written, {self.count('rejected')} rejected,"
                    f" {self.count('discarded')} discarded of {total}"
                )
            await asyncio.sleep(0.01)


@asynccontextmanager
async def running_drain(
    app_url: str, data_dir: Path, *, interval_s: float = 0.05, batch_max: int = 5000
) -> AsyncIterator[Drain]:
    """A drainer with its own spool and dead-letter directories under `data_dir`."""
    metrics = GatewayMetrics()
    queue = MeterQueue(100_000, batch_max, lambda: None)
    dead_dir = data_dir / "dead-letter"
    drainer = Drainer(
        queue,
        EventWriter(app_url),
        Spool(data_dir / "spool", 64 * 1024 * 1024),
        DeadLetters(dead_dir, 256 * 1024 * 1024),
        metrics,
        batch_max=batch_max,
        interval_s=interval_s,
    )
    await drainer.start()
    try:
        yield Drain(drainer, queue, metrics, dead_dir)
    finally:
        await drainer.close(30)


async def stored_ids(owner: str, request_ids: list[str]) -> set[str]:
    """Which of these request ids have a row (read as the owner, no RLS)."""
    conn: asyncpg.Connection = await asyncpg.connect(owner)
    try:
        rows = await conn.fetch(
            "SELECT request_id::text AS id FROM recovea.request_events"
            " WHERE request_id = ANY($1::uuid[])",
            [str(uuid.UUID(value)) for value in request_ids],
        )
    finally:
        await conn.close()
    return {uuid.UUID(row["id"]).hex for row in rows}
