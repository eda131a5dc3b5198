"""The ledger's CLI commands: `recovea rollup`, `recovea prune`, `recovea workspace
delete`, `recovea receipt-key rotate`. Like the admin commands they connect to the
database as its owner (the embedded one when RECOVEA_DATABASE_URL is unset)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from recovea_proxy.admin import operations as ops
from recovea_proxy.admin.commands import emit, run
from recovea_proxy.auth.keyring import load_keyring
from recovea_proxy.config import Settings
from recovea_proxy.meter.receipt_keys import rotate_signing_key
from recovea_proxy.meter.retention import delete_workspace, prune
from recovea_proxy.meter.rollup import parse_moment, run_rollup
from recovea_proxy.store.service import ensure_partitions


def _moment(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_moment(raw)
    except ValueError:
        raise ops.OperationError(f"not an ISO 8601 date or time: {raw!r}") from None


async def rollup(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    since, until = _moment(args.since), _moment(args.until)
    if since is not None and until is not None and since >= until:
        raise ops.OperationError("--since must be before --until")
    created = await ensure_partitions(conn)
    report = await run_rollup(
        conn,
        timeout_s=settings.maintenance_timeout_s,
        max_tags=settings.rollup_max_tags,
        since=since,
        until=until,
    )
    failed = [failure.as_json() for failure in report.failed]
    result = {
        "hours": [hour.isoformat() for hour in report.hours],
        "workspace_hours": len(report.done),
        "failed": failed,
        "partitions_created": created,
    }
    emit(
        args,
        result,
        f"rolled up {len(report.done)} workspace hour(s) in {len(report.hours)} hour(s)",
    )
    _fail_if_any(failed, "rollup", "they stay pending for the next rollup")
    return result


async def prune_command(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    result = await prune(conn, timeout_s=settings.maintenance_timeout_s)
    emit(
        args,
        result,
        f"deleted {result['events_deleted']} event(s), {result['receipts_deleted']} receipt(s);"
        f" dropped {len(result['partitions_dropped'])} partition(s)",
    )
    _fail_if_any(result["failed"], "prune", "the next prune tries them again")
    return result


def _fail_if_any(failed: list[dict[str, str]], what: str, then: str) -> None:
    """Exit 1 (after the result was printed) when some workspaces failed."""
    if not failed:
        return
    named = [
        f"{item['workspace']}{' at ' + item['hour'] if 'hour' in item else ''} ({item['error']})"
        for item in failed[:5]
    ]
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    raise ops.OperationError(f"{what} failed for {', '.join(named)}{more}; {then}")


async def workspace_delete(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    workspace = str(ops.parse_id(args.workspace_id, "workspace id"))
    if not args.yes:
        raise ops.OperationError("deleting a workspace removes all its data: add --yes")
    counts = await delete_workspace(conn, workspace)
    if not counts:
        raise ops.OperationError(f"no workspace {workspace}")
    result = {"id": workspace, "deleted": counts}
    emit(args, result, f"deleted workspace {workspace}: {sum(counts.values())} row(s)")
    return result


async def receipt_key_rotate(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    keyring = await asyncio.to_thread(load_keyring, settings)
    kid = await rotate_signing_key(conn, keyring)
    result = {"kid": kid}
    emit(
        args,
        result,
        f"new receipt signing key {kid} (gateways switch to it within their maintenance interval)",
    )
    return result


def add_commands(commands: Any, workspace: Any) -> None:
    """Register the ledger commands (and `workspace delete` on the workspace group)."""
    roll = commands.add_parser("rollup", help="price usage into hourly rollups")
    roll.add_argument("--since", help="also recompute every hour from this ISO time")
    roll.add_argument("--until", help="end of --since's range (default: now)")
    roll.add_argument("--json", action="store_true")
    roll.set_defaults(run=lambda args: run(rollup, args))

    pruning = commands.add_parser("prune", help="apply retention")
    pruning.add_argument("--json", action="store_true")
    pruning.set_defaults(run=lambda args: run(prune_command, args))

    delete = workspace.add_parser("delete", help="delete a workspace and all its data")
    delete.add_argument("workspace_id")
    delete.add_argument("--yes", action="store_true", help="confirm")
    delete.add_argument("--json", action="store_true")
    delete.set_defaults(run=lambda args: run(workspace_delete, args))

    receipt_key = commands.add_parser("receipt-key", help="receipt signing keys").add_subparsers(
        dest="action", required=True
    )
    rotate = receipt_key.add_parser("rotate", help="retire the signing key and make a new one")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(run=lambda args: run(receipt_key_rotate, args))
