"""Writes metering batches to Postgres: events, their receipts and their routes.

PostgreSQL refuses `COPY FROM` into a table with row-level security, so a batch is
COPYed (asyncpg `copy_records_to_table`) into one session-temporary staging table —
rows exactly as the hot path queued them: each event beside its receipt and its
route's path, ids as text, the time as epoch milliseconds — and moved with one
`INSERT … SELECT … ON CONFLICT DO NOTHING` per table, in one transaction. Postgres
does the casts and creates routes on first sight (remembering the batch's earliest
model); the writer does no per-event work. The conflict keys ((request_id, ts) for
events, (chain_id, seq) for receipts, route_id for routes) make a retried or
replayed batch idempotent. The writer owns one connection (the app role, in
service mode for the transaction) and reconnects after any failure.
"""

from __future__ import annotations

import asyncio

import asyncpg

from recovea_proxy.meter.event import COLUMNS, STAGING_COLUMNS
from recovea_proxy.meter.queue import Item
from recovea_proxy.store.database import connect

#: staging column types where they differ from request_events' (casts done in Postgres)
_STAGING_TYPES = {
    "request_id": "text",
    "customer_id": "text",
    "project_id": "text",
    "team_id": "text",
    "rcv_key_id": "text",
    "levers_fired": "text",
    "ts": "bigint",
    "chain_id": "text",
    "seq": "bigint",
    "kid": "text",
    "token": "text",
    "route_path": "text",
}
_CAST = {
    "request_id": "request_id::uuid",
    "customer_id": "customer_id::uuid",
    "project_id": "project_id::uuid",
    "team_id": "team_id::uuid",
    "rcv_key_id": "rcv_key_id::uuid",
    "levers_fired": "levers_fired::jsonb",
    "ts": "timestamptz 'epoch' + ts * interval '1 millisecond'",
}
_MOVE_EVENTS = (
    f"INSERT INTO recovea.request_events ({', '.join(COLUMNS)})"
    f" SELECT {', '.join(_CAST.get(name, name) for name in COLUMNS)} FROM staging_events"
    " ON CONFLICT DO NOTHING"
)
_MOVE_RECEIPTS = (
    "INSERT INTO recovea.receipts (chain_id, seq, request_id, customer_id, kid, ts, token)"
    f" SELECT chain_id, seq, request_id::uuid, customer_id::uuid, kid, {_CAST['ts']}, token"
    " FROM staging_events WHERE token IS NOT NULL ON CONFLICT DO NOTHING"
)
_MARK_HOURS = (
    "INSERT INTO recovea.rollup_pending (hour, customer_id)"
    f" SELECT DISTINCT date_trunc('hour', {_CAST['ts']}), customer_id::uuid FROM staging_events"
    " WHERE customer_id IS NOT NULL ON CONFLICT DO NOTHING"
)
_ADD_ROUTES = (
    "INSERT INTO recovea.routes (route_id, customer_id, provider, path, first_model)"
    " SELECT DISTINCT ON (route_id) route_id, customer_id::uuid, provider, route_path,"
    " baseline_model FROM staging_events WHERE route_id IS NOT NULL"
    " ORDER BY route_id, baseline_model IS NULL, ts"
    " ON CONFLICT (route_id) DO UPDATE SET first_model = EXCLUDED.first_model"
    " WHERE routes.first_model IS NULL AND EXCLUDED.first_model IS NOT NULL"
)


class EventWriter:
    """One connection that writes whole batches, or raises."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def write(self, batch: list[Item]) -> None:
        """Write a batch in one transaction; on any error the connection is dropped
        and the error raised (the batch is then retried or spooled)."""
        try:
            await asyncio.wait_for(self._write(batch), self._timeout)
        except BaseException:
            await self._drop_connection()
            raise

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self._url, timeout_s=self._timeout)
            await conn.execute(await _staging_ddl(conn))
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    async def _write(self, batch: list[Item]) -> None:
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute("SELECT set_config('recovea.service', 'on', true)")
            await conn.copy_records_to_table(
                "staging_events", records=batch, columns=STAGING_COLUMNS
            )
            await conn.execute(_ADD_ROUTES)
            await conn.execute(_MOVE_EVENTS)
            await conn.execute(_MOVE_RECEIPTS)
            await conn.execute(_MARK_HOURS)


async def _staging_ddl(conn: asyncpg.Connection) -> str:
    """The staging table: request_events' column types, except the ones cast later."""
    types = {
        row["attname"]: row["type"]
        for row in await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = 'recovea.request_events'::regclass AND attnum > 0"
            " AND NOT attisdropped"
        )
    }
    columns = ", ".join(
        f"{name} {_STAGING_TYPES.get(name) or types[name]}" for name in STAGING_COLUMNS
    )
    return f"CREATE TEMP TABLE IF NOT EXISTS staging_events ({columns}) ON COMMIT DELETE ROWS"
