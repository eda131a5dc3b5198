"""The reconciliation commands of the `recovea` CLI (on the owner connection, like
every admin command):

| `recovea report-key set --workspace ID --provider P`    | store a report key read from stdin |
| `recovea report-key list --workspace ID`                | last four characters only          |
| `recovea report-key delete --workspace ID --provider P` | remove one                         |
| `recovea reconcile [--workspace ID] [--since DATE] [--json]` | roll up, poll, compare, print |

`reconcile` first rolls up the ledger's pending hours (so costs are current), then
polls the days due (every day from `--since` again, when given) and prints the
comparison of each workspace polled (or of `--workspace`) from `--since` (default:
the last RECOVEA_RECONCILE_DAYS days) through today. It exits 1 when a day could not
be polled, after printing everything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from recovea_proxy.admin.operations import OperationError, parse_id
from recovea_proxy.auth.keyring import load_keyring
from recovea_proxy.config import Settings
from recovea_proxy.meter.rollup import parse_moment, run_rollup
from recovea_proxy.observability.logging import configure_logging
from recovea_proxy.reconcile.compare import reconciliation
from recovea_proxy.reconcile.fetch import open_report_client
from recovea_proxy.reconcile.poller import Poller
from recovea_proxy.reconcile.report_keys import (
    REPORT_PROVIDERS,
    delete_report_key,
    list_report_keys,
    set_report_key,
)

#: how far back `--since` may go (each day is its own calls to each provider)
MAX_SINCE_DAYS = 366
Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(orjson.dumps(result).decode() if args.json else text)


async def report_key_set(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    secret = sys.stdin.readline().strip()
    keyring = await asyncio.to_thread(load_keyring, settings)
    stored = await set_report_key(conn, keyring, args.workspace, args.provider, secret)
    _emit(
        args,
        stored,
        f"stored {args.provider} report key ****{stored['last_four']}"
        f" for workspace {stored['workspace_id']}",
    )
    return {}


async def report_key_list(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    keys = await list_report_keys(conn, args.workspace)
    lines = [f"{k['provider']}: ****{k['last_four']} (since {k['created_at']})" for k in keys]
    _emit(args, {"data": keys}, "\n".join(lines) or "no report keys")
    return {}


async def report_key_delete(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    if not await delete_report_key(conn, args.workspace, args.provider):
        raise OperationError(f"no {args.provider} report key for workspace {args.workspace}")
    _emit(
        args,
        {"provider": args.provider, "deleted": True},
        f"removed the {args.provider} report key",
    )
    return {}


def _since(raw: str | None) -> date | None:
    if raw is None:
        return None
    try:
        day = parse_moment(raw).astimezone(UTC).date()
    except ValueError:
        raise OperationError(f"--since must be an ISO 8601 date, not {raw[:40]!r}") from None
    today = datetime.now(UTC).date()
    if day > today:
        raise OperationError("--since must not be in the future")
    if (today - day).days >= MAX_SINCE_DAYS:
        raise OperationError(f"--since may be at most {MAX_SINCE_DAYS} days ago")
    return day


def _count(side: dict[str, Any], name: str) -> str:
    value = side[name]
    return "-" if value is None else str(value)


def _table(result: dict[str, Any]) -> list[str]:
    lines = [f"workspace {result['workspace_id']} ({result['from']} to {result['to']}):"]
    if not result["data"]:
        lines.append("  nothing to compare (no report key, or no day polled yet)")
    for row in result["data"]:
        p, g = row["provider_reported"], row["ledger"]
        lines.append(
            f"  {row['day']} {row['provider']:<9} {row['model']:<28} {row['verdict']:<17}"
            f" requests {_count(p, 'requests')}/{_count(g, 'requests')}"
            f" input {p['input_tokens']}/{g['input_tokens']}"
            f" cached {p['cached_tokens']}/{g['cached_tokens']}"
            f" output {p['output_tokens']}/{g['output_tokens']}"
            f" cost {_count(p, 'cost_usd')}/{_count(g, 'cost_usd')} USD"
            f"{'' if row['settled'] else ' (not settled)'}"
        )
    for poll in result["polls"]:
        if poll["outcome"] != "ok":
            lines.append(
                f"  {poll['day']} {poll['provider']}: not polled ({poll['reason']},"
                f" {poll['attempts']} attempt(s))"
            )
    return lines


async def reconcile(
    conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
) -> dict[str, Any]:
    workspace = parse_id(args.workspace, "workspace id") if args.workspace else None
    since = _since(args.since)
    # the poller's log lines (redacted) go to stderr: stdout is the answer
    configure_logging(settings.log_format, settings.log_level, to_stderr=True)
    keyring = await asyncio.to_thread(load_keyring, settings)
    await run_rollup(
        conn, timeout_s=settings.maintenance_timeout_s, max_tags=settings.rollup_max_tags
    )
    async with open_report_client(settings) as client:
        outcomes = await Poller(client, keyring, settings).run(
            conn, workspace=workspace, since=since
        )
    today = datetime.now(UTC).date()
    first = since or today - timedelta(days=settings.reconcile_days - 1)
    shown = [workspace] if workspace else sorted({o.workspace_id for o in outcomes})
    results = [
        await reconciliation(
            conn,
            parse_id(str(each), "workspace id"),
            first,
            today + timedelta(days=1),
            tolerance_pct=settings.reconcile_tolerance_pct,
        )
        for each in shown
    ]
    failed = [o for o in outcomes if o.outcome != "ok"]
    lines = [
        f"polled {len(outcomes)} day(s) of {len({(o.workspace_id, o.provider) for o in outcomes})}"
        f" report key(s); {len(failed)} failed"
    ]
    for result in results:
        lines += _table(result)
    _emit(
        args, {"polled": [o.as_json() for o in outcomes], "workspaces": results}, "\n".join(lines)
    )
    if failed:
        reasons = ", ".join(sorted({o.reason or "" for o in failed}))
        raise OperationError(f"{len(failed)} day(s) could not be polled ({reasons})")
    return {}


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea report-key …` and `recovea reconcile` on the CLI's subparsers."""
    report_key = commands.add_parser(
        "report-key", help="the providers' usage-report keys"
    ).add_subparsers(dest="action", required=True)
    rs = report_key.add_parser("set", help="store a report key read from stdin")
    rs.add_argument("--workspace", required=True, help="workspace id")
    rs.add_argument("--provider", required=True, choices=(*REPORT_PROVIDERS, "openrouter"))
    rs.add_argument("--json", action="store_true", help="print one JSON object")
    rs.set_defaults(run=lambda args: run(report_key_set, args))
    rl = report_key.add_parser("list", help="a workspace's report keys (last four only)")
    rl.add_argument("--workspace", required=True, help="workspace id")
    rl.add_argument("--json", action="store_true", help="print one JSON object")
    rl.set_defaults(run=lambda args: run(report_key_list, args))
    rd = report_key.add_parser("delete", help="remove a report key")
    rd.add_argument("--workspace", required=True, help="workspace id")
    rd.add_argument("--provider", required=True, choices=REPORT_PROVIDERS)
    rd.add_argument("--json", action="store_true", help="print one JSON object")
    rd.set_defaults(run=lambda args: run(report_key_delete, args))

    rc = commands.add_parser(
        "reconcile", help="poll the providers' usage reports and compare them with the ledger"
    )
    rc.add_argument("--workspace", help="only this workspace (default: every report key)")
    rc.add_argument("--since", help="poll again and compare from this UTC date (YYYY-MM-DD)")
    rc.add_argument("--json", action="store_true", help="print one JSON object")
    rc.set_defaults(run=lambda args: run(reconcile, args))
