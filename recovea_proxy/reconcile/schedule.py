"""The poller as a background job of the gateway: every RECOVEA_RECONCILE_INTERVAL_S
(0: never; `recovea reconcile` still works), one replica at a time — a session
advisory lock of its own on an owner connection, so a long poll never holds up the
maintenance rounds, and the other replicas skip the round.

Supervised like maintenance (`meter.maintenance.retry_delay`): whatever a round raises
is logged by type and counted (`recovea_maintenance_runs{job="reconcile",
outcome="error"}`), and the next round comes sooner. Each day's outcome is counted in
`reconcile_runs_total{outcome}` by the poller. Requests never depend on any of it; the
report client is the schedule's own, opened and closed with it.
"""

from __future__ import annotations

import asyncio

import aiohttp
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.config import Settings
from recovea_proxy.meter.maintenance import retry_delay
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.reconcile.fetch import open_report_client
from recovea_proxy.reconcile.poller import Poller
from recovea_proxy.store.database import connect

LOCK_ID = 0x5245_434F_5645_4133  # "RECOVEA3"


class ReconcileSchedule:
    """Runs the poller every interval until closed."""

    def __init__(
        self, owner_url: str, settings: Settings, keyring: Keyring, metrics: GatewayMetrics
    ) -> None:
        self._url = owner_url
        self._settings = settings
        self._keyring = keyring
        self._metrics = metrics
        self._log = structlog.get_logger("recovea.reconcile")
        self._task: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Start the schedule (the first round runs after one interval)."""
        self._client = open_report_client(self._settings)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reconcile")

    async def close(self) -> None:
        """Stop the schedule (a round in progress is cancelled: a day is stored whole or
        not at all) and close the client."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._client is not None:
            await self._client.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(retry_delay(self._settings.reconcile_interval_s, failures))
            failures = 0 if await self.run_once() else failures + 1

    async def run_once(self) -> bool:
        """One round; every fault is logged and counted, never raised. Whether it went
        through (a round another replica ran counts as through)."""
        assert self._client is not None, "start() first"
        runs = self._metrics.reconcile_runs
        poller = Poller(
            self._client, self._keyring, self._settings, count=lambda o: runs.labels(o).inc()
        )
        try:
            conn = await connect(self._url, command_timeout_s=self._settings.reconcile_timeout_s)
            try:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_ID):
                    self._metrics.maintenance_runs.labels("reconcile", "skipped").inc()
                    return True
                try:
                    outcomes = await poller.run(conn)
                finally:
                    if not conn.is_closed():
                        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
            finally:
                try:
                    await conn.close(timeout=5)
                except Exception:
                    conn.terminate()
        except Exception as exc:
            self._metrics.maintenance_runs.labels("reconcile", "error").inc()
            self._log.warning("reconcile_failed", error=type(exc).__name__)
            return False
        self._metrics.maintenance_runs.labels("reconcile", "ok").inc()
        failed = sum(1 for outcome in outcomes if outcome.outcome != "ok")
        self._log.info("reconcile_done", days_polled=len(outcomes), days_failed=failed)
        return True
