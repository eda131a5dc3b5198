"""Service work on the owner connection that spans workspaces: keeping
`request_events` partitions ahead of time and the passthrough workspace."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import asyncpg

PASSTHROUGH_NAME = "passthrough"


async def service_mode(conn: asyncpg.Connection) -> None:
    """Declare the current transaction to be the gateway's own cross-workspace work."""
    await conn.execute("SELECT set_config('recovea.service', 'on', true)")


_LOCK = "recovea.ensure_event_partition"


async def ensure_partitions(
    conn: asyncpg.Connection, *, days_ahead: int = 2, today: date | None = None
) -> list[str]:
    """Create the daily partitions from today to `days_ahead` days on; the new names."""
    start = today or datetime.now(UTC).date()
    created = []
    for offset in range(days_ahead + 1):
        day = start + timedelta(days=offset)
        async with conn.transaction():
            await service_mode(conn)
            # Processes starting together (`--workers N`, replicas) take turns: the
            # second finds the partition made instead of creating it twice.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", _LOCK)
            if await conn.fetchval("SELECT recovea.ensure_event_partition($1)", day):
                created.append(f"request_events_{day:%Y%m%d}")
    return created


async def passthrough_workspace(conn: asyncpg.Connection) -> str:
    """The id of the workspace passthrough requests are metered under (created once)."""
    async with conn.transaction():
        await service_mode(conn)
        await conn.execute(
            "INSERT INTO recovea.workspaces (customer_id, name, plan) VALUES ($1, $2, 'free')"
            " ON CONFLICT (name) DO NOTHING",
            uuid.uuid4(),
            PASSTHROUGH_NAME,
        )
        found = await conn.fetchval(
            "SELECT customer_id FROM recovea.workspaces WHERE name = $1", PASSTHROUGH_NAME
        )
    return str(found)
