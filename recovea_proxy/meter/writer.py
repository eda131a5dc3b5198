"""Writes metering batches to Postgres: events, their routes and their receipts.

PostgreSQL refuses `COPY FROM` into a table with row-level security, so a batch is
COPYed into one session-temporary staging table (each event beside its receipt, ids
as text, the time as epoch milliseconds) and moved with one
`INSERT … SELECT … ON CONFLICT DO NOTHING` per table, all in one transaction; the
casts happen in Postgres, not in Python. The conflict keys ((request_id, ts) for
events, (chain_id, seq) for receipts) make a retried or replayed batch idempotent.
The writer owns one connection (the app role, in service mode for the transaction)
and reconnects after any failure.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import orjson

from recovea_proxy.meter.event import COLUMNS, LEVERS, ROUTE, route_id, route_key
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
}
RECEIPT_COLUMNS = ("chain_id", "seq", "kid", "token")
STAGING_COLUMNS = (*COLUMNS, *RECEIPT_COLUMNS)
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
    "INSERT INTO recovea.rollup_pending (hour)"
    f" SELECT DISTINCT date_trunc('hour', {_CAST['ts']}) FROM staging_events"
    " ON CONFLICT DO NOTHING"
)
_ADD_ROUTE = (
    "INSERT INTO recovea.routes (route_id, customer_id, provider, path, first_model)"
    " VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (route_id) DO UPDATE SET first_model = EXCLUDED.first_model"
    " WHERE routes.first_model IS NULL AND EXCLUDED.first_model IS NOT NULL"
)
_NO_RECEIPT = (None, None, None, None)
RouteKey = tuple[str | None, str, str]


class EventWriter:
    """One connection that writes whole batches, or raises."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None
        #: route ids by (workspace, provider, path); `_named` ones exist with a first model
        self._ids: dict[RouteKey, uuid.UUID | None] = {}
        self._named: set[RouteKey] = set()

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
        records, new_routes = self._records(batch)
        async with conn.transaction():
            await conn.execute("SELECT set_config('recovea.service', 'on', true)")
            if new_routes:
                await conn.executemany(_ADD_ROUTE, list(new_routes.values()))
            await conn.copy_records_to_table(
                "staging_events", records=records, columns=STAGING_COLUMNS
            )
            await conn.execute(_MOVE_EVENTS)
            await conn.execute(_MOVE_RECEIPTS)
            await conn.execute(_MARK_HOURS)
        for key, args in new_routes.items():
            if args[4] is not None:
                self._named.add(key)

    def _records(
        self, batch: list[Item]
    ) -> tuple[list[tuple[Any, ...]], dict[RouteKey, tuple[Any, ...]]]:
        records: list[tuple[Any, ...]] = []
        new_routes: dict[RouteKey, tuple[Any, ...]] = {}
        ids = self._ids
        for row, receipt in batch:
            customer, provider, path, model = route_key(row)
            key = (customer, provider, path)
            if key in ids:
                route = ids[key]
            else:
                route = ids[key] = route_id(customer, provider, path) if customer else None
            if route is not None and key not in self._named:
                if key not in new_routes or new_routes[key][4] is None:
                    new_routes[key] = (route, uuid.UUID(customer), provider, path, model)
            levers = row[LEVERS]
            record = (
                *row[:ROUTE],
                route,
                *row[ROUTE + 1 : LEVERS],
                orjson.dumps(levers).decode() if levers else "{}",
                *row[LEVERS + 1 :],
                *(receipt[:2] + receipt[4:5] + receipt[6:] if receipt else _NO_RECEIPT),
            )
            records.append(record)
        return records, new_routes


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
