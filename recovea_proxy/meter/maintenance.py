"""The gateway's background maintenance: partitions ahead of time, the hourly
rollup and retention, on a schedule. One replica at a time does each run (a
session advisory lock on the owner connection; the others skip that round).
Every replica also picks up a rotated receipt signing key each round.
Faults are logged and counted, never raised: requests do not depend on it.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.meter.receipt_keys import active_signing_key
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.meter.retention import prune
from recovea_proxy.meter.rollup import run_rollup
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.store.database import connect
from recovea_proxy.store.service import ensure_partitions

LOCK_ID = 0x5245_434F_5645_4132  # "RECOVEA2"
_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def run_maintenance(conn: asyncpg.Connection, *, prune_too: bool) -> dict[str, object]:
    """One round, if no other replica holds the lock; what it did (empty if skipped)."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
        return {}
    try:
        done: dict[str, object] = {"partitions_created": await ensure_partitions(conn)}
        done["hours_rolled_up"] = len(await run_rollup(conn))
        if prune_too:
            done["pruned"] = await prune(conn)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)


class Maintenance:
    """Runs `run_maintenance` every `interval_s` (pruning at most hourly) until closed."""

    def __init__(
        self,
        owner_url: str,
        metrics: GatewayMetrics,
        *,
        interval_s: float,
        signer: ReceiptSigner,
        pool: asyncpg.Pool,
        keyring: Keyring,
    ) -> None:
        self._url = owner_url
        self._signer = signer
        self._pool = pool
        self._keyring = keyring
        self._interval = interval_s
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
        while True:
            await asyncio.sleep(self._interval)
            await self.run_once()

    async def refresh_signing_key(self) -> None:
        """Pick up a rotated receipt key (every replica, every round)."""
        async with self._pool.acquire() as conn:
            active = await conn.fetchval(
                "SELECT kid FROM recovea.receipt_keys WHERE retired_at IS NULL"
            )
            if active is not None and active != self._signer.kid:
                key = await active_signing_key(conn, self._keyring)
                self._signer.use(key)
                self._log.info("receipt_key_changed", kid=key.kid)

    async def run_once(self) -> None:
        """One round; faults are logged and counted."""
        try:
            await self.refresh_signing_key()
        except _ERRORS as exc:
            self._log.warning("receipt_key_refresh_failed", error=type(exc).__name__)
        prune_too = time.monotonic() - self._last_prune >= 3600
        try:
            conn = await connect(self._url)
            try:
                done = await run_maintenance(conn, prune_too=prune_too)
            finally:
                await conn.close()
        except _ERRORS as exc:
            self._metrics.maintenance_runs.labels("maintenance", "error").inc()
            self._log.warning("maintenance_failed", error=type(exc).__name__)
            return
        if not done:
            self._metrics.maintenance_runs.labels("maintenance", "skipped").inc()
            return
        if prune_too:
            self._last_prune = time.monotonic()
        self._metrics.maintenance_runs.labels("maintenance", "ok").inc()
        self._log.info("maintenance_done", **done)
