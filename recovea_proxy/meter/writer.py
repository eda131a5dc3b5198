"""Writes metering batches to Postgres: events, their receipts and their routes.

PostgreSQL refuses `COPY FROM` into a table with row-level security, so a batch is
COPYed (asyncpg `copy_records_to_table`) into one session-temporary staging table —
rows exactly as the hot path queued them: each event beside its receipt and its
route's path, ids as text, the time as epoch milliseconds — and moved with one
`INSERT … SELECT … ON CONFLICT DO NOTHING` per table, in one transaction. Postgres
does the casts and creates routes on first sight (remembering the batch's earliest
model); the writer does no per-event work. A row without a `request_id` is a
signed receipt checkpoint (`meter.checkpoints`): it goes to `receipt_checkpoints`
only. An event with cache writes or a
non-standard service tier also gets its `pricing_facts` row (the rollup's, keyed
like the event). The conflict keys ((request_id, ts) for
events, (chain_id, seq) for receipts and checkpoints, route_id for routes) make a retried or
replayed batch idempotent.

Deleted workspaces stay deleted: the batch first locks the rows of its workspaces
(`FOR KEY SHARE`, so a deletion in progress finishes first, or waits for this
write, which it then deletes) and discards the events of workspaces that no longer
exist — queued or spooled before the deletion — with their receipts and routes.

A failure is either a data error (`is_data_error`: a row Postgres or the driver
refuses for its content; the same batch can never be written) or anything else
(an outage: retry later). The writer owns one connection (the app role, in service
mode for the transaction); it keeps it after a data error (the transaction was
rolled back) and reconnects after any other failure.
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
    "cache_write_5m_tokens": "integer",
    "cache_write_1h_tokens": "integer",
    "service_tier": "text",
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
    " WHERE request_id IS NOT NULL ON CONFLICT DO NOTHING"
)
_MOVE_RECEIPTS = (
    "INSERT INTO recovea.receipts (chain_id, seq, request_id, customer_id, kid, ts, token)"
    f" SELECT chain_id, seq, request_id::uuid, customer_id::uuid, kid, {_CAST['ts']}, token"
    " FROM staging_events WHERE token IS NOT NULL AND request_id IS NOT NULL"
    " ON CONFLICT DO NOTHING"
)
# A staging row without a request_id is a signed checkpoint (`meter.checkpoints`).
_MOVE_CHECKPOINTS = (
    "INSERT INTO recovea.receipt_checkpoints (chain_id, seq, customer_id, kid, ts, token)"
    f" SELECT chain_id, seq, customer_id::uuid, kid, {_CAST['ts']}, token"
    " FROM staging_events WHERE request_id IS NULL AND token IS NOT NULL"
    " ON CONFLICT DO NOTHING"
)
_MOVE_PRICING_FACTS = (
    "INSERT INTO recovea.pricing_facts (request_id, ts, customer_id, cache_write_5m_tokens,"
    " cache_write_1h_tokens, service_tier)"
    f" SELECT request_id::uuid, {_CAST['ts']}, customer_id::uuid, cache_write_5m_tokens,"
    " cache_write_1h_tokens, service_tier FROM staging_events"
    " WHERE cache_write_5m_tokens > 0 OR cache_write_1h_tokens > 0 OR service_tier IS NOT NULL"
    " ON CONFLICT DO NOTHING"
)
_MARK_HOURS = (
    "INSERT INTO recovea.rollup_pending (hour, customer_id)"
    f" SELECT DISTINCT date_trunc('hour', {_CAST['ts']}), customer_id::uuid FROM staging_events"
    " WHERE customer_id IS NOT NULL AND request_id IS NOT NULL ON CONFLICT DO NOTHING"
)
_LOCK_WORKSPACES = (
    "SELECT 1 FROM recovea.workspaces WHERE customer_id IN"
    " (SELECT DISTINCT customer_id::uuid FROM staging_events) FOR KEY SHARE"
)
_DISCARD_ORPHANS = (
    "DELETE FROM staging_events s WHERE s.customer_id IS NULL OR NOT EXISTS"
    " (SELECT 1 FROM recovea.workspaces w WHERE w.customer_id = s.customer_id::uuid)"
)
# SQLSTATE classes of a row's content: data exception, integrity constraint violation,
# program limit exceeded (a value too large for an index, say).
_DATA_CLASSES = ("22", "23", "54")
_ADD_ROUTES = (
    "INSERT INTO recovea.routes (route_id, customer_id, provider, path, first_model)"
    " SELECT DISTINCT ON (route_id) route_id, customer_id::uuid, provider, route_path,"
    " baseline_model FROM staging_events WHERE route_id IS NOT NULL"
    " ORDER BY route_id, baseline_model IS NULL, ts"
    " ON CONFLICT (route_id) DO UPDATE SET first_model = EXCLUDED.first_model"
    " WHERE routes.first_model IS NULL AND EXCLUDED.first_model IS NOT NULL"
)


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` means the batch holds a row that can never be written (Postgres
    refused a value or a constraint, or asyncpg could not encode a value), as opposed
    to an outage that a later attempt may get past."""
    if isinstance(exc, asyncpg.PostgresError):
        return (exc.sqlstate or "")[:2] in _DATA_CLASSES
    # asyncpg's encoders: a str with a lone surrogate (UnicodeEncodeError), an int out
    # of its column's range (OverflowError), a value of the wrong type (TypeError),
    # invalid input (asyncpg's client-side DataError is a ValueError).
    return isinstance(exc, ValueError | TypeError | ArithmeticError)


def is_timeout(exc: BaseException) -> bool:
    """Whether `exc` is a write that ran out of time (the client's wait or the server's
    statement timeout): an outage, or a batch too large to write in time."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return True
    return isinstance(exc, TimeoutError)


class EventWriter:
    """One connection that writes whole batches, or raises."""

    def __init__(self, url: str, *, timeout_s: float = 10.0) -> None:
        self._url = url
        self._timeout = timeout_s
        self._conn: asyncpg.Connection | None = None

    async def write(self, batch: list[Item]) -> int:
        """Write a batch in one transaction; how many of its events were discarded
        because their workspace no longer exists. On any error nothing is written and
        the error is raised; the connection is dropped unless it was a data error."""
        try:
            return await asyncio.wait_for(self._write(batch), self._timeout)
        except BaseException as exc:
            if not is_data_error(exc) or self._conn is None or self._conn.is_closed():
                await self._drop_connection()
            raise

    async def answers(self) -> bool:
        """Whether the database answers a trivial query within a second, on a fresh
        connection (tells an outage from a batch that is too slow to write)."""
        try:
            conn = await connect(self._url, timeout_s=1.0)
        except Exception:
            return False
        try:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 1.0)
        except Exception:
            return False
        finally:
            conn.terminate()
        return True

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

    async def _write(self, batch: list[Item]) -> int:
        conn = await self._connection()
        async with conn.transaction():
            await conn.execute("SELECT set_config('recovea.service', 'on', true)")
            await conn.copy_records_to_table(
                "staging_events", records=batch, columns=STAGING_COLUMNS
            )
            await conn.execute(_LOCK_WORKSPACES)
            discarded = int((await conn.execute(_DISCARD_ORPHANS)).rsplit(" ", 1)[-1])
            await conn.execute(_ADD_ROUTES)
            await conn.execute(_MOVE_EVENTS)
            await conn.execute(_MOVE_PRICING_FACTS)
            await conn.execute(_MOVE_RECEIPTS)
            await conn.execute(_MOVE_CHECKPOINTS)
            await conn.execute(_MARK_HOURS)
        return discarded


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
