"""Reading the limits from Postgres: every workspace's at once, or one workspace's.

The gateway reads across workspaces in service mode (the second RLS policy of
`recovea.rate_limits`, see migration 0002); request handlers never do. A change is
announced on `LIMITS_CHANNEL` with the workspace id as payload.
"""

from __future__ import annotations

import asyncpg

from recovea_proxy.guards.limit_rules import LimitRule
from recovea_proxy.store.service import service_mode

LIMITS_CHANNEL = "recovea_limits_changed"

_SELECT = (
    "SELECT id, customer_id, scope, coalesce(project_id, team_id, rcv_key_id) AS target,"
    " model, rpm, tpm, concurrency, fail_closed FROM recovea.rate_limits"
)


async def load_rules(
    conn: asyncpg.Connection, workspace_id: str | None = None
) -> dict[str, tuple[LimitRule, ...]]:
    """The limits of every workspace (or of one), by workspace id; a workspace with
    none is absent (or, asked for by id, maps to an empty tuple)."""
    found: dict[str, list[LimitRule]] = {}
    if workspace_id is not None:
        found[workspace_id] = []
    async with conn.transaction(readonly=True):
        await service_mode(conn)
        if workspace_id is None:
            rows = await conn.fetch(_SELECT + " ORDER BY customer_id, id")
        else:
            rows = await conn.fetch(
                _SELECT + " WHERE customer_id = $1::uuid ORDER BY id", workspace_id
            )
    for row in rows:
        rule = _rule(row)
        found.setdefault(rule.workspace_id, []).append(rule)
    return {workspace: tuple(rules) for workspace, rules in found.items()}


def _rule(row: asyncpg.Record) -> LimitRule:
    target = row["target"]
    return LimitRule(
        id=str(row["id"]),
        workspace_id=str(row["customer_id"]),
        scope=row["scope"],
        target=None if target is None else str(target),
        model=row["model"] or None,
        rpm=row["rpm"],
        tpm=row["tpm"],
        concurrency=row["concurrency"],
        fail_closed=row["fail_closed"],
    )
