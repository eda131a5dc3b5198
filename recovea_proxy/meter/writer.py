"""Writes metering batches to Postgres: events, their routes and their receipts.

PostgreSQL refuses `COPY FROM` into a table with row-level security, so a batch is
COPYed into session-temporary staging tables and moved with one
`INSERT … SELECT … ON CONFLICT DO NOTHING` per table, all in one transaction. The
conflict keys ((request_id, ts) for events, (chain_id, seq) for receipts) make a
retried or replayed batch idempotent. The writer owns one connection (the app
role, in service mode for the transaction) and reconnects after any failure.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from recovea_proxy.meter.event import COLUMNS, route_id, route_key, to_db_row
from recovea_proxy.meter.queue import Item
from recovea_proxy.store.database import connect

RECEIPT_COLUMNS = ("chain_id", "seq", "request_id", "customer_id", "kid", "ts", "token")
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS staging_events"
    " (LIKE recovea.request_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
    "CREATE TEMP TABLE IF NOT EXISTS staging_receipts"
    " (LIKE recovea.receipts) ON COMMIT DELETE ROWS;"
)
_MOVE_EVENTS = (
    f"INSERT INTO recovea.request_events ({', '.join(COLUMNS)})"
    f" SELECT {', '.join(COLUMNS)} FROM staging_events ON CONFLICT DO NOTHING"
)
_MOVE_RECEIPTS = (
    f"INSERT INTO recovea.receipts ({', '.join(RECEIPT_COLUMNS)})"
    f" SELECT {', '.join(RECEIPT_COLUMNS)} FROM staging_receipts ON CONFLICT DO NOTHING"
)
_MARK_HOURS = (
    "INSERT INTO recovea.rollup_pending (hour)"
    " SELECT DISTINCT date_trunc('hour', ts) FROM staging_events ON CONFLICT DO NOTHING"
)
_ADD_ROUTE = (
    "INSERT INTO recovea.routes (route_id, customer_id, provider, path, first_model)"
    " VALUES ($1, $2, $3, $4, $5)"
    " ON CONFLICT (route_id) DO UPDATE SET first_model = EXCLUDED.first_model"
    " WHERE routes.first_model IS NULL AND EXCLUDED.first_model IS NOT NULL"
)
RouteKey = tuple[str | None, str, str]


class EventWriter:
    """One connection that writes whole batches, or raises."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None
        #: routes known to exist with a first model, by (workspace, provider, path)
        self._routes: dict[RouteKey, uuid.UUID] = {}

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
            await conn.execute(_STAGING)
            self._conn = conn
        return self._conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()

    async def _write(self, batch: list[Item]) -> None:
        conn = await self._connection()
        events, receipts, new_routes = self._rows(batch)
        async with conn.transaction():
            await conn.execute("SELECT set_config('recovea.service', 'on', true)")
            if new_routes:
                await conn.executemany(_ADD_ROUTE, list(new_routes.values()))
            await conn.copy_records_to_table("staging_events", records=events, columns=COLUMNS)
            await conn.execute(_MOVE_EVENTS)
            await conn.execute(_MARK_HOURS)
            if receipts:
                await conn.copy_records_to_table(
                    "staging_receipts", records=receipts, columns=RECEIPT_COLUMNS
                )
                await conn.execute(_MOVE_RECEIPTS)
        for key, args in new_routes.items():
            if args[4] is not None:
                self._routes[key] = args[0]

    def _rows(
        self, batch: list[Item]
    ) -> tuple[list[list[Any]], list[tuple[Any, ...]], dict[RouteKey, tuple[Any, ...]]]:
        events: list[list[Any]] = []
        receipts: list[tuple[Any, ...]] = []
        new_routes: dict[RouteKey, tuple[Any, ...]] = {}
        known = self._routes
        for row, receipt in batch:
            customer, provider, path, model = route_key(row)
            key = (customer, provider, path)
            route = known.get(key)
            if route is None:
                route = route_id(customer, provider, path)
                if customer is not None and (key not in new_routes or new_routes[key][4] is None):
                    new_routes[key] = (route, uuid.UUID(customer), provider, path, model)
            events.append(to_db_row(row, route))
            if receipt is not None:
                receipts.append(_receipt_row(receipt))
        return events, receipts, new_routes


def _receipt_row(receipt: tuple[Any, ...]) -> tuple[Any, ...]:
    chain, seq, request_id, customer, kid, ts_ms, token = receipt
    return (
        chain,
        seq,
        uuid.UUID(hex=request_id),
        uuid.UUID(customer),
        kid,
        datetime.fromtimestamp(ts_ms / 1000, UTC),
        token,
    )
