"""The poller: for each workspace with a report key, each provider and each day, the
provider's figures fetched and stored, each (workspace, provider, day) on its own.

Which days: the last `RECOVEA_RECONCILE_DAYS` UTC days up to today, less those already
settled — polled successfully at least `RECOVEA_RECONCILE_SETTLE_HOURS` after the day
ended, when the provider's late figures have come in. An unsettled day is polled again
every run; `recovea reconcile --since DATE` polls every day from DATE again.

Idempotent: a day's figures are replaced whole, in one transaction with its status
(`recovea.reconcile_days`), so polling a day twice stores it once.

Isolated and retried: a day that fails is retried up to `RECOVEA_RECONCILE_ATTEMPTS`
times in all, waiting `RECOVEA_RECONCILE_RETRY_BASE_S` doubled each time, or the
provider's `retry-after` on a 429 (at most `RECOVEA_RECONCILE_RETRY_AFTER_MAX_S`); a
revoked key (401/403) or a key that cannot be opened is not retried. A day that still
fails is set aside — its status says `failed` and why, its earlier figures stay — and
the next day, provider and workspace go on. Each outcome is counted
(`reconcile_runs_total{outcome="ok"|"retried"|"failed"}`) and each failure logged with
its reason; never the key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.config import Settings
from recovea_proxy.reconcile import anthropic_report, openai_report
from recovea_proxy.reconcile.fetch import ReportFailure, get_page
from recovea_proxy.reconcile.figures import DayFigures, Malformed, day_bounds, page_items
from recovea_proxy.reconcile.opening import KeyUnavailable, open_report_key
from recovea_proxy.reconcile.report_keys import workspaces_with_report_keys

#: the most pages one report of one day may run to
MAX_PAGES = 1000
_FETCHERS = {"openai": openai_report.fetch_day, "anthropic": anthropic_report.fetch_day}
_INSERT = (
    "INSERT INTO recovea.provider_usage (customer_id, provider, day, model, api_key_id,"
    " project_id, requests, input_tokens, cached_tokens, output_tokens, cost_usd)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
_STATUS = (
    "INSERT INTO recovea.reconcile_days AS d (customer_id, provider, day, outcome, reason,"
    " attempts, settled, polled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now())"
    " ON CONFLICT (customer_id, provider, day) DO UPDATE SET outcome = EXCLUDED.outcome,"
    " reason = EXCLUDED.reason, attempts = EXCLUDED.attempts, settled = EXCLUDED.settled,"
    " polled_at = EXCLUDED.polled_at"
)
_log = structlog.get_logger("recovea.reconcile")


@dataclass(frozen=True, slots=True)
class DayOutcome:
    """How one (workspace, provider, day) went in this run."""

    workspace_id: str
    provider: str
    day: date
    outcome: str  # ok | failed
    reason: str | None
    attempts: int
    rows: int

    def as_json(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "provider": self.provider,
            "day": self.day.isoformat(),
            "outcome": self.outcome,
            "reason": self.reason,
            "attempts": self.attempts,
            "rows": self.rows,
        }


class Poller:
    """Polls the providers' usage reports with the workspaces' report keys."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        keyring: Keyring,
        settings: Settings,
        *,
        count: Callable[[str], None] = lambda _outcome: None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._keyring = keyring
        self._settings = settings
        self._count = count
        self._sleep = sleep

    async def run(
        self,
        conn: asyncpg.Connection,
        *,
        workspace: uuid.UUID | None = None,
        since: date | None = None,
    ) -> list[DayOutcome]:
        """Poll every day due (every day from `since`, when given) of every report key
        (of `workspace`, when given); what each day's poll did."""
        today = datetime.now(UTC).date()
        outcomes: list[DayOutcome] = []
        for customer_id, provider in await workspaces_with_report_keys(conn, workspace):
            days = await self._due(conn, customer_id, provider, today, since)
            if days:
                outcomes += await self._poll_key(conn, customer_id, provider, days)
        return outcomes

    async def _due(
        self,
        conn: asyncpg.Connection,
        customer_id: uuid.UUID,
        provider: str,
        today: date,
        since: date | None,
    ) -> list[date]:
        if since is not None:
            return [since + timedelta(days=n) for n in range((today - since).days + 1)]
        first = today - timedelta(days=max(self._settings.reconcile_days, 1) - 1)
        settled = {
            row["day"]
            for row in await conn.fetch(
                "SELECT day FROM recovea.reconcile_days WHERE customer_id = $1"
                " AND provider = $2 AND day >= $3 AND outcome = 'ok' AND settled",
                customer_id,
                provider,
                first,
            )
        }
        days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
        return [day for day in days if day not in settled]

    async def _poll_key(
        self, conn: asyncpg.Connection, customer_id: uuid.UUID, provider: str, days: list[date]
    ) -> list[DayOutcome]:
        try:
            secret = await open_report_key(conn, self._keyring, customer_id, provider)
        except KeyUnavailable as exc:
            return [
                await self._failed(conn, customer_id, provider, day, exc.reason, 1) for day in days
            ]
        try:
            key = secret.decode()
            return [await self._poll_day(conn, customer_id, provider, day, key) for day in days]
        finally:
            secret[:] = bytes(len(secret))

    async def _poll_day(
        self, conn: asyncpg.Connection, customer_id: uuid.UUID, provider: str, day: date, key: str
    ) -> DayOutcome:
        base = self._settings.upstream_for(provider)
        attempts = max(self._settings.reconcile_attempts, 1)
        for attempt in range(1, attempts + 1):
            figures = DayFigures(day)
            try:
                await _FETCHERS[provider](self._pages, base, key, figures)
            except ReportFailure as exc:
                failure = exc
            except Malformed:
                failure = ReportFailure("malformed")
            else:
                return await self._store(conn, customer_id, provider, figures, attempt)
            if not failure.retryable or attempt == attempts:
                return await self._failed(conn, customer_id, provider, day, failure.reason, attempt)
            self._count("retried")
            await self._sleep(self._delay(attempt, failure))
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, failure: ReportFailure) -> float:
        if failure.retry_after is not None:
            return min(failure.retry_after, self._settings.reconcile_retry_after_max_s)
        return float(self._settings.reconcile_retry_base_s * 2 ** (attempt - 1))

    async def _pages(
        self, url: str, params: list[tuple[str, str]], headers: dict[str, str]
    ) -> list[Any]:
        """Every bucket of a report, page after page."""
        buckets: list[Any] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            query = params if cursor is None else [*params, ("page", cursor)]
            page = await get_page(self._client, url, query, headers)
            items, more, cursor = page_items(page)
            buckets += items
            if not more:
                return buckets
            if cursor is None or cursor in seen:
                raise Malformed("the pages go round in a circle")
            seen.add(cursor)
        raise Malformed("too many pages")

    async def _store(
        self,
        conn: asyncpg.Connection,
        customer_id: uuid.UUID,
        provider: str,
        figures: DayFigures,
        attempts: int,
    ) -> DayOutcome:
        """Replace the day's figures and record it polled, in one transaction."""
        _, end = day_bounds(figures.day)
        settled = datetime.now(UTC) >= end + timedelta(hours=self._settings.reconcile_settle_hours)
        records = [
            (
                customer_id,
                provider,
                figures.day,
                *key,
                figure.requests,
                figure.input_tokens,
                figure.cached_tokens,
                figure.output_tokens,
                figure.cost_usd,
            )
            for key, figure in sorted(figures.rows.items())
        ]
        async with conn.transaction():
            await _scope(conn, customer_id)
            await conn.execute(
                "DELETE FROM recovea.provider_usage WHERE customer_id = $1 AND provider = $2"
                " AND day = $3",
                customer_id,
                provider,
                figures.day,
            )
            if records:
                await conn.executemany(_INSERT, records)
            await conn.execute(
                _STATUS, customer_id, provider, figures.day, "ok", None, attempts, settled
            )
        self._count("ok")
        return DayOutcome(
            str(customer_id), provider, figures.day, "ok", None, attempts, len(records)
        )

    async def _failed(
        self,
        conn: asyncpg.Connection,
        customer_id: uuid.UUID,
        provider: str,
        day: date,
        reason: str,
        attempts: int,
    ) -> DayOutcome:
        """Set the day aside with its reason (its earlier figures stay)."""
        async with conn.transaction():
            await _scope(conn, customer_id)
            await conn.execute(
                _STATUS, customer_id, provider, day, "failed", reason, attempts, False
            )
        self._count("failed")
        _log.warning(
            "reconcile_day_failed",
            workspace_id=str(customer_id),
            provider=provider,
            day=day.isoformat(),
            reason=reason,
            attempts=attempts,
        )
        return DayOutcome(str(customer_id), provider, day, "failed", reason, attempts, 0)


async def _scope(conn: asyncpg.Connection, customer_id: uuid.UUID) -> None:
    await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", str(customer_id))
