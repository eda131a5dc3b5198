"""The ledger's daily partitions are made once, however many processes start at once
(`recovea serve --workers N`, replicas behind a balancer): each takes its turn."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg

from recovea_proxy.store.migrate import apply_migrations
from recovea_proxy.store.service import ensure_partitions
from tests.support import Postgres

FAR_DAY = date(2099, 3, 1)  # no partition exists this far ahead


async def test_processes_starting_together_make_each_partition_once(postgres: Postgres) -> None:
    """Eight connections make the same three days' partitions at the same moment: none
    fails, and each partition is reported made exactly once."""
    connections = [await asyncpg.connect(postgres.url) for _ in range(8)]
    await apply_migrations(connections[0])  # the schema, if no gateway made it yet
    try:
        made = await asyncio.gather(
            *(ensure_partitions(conn, days_ahead=2, today=FAR_DAY) for conn in connections)
        )
        names = sorted(name for created in made for name in created)
        assert names == ["request_events_20990301", "request_events_20990302",
                         "request_events_20990303"]  # fmt: skip
    finally:
        for day in ("20990301", "20990302", "20990303"):
            await connections[0].execute(f"DROP TABLE IF EXISTS recovea.request_events_{day}")
        for conn in connections:
            await conn.close()
