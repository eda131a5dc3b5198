"""Shadow evaluation's rows (migration 0011): counts per rule and model pair, the
workspace's daily shadow spend, and disabling a rule the test found inferior. Every
statement runs in one short transaction scoped to the workspace (row-level
security), within a timeout, from a shadow worker: never on a request's path.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal

import asyncpg

from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL

#: what a failed statement raises (the worker keeps its counts in memory meanwhile)
STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class ShadowStore:
    """The shadow tables, through the gateway's pool."""

    __slots__ = ("_pool", "_timeout_s")

    def __init__(self, pool: asyncpg.Pool, timeout_s: float = 5.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s

    async def _run(self, workspace: str, sql: str, *args: object) -> list[asyncpg.Record]:
        async with asyncio.timeout(self._timeout_s):
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "SELECT set_config('recovea.customer_id', $1, true)", workspace
                )
                return list(await conn.fetch(sql, *args))

    async def pair(
        self, workspace: str, rule: str, routed: str, baseline: str
    ) -> tuple[int, int, str | None, bool]:
        """(n, disagreements, verdict, rule disabled or gone) as stored."""
        rows = await self._run(
            workspace,
            "SELECT r.disabled_at IS NOT NULL AS disabled, s.n, s.disagreements, s.verdict"
            " FROM recovea.route_rules r LEFT JOIN recovea.shadow_stats s"
            " ON s.rule_id = r.id AND s.routed_model = $2 AND s.baseline_model = $3"
            " WHERE r.id = $1",
            uuid.UUID(rule),
            routed,
            baseline,
        )
        if not rows:
            return 0, 0, None, True
        row = rows[0]
        return row["n"] or 0, row["disagreements"] or 0, row["verdict"], row["disabled"]

    async def add_counts(
        self, workspace: str, rule: str, routed: str, baseline: str, n: int, disagreements: int
    ) -> tuple[int, int, str | None] | None:
        """Add to a pair's counts; the totals every replica has added (None: the rule
        is gone)."""
        rows = await self._run(
            workspace,
            "INSERT INTO recovea.shadow_stats AS s (customer_id, rule_id, routed_model,"
            " baseline_model, n, disagreements)"
            " SELECT r.customer_id, r.id, $2, $3, $4, $5 FROM recovea.route_rules r"
            " WHERE r.id = $1"
            " ON CONFLICT (rule_id, routed_model, baseline_model) DO UPDATE"
            " SET n = s.n + EXCLUDED.n, disagreements = s.disagreements + EXCLUDED.disagreements,"
            " updated_at = now()"
            " RETURNING s.n, s.disagreements, s.verdict",
            uuid.UUID(rule),
            routed,
            baseline,
            n,
            disagreements,
        )
        if not rows:
            return None
        return rows[0]["n"], rows[0]["disagreements"], rows[0]["verdict"]

    async def set_verdict(
        self, workspace: str, rule: str, routed: str, baseline: str, verdict: str
    ) -> None:
        await self._run(
            workspace,
            "UPDATE recovea.shadow_stats SET verdict = $4, updated_at = now()"
            " WHERE rule_id = $1 AND routed_model = $2 AND baseline_model = $3"
            " AND verdict IS NULL",
            uuid.UUID(rule),
            routed,
            baseline,
            verdict,
        )

    async def disable_rule(self, workspace: str, rule: str, reason: str) -> list[str]:
        """Disable a rule (once) and send its workspace's keys the revocation notice, so
        every gateway reads the rules again without it; the key ids notified (none
        when it was already disabled or is gone)."""
        rows = await self._run(
            workspace,
            "WITH disabled AS (UPDATE recovea.route_rules SET disabled_at = now(),"
            " disabled_reason = $2 WHERE id = $1 AND disabled_at IS NULL"
            " RETURNING customer_id)"
            " SELECT k.id::text AS id, pg_notify($3, k.id::text) FROM recovea.rcv_keys k"
            " JOIN disabled d ON d.customer_id = k.customer_id",
            uuid.UUID(rule),
            reason,
            REVOCATIONS_CHANNEL,
        )
        return [row["id"] for row in rows]

    async def spent(self, workspace: str, day: date) -> Decimal:
        """The workspace's shadow spend on `day` (UTC)."""
        rows = await self._run(
            workspace,
            "SELECT usd FROM recovea.shadow_spend WHERE customer_id = $1::uuid AND day = $2",
            workspace,
            day,
        )
        return Decimal(rows[0]["usd"]) if rows else Decimal(0)

    async def add_spend(self, workspace: str, day: date, usd: Decimal) -> Decimal:
        """Add one shadow call's cost; the day's total across replicas."""
        rows = await self._run(
            workspace,
            "INSERT INTO recovea.shadow_spend AS s (customer_id, day, usd, calls)"
            " VALUES ($1::uuid, $2, $3, 1) ON CONFLICT (customer_id, day) DO UPDATE"
            " SET usd = s.usd + EXCLUDED.usd, calls = s.calls + 1 RETURNING s.usd",
            workspace,
            day,
            usd,
        )
        return Decimal(rows[0]["usd"])
