"""Retention: how long a workspace's ledger is kept, and deleting it on request.

A workspace keeps its `request_events`, their `pricing_facts`, its `receipts` and
their `receipt_checkpoints` for its plan's period (free 30 days, pro 365) unless
`workspaces.retention_days` overrides it. Pruning deletes each workspace's older rows
(one transaction per workspace, under the maintenance statement timeout; a workspace
that fails is reported and tried again at the next prune), then drops whole day
partitions that every workspace's retention has passed. Rollups are aggregates
without per-request facts and are kept (a deleted workspace loses them too).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL
from recovea_proxy.meter.isolation import (
    Failure,
    connection_lost,
    maintenance_transaction,
)
from recovea_proxy.store.service import service_mode

PLAN_RETENTION_DAYS = {"free": 30, "pro": 365}
#: tables holding a workspace's rows that do not go with the workspace row by cascade
_LEDGER_TABLES = (
    "request_events",
    "pricing_facts",
    "receipts",
    "receipt_checkpoints",
    "usage_rollups",
    "model_prices",
    "routes",
)


async def prune(
    conn: asyncpg.Connection, *, timeout_s: float, now: datetime | None = None
) -> dict[str, Any]:
    """Apply every workspace's retention, each in its own transaction (one workspace's
    failure does not stop the others'); what was deleted, and which workspaces failed."""
    now = now or datetime.now(UTC)
    deleted_events = deleted_receipts = 0
    async with conn.transaction():
        await service_mode(conn)
        workspaces = await conn.fetch(
            "SELECT customer_id, plan, retention_days FROM recovea.workspaces"
            " ORDER BY customer_id"
        )
    longest = 0
    failed: list[Failure] = []
    for row in workspaces:
        days = row["retention_days"] or PLAN_RETENTION_DAYS[row["plan"]]
        longest = max(longest, days)
        try:
            events, receipts = await _prune_workspace(
                conn, row["customer_id"], now - timedelta(days=days), timeout_s
            )
        except Exception as exc:
            if connection_lost(conn):
                raise
            failed.append(Failure(row["customer_id"], type(exc).__name__))
            continue
        deleted_events += events
        deleted_receipts += receipts
    dropped: list[str] = []
    if longest:
        # Whole days past every workspace's period hold only rows each would delete.
        async with maintenance_transaction(conn, timeout_s):
            dropped = [
                row[0]
                for row in await conn.fetch(
                    "SELECT recovea.drop_event_partitions_before($1)",
                    now - timedelta(days=longest),
                )
            ]
    return {
        "events_deleted": deleted_events,
        "receipts_deleted": deleted_receipts,
        "partitions_dropped": dropped,
        "workspaces_pruned": len(workspaces) - len(failed),
        "failed": [failure.as_json() for failure in failed],
    }


async def _prune_workspace(
    conn: asyncpg.Connection, workspace: uuid.UUID, cutoff: datetime, timeout_s: float
) -> tuple[int, int]:
    """Delete one workspace's events (with their pricing facts) and receipts older than
    `cutoff`; how many events and receipts."""
    async with maintenance_transaction(conn, timeout_s):
        events = _count(
            await conn.execute(
                "DELETE FROM recovea.request_events WHERE customer_id = $1 AND ts < $2",
                workspace,
                cutoff,
            )
        )
        await conn.execute(
            "DELETE FROM recovea.pricing_facts WHERE customer_id = $1 AND ts < $2",
            workspace,
            cutoff,
        )
        receipts = _count(
            await conn.execute(
                "DELETE FROM recovea.receipts WHERE customer_id = $1 AND ts < $2",
                workspace,
                cutoff,
            )
        )
        # A checkpoint is signed after every receipt it covers: one older than the
        # cutoff covers only receipts deleted above.
        await conn.execute(
            "DELETE FROM recovea.receipt_checkpoints WHERE customer_id = $1 AND ts < $2",
            workspace,
            cutoff,
        )
    return events, receipts


async def delete_workspace(conn: asyncpg.Connection, workspace_id: str) -> dict[str, int]:
    """Delete a workspace and everything it owns; row counts by table. Its keys stop
    working at once in every gateway (revocation notices)."""
    counts: dict[str, int] = {}
    async with conn.transaction():
        await service_mode(conn)
        # FOR UPDATE: a drainer batch holding this workspace (FOR KEY SHARE) commits
        # first and its rows are deleted below; one that comes later finds it gone.
        exists = await conn.fetchval(
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1::uuid FOR UPDATE",
            workspace_id,
        )
        if not exists:
            return {}
        await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", workspace_id)
        for key_id in await conn.fetch(
            "SELECT id FROM recovea.rcv_keys WHERE customer_id = $1::uuid", workspace_id
        ):
            await conn.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, str(key_id[0]))
        for table in _LEDGER_TABLES:
            counts[table] = _count(
                await conn.execute(
                    f"DELETE FROM recovea.{table} WHERE customer_id = $1::uuid", workspace_id
                )
            )
        for table in ("provider_keys", "rcv_keys", "projects", "teams"):
            counts[table] = _count(
                await conn.execute(
                    f"DELETE FROM recovea.{table} WHERE customer_id = $1::uuid", workspace_id
                )
            )
        counts["workspaces"] = _count(
            await conn.execute(
                "DELETE FROM recovea.workspaces WHERE customer_id = $1::uuid", workspace_id
            )
        )
    return counts


def _count(status: str) -> int:
    """Rows affected, from a command tag like `DELETE 3`."""
    return int(status.rsplit(" ", 1)[-1])
