"""This process's copy of every workspace's limits, kept current without a query per
request.

At start the book reads every limit (one query). After that:

| what happens                                 | the book                                     |
| a limit is set or cleared (any process, CLI) | hears `recovea_limits_changed` (LISTEN) and  |
|                                              | reads that workspace's limits again          |
| this process's admin API changed one         | reads them before the API answers            |
| every `RECOVEA_LIMITS_REFRESH_S` (60 s)      | reads every limit again (and reconnects the  |
|                                              | listener if it was lost): the bound on       |
|                                              | staleness while notices cannot arrive        |

When the database cannot be read, the book keeps what it had (a limit is never
dropped because the store is down) and counts the failed read in
`gateway_fail_open_total{layer="ratelimit",reason="config_unavailable"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from recovea_proxy.guards.limit_rules import LimitRule
from recovea_proxy.guards.limit_store import LIMITS_CHANNEL, load_rules

_log = structlog.get_logger("recovea.limits")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

#: (workspace id or None for all, the limits read) → the limiter installs them
Install = Callable[[str | None, dict[str, tuple[LimitRule, ...]]], None]


class LimitBook:
    """Reads limits into the limiter, and again whenever they change."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        install: Install,
        *,
        refresh_s: float,
        on_failure: Callable[[], None],
        timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._install = install
        self._refresh = refresh_s
        self._on_failure = on_failure
        self._timeout = timeout_s
        self._listen_url = ""
        self._listener: asyncpg.Connection | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self._closing = False

    async def start(self, listen_url: str) -> None:
        """Listen, read every limit, then keep them current in the background."""
        self._listen_url = listen_url
        await self._listen()
        await self.reload()
        self._loop_task = asyncio.create_task(self._refresh_forever(), name="recovea-limits")

    async def close(self) -> None:
        self._closing = True
        tasks: list[asyncio.Task[Any]] = [*self._tasks]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            with contextlib.suppress(*_STORE_ERRORS):
                await self._listener.close(timeout=self._timeout)

    async def reload(self, workspace_id: str | None = None) -> bool:
        """Read one workspace's limits (or all) and install them; False when the
        database could not be read (what the book had stays)."""
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                rules = await load_rules(conn, workspace_id)
        except _STORE_ERRORS as exc:
            self._on_failure()
            _log.warning("limits_unavailable", error=type(exc).__name__)
            return False
        self._install(workspace_id, rules)
        return True

    async def _listen(self) -> None:
        try:
            conn = await asyncpg.connect(self._listen_url, timeout=self._timeout)
            await conn.add_listener(LIMITS_CHANNEL, self._on_changed)
        except _STORE_ERRORS as exc:
            _log.warning("limits_listener_unavailable", error=type(exc).__name__)
            return
        conn.add_termination_listener(self._on_lost)
        self._listener = conn

    def _on_lost(self, _conn: Any) -> None:
        self._listener = None
        if not self._closing:
            _log.warning("limits_listener_lost")

    def _on_changed(self, _conn: Any, _pid: int, _channel: str, workspace_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.reload(workspace_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            if self._listener is None or self._listener.is_closed():
                await self._listen()
            await self.reload()
