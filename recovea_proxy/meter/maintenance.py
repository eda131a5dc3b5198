"""The gateway's background maintenance: partitions ahead of time, the hourly
rollup and retention, and the reclaiming of expired spend-cap leases, on a
schedule. One replica at a time does each run (a session advisory lock on the owner
connection; the others skip that round).
Every replica also picks up a rotated receipt signing key each round.

The schedule is supervised: it never dies of a fault. Whatever a round raises —
an outage, a protocol error from a broken connection (asyncpg's
`InternalClientError` lies outside its `PostgresError`/`InterfaceError` trees), a
bug — is logged with its type and counted in
`recovea_maintenance_runs{job, outcome="error"}`, and the next round comes sooner:
after a failure the wait starts at `RETRY_FIRST_S` and doubles with each failure in
a row, up to the interval. Within a round, a workspace whose rollup or pruning fails
is logged and counted (`job="rollup"` / `"prune"`) and the others go on. Requests
never depend on any of it.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.meter.receipt_keys import PublishedKeys, active_signing_key
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.meter.retention import prune
from recovea_proxy.meter.rollup import RollupReport, run_rollup
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.store.database import connect
from recovea_proxy.store.service import ensure_partitions

LOCK_ID = 0x5245_434F_5645_4132  # "RECOVEA2"
#: the wait before the first retry of a failed round (doubling up to the interval)
RETRY_FIRST_S = 1.0
#: faults of the database or the network: expected, logged without a traceback
_OUTAGES = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


@dataclass(frozen=True)
class Round:
    """What one round did."""

    partitions_created: list[str]
    rollup: RollupReport
    pruned: dict[str, Any] | None  # None when this round did not prune
    #: expired spend-cap leases reclaimed (of processes that died holding them)
    leases_reclaimed: int = 0


async def run_maintenance(
    conn: asyncpg.Connection, *, prune_too: bool, timeout_s: float, max_tags: int
) -> Round | None:
    """One round, if no other replica holds the lock; what it did (None if skipped)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
        return None
    try:
        created = await ensure_partitions(conn)
        rollup = await run_rollup(conn, timeout_s=timeout_s, max_tags=max_tags)
        pruned = await prune(conn, timeout_s=timeout_s) if prune_too else None
        reclaimed = await conn.fetchval("SELECT recovea.spend_cap_reclaim()")
        return Round(created, rollup, pruned, int(reclaimed or 0))
    finally:
        if not conn.is_closed():  # a lost connection took its lock with it
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


def retry_delay(interval_s: float, failures: int) -> float:
    """The wait before the next round after `failures` failed rounds in a row."""
    if failures == 0:
        return interval_s
    return min(interval_s, RETRY_FIRST_S * 2.0 ** min(failures - 1, 30))


class Maintenance:
    """Runs `run_maintenance` every `interval_s` (pruning at most hourly) until closed."""

    def __init__(
        self,
        owner_url: str,
        metrics: GatewayMetrics,
        *,
        interval_s: float,
        timeout_s: float,
        max_tags: int,
        signer: ReceiptSigner,
        pool: asyncpg.Pool,
        keyring: Keyring,
        published: PublishedKeys | None = None,
    ) -> None:
        self._url = owner_url
        self._published = published
        self._signer = signer
        self._pool = pool
        self._keyring = keyring
        self._interval = interval_s
        self._timeout = timeout_s
        self._max_tags = max_tags
        self._metrics = metrics
        self._log = structlog.get_logger("recovea.maintenance")
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    def start(self) -> None:
        """Start the schedule (the first round runs after one interval)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="maintenance")

    async def close(self) -> None:
        """Stop the schedule (a round in progress is cancelled; it is idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(retry_delay(self._interval, failures))
            failures = 0 if await self.run_once() else failures + 1

    async def refresh_signing_key(self) -> None:
        """Pick up a rotated receipt key and the published keys document (every
        replica, every round; the document first, so it names every key this
        replica signs with)."""
        if self._published is not None:
            await self._published.reload()
        async with self._pool.acquire() as conn:
            active = await conn.fetchval(
                "SELECT kid FROM recovea.receipt_keys WHERE retired_at IS NULL"
            )
            if active is not None and active != self._signer.kid:
                key = await active_signing_key(conn, self._keyring)
                self._signer.use(key)
                self._log.info("receipt_key_changed", kid=key.kid)

    async def run_once(self) -> bool:
        """One round; every fault is logged and counted, never raised. Whether the
        round went through (a skipped round did)."""
        refreshed = True
        try:
            await self.refresh_signing_key()
        except Exception as exc:
            refreshed = False
            self._failed("receipt_key", "receipt_key_refresh_failed", exc)
        prune_too = time.monotonic() - self._last_prune >= 3600
        try:
            done = await self._round(prune_too)
        except Exception as exc:
            self._failed("maintenance", "maintenance_failed", exc)
            return False
        if done is None:
            self._metrics.maintenance_runs.labels("maintenance", "skipped").inc()
            return refreshed
        if prune_too:
            self._last_prune = time.monotonic()
        self._metrics.maintenance_runs.labels("maintenance", "ok").inc()
        self._report(done)
        return refreshed

    async def _round(self, prune_too: bool) -> Round | None:
        # A server that stops answering cannot hold the schedule: every query of the
        # round is bounded on this side too, a little past the server's own timeout.
        conn = await connect(self._url, command_timeout_s=self._timeout + 5)
        try:
            return await run_maintenance(
                conn, prune_too=prune_too, timeout_s=self._timeout, max_tags=self._max_tags
            )
        finally:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()  # broken already: nothing to say goodbye to

    def _report(self, done: Round) -> None:
        """Count and log a round's work, and each workspace that failed in it."""
        runs = self._metrics.maintenance_runs
        runs.labels("rollup", "ok").inc(len(done.rollup.done))
        self._workspace_failures("rollup", [failure.as_json() for failure in done.rollup.failed])
        summary: dict[str, Any] = {
            "partitions_created": done.partitions_created,
            "hours_rolled_up": len(done.rollup.hours),
            "workspace_hours_rolled_up": len(done.rollup.done),
            "rollups_failed": len(done.rollup.failed),
            "cap_leases_reclaimed": done.leases_reclaimed,
        }
        if done.pruned is not None:
            runs.labels("prune", "ok").inc(done.pruned["workspaces_pruned"])
            self._workspace_failures("prune", done.pruned["failed"])
            summary["pruned"] = {k: v for k, v in done.pruned.items() if k != "failed"}
        self._log.info("maintenance_done", **summary)

    def _workspace_failures(self, job: str, failed: list[dict[str, str]]) -> None:
        for failure in failed:
            self._metrics.maintenance_runs.labels(job, "error").inc()
            self._log.warning(f"{job}_failed", **failure)

    def _failed(self, job: str, event: str, exc: Exception) -> None:
        """Count and log a fault; an unexpected one with its traceback (a string field,
        so the log's redaction step sees it like any other value)."""
        self._metrics.maintenance_runs.labels(job, "error").inc()
        if isinstance(exc, _OUTAGES):
            self._log.warning(event, error=type(exc).__name__)
        else:
            self._log.error(
                event,
                error=type(exc).__name__,
                traceback="".join(traceback.format_exception(exc)),
            )
