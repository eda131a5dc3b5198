"""The spend caps a gateway process holds in memory: every enabled cap, the options of
each workspace that has one, and the prices its reservations are estimated with.

Loaded whole at start (one service-mode transaction) and again whenever a cap or a
workspace's cap options or prices change: the writer sends `CAP_CHANGES_CHANNEL`, every
process listens (its own LISTEN connection, reconnected in the background as the key
resolver's is) and reloads. A backstop reload runs every `refresh_s` too, so a
notice lost while the listener was down costs at most that long. A reload that
fails keeps the caps held before it: a cap is never dropped because the database
is down.

The hot path asks `for_workspace` (a dict lookup): None for a workspace without an
enabled cap, which is then never blocked and costs no database work.

Amounts in memory are integer nano-USD (`NANO` per USD), exact enough for any price
(rates have at most 6 decimals per 1M tokens) and cheap to add.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

import asyncpg
import structlog

from recovea_proxy.pricing.overrides import read_overrides
from recovea_proxy.pricing.rates import Price, Rates
from recovea_proxy.pricing.table import PriceTable, shipped_prices

CAP_CHANGES_CHANNEL = "recovea_cap_changes"
NANO = 1_000_000_000
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_PRICE_CACHE_MAX = 1024
_log = structlog.get_logger("recovea.caps")


def to_nano(usd: Decimal) -> int:
    """USD as integer nano-USD, rounded up (a reservation never rounds down)."""
    return int((usd * NANO).to_integral_value(ROUND_CEILING))


def to_usd(nano: int) -> Decimal:
    """Integer nano-USD as exact USD."""
    return Decimal(nano).scaleb(-9)


@dataclass(frozen=True, slots=True)
class Cap:
    """One enabled cap: `limit` nano-USD per `period` (day or month, UTC)."""

    id: uuid.UUID
    workspace_id: str
    scope: str
    scope_id: str
    limit: int
    period: str
    on_overrun: str


@dataclass(slots=True)
class WorkspaceCaps:
    """A workspace's enabled caps by scope, its options and its prices."""

    workspace: Cap | None = None
    projects: dict[str, Cap] = field(default_factory=dict)
    teams: dict[str, Cap] = field(default_factory=dict)
    keys: dict[str, Cap] = field(default_factory=dict)
    #: the price of a model the table does not know (None: such a model is refused)
    fallback: Price | None = None
    #: nano-USD reserved for a path the gateway cannot meter (None: refused)
    unmetered_reserve: int | None = None
    prices: PriceTable = field(default_factory=shipped_prices)
    _price_cache: dict[str, Price | None] = field(default_factory=dict)

    def applying(
        self, project_id: str | None, team_id: str | None, key_id: str | None
    ) -> list[Cap]:
        """The caps a request of this principal falls under."""
        caps = [] if self.workspace is None else [self.workspace]
        if self.projects and project_id is not None and (cap := self.projects.get(project_id)):
            caps.append(cap)
        if self.teams and team_id is not None and (cap := self.teams.get(team_id)):
            caps.append(cap)
        if self.keys and key_id is not None and (cap := self.keys.get(key_id)):
            caps.append(cap)
        return caps

    def holds(self, cap: Cap) -> bool:
        """Whether `cap` (by id) is one of these enabled caps."""
        if cap.scope == "workspace":
            found = self.workspace
        else:
            scoped = {"project": self.projects, "team": self.teams, "key": self.keys}
            found = scoped.get(cap.scope, {}).get(cap.scope_id)
        return found is not None and found.id == cap.id

    def price_for(self, model: str) -> Price | None:
        """The model's price under the workspace's overrides (cached, bounded)."""
        try:
            return self._price_cache[model]
        except KeyError:
            pass
        price = self.prices.price_for(model)
        if len(self._price_cache) < _PRICE_CACHE_MAX:
            self._price_cache[model] = price
        return price


def fallback_price(input_usd: Decimal, output_usd: Decimal) -> Price:
    """A workspace's fallback price (USD per 1M tokens) as a table entry: cache reads
    and writes bill as input."""
    rates = Rates(input_usd, input_usd, input_usd, input_usd, output_usd)
    return Price(standard=rates, source="workspace cap fallback", as_of="1970-01-01")


async def load_caps(conn: asyncpg.Connection) -> dict[str, WorkspaceCaps]:
    """Every enabled cap with its workspace's options and prices (service mode)."""
    async with conn.transaction(readonly=True):
        await conn.execute("SELECT set_config('recovea.service', 'on', true)")
        rows = await conn.fetch(
            "SELECT id, customer_id, scope, scope_id, usd, period, on_overrun"
            " FROM recovea.spend_caps WHERE enabled"
        )
        options = {
            str(row["customer_id"]): row
            for row in await conn.fetch(
                "SELECT customer_id, fallback_input, fallback_output, unmetered_reserve"
                " FROM recovea.spend_cap_options"
            )
        }
        book: dict[str, WorkspaceCaps] = {}
        for row in rows:
            workspace = str(row["customer_id"])
            caps = book.get(workspace)
            if caps is None:
                caps = book[workspace] = await _workspace(conn, workspace, options.get(workspace))
            cap = Cap(
                id=row["id"],
                workspace_id=workspace,
                scope=row["scope"],
                scope_id=str(row["scope_id"]),
                limit=to_nano(row["usd"]),
                period=row["period"],
                on_overrun=row["on_overrun"],
            )
            if cap.scope == "workspace":
                caps.workspace = cap
            else:
                {"project": caps.projects, "team": caps.teams, "key": caps.keys}[cap.scope][
                    cap.scope_id
                ] = cap
    return book


async def _workspace(
    conn: asyncpg.Connection, workspace: str, options: asyncpg.Record | None
) -> WorkspaceCaps:
    overrides = await read_overrides(conn, workspace)
    caps = WorkspaceCaps(prices=shipped_prices().with_overrides(overrides))
    if options is not None:
        if options["fallback_input"] is not None:
            caps.fallback = fallback_price(options["fallback_input"], options["fallback_output"])
        if options["unmetered_reserve"] is not None:
            caps.unmetered_reserve = to_nano(options["unmetered_reserve"])
    return caps


class CapBook:
    """The process's copy of every enabled cap, kept current (see the module doc)."""

    def __init__(self, pool: asyncpg.Pool, *, timeout_s: float, refresh_s: float) -> None:
        self._pool = pool
        self._timeout = timeout_s
        self._refresh_s = refresh_s
        self._caps: dict[str, WorkspaceCaps] = {}
        self._listener: asyncpg.Connection | None = None
        self._listen_url = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._reload_wanted = False
        self._reloading: asyncio.Task[None] | None = None
        self._closing = False
        self._loaded = False
        #: the same lookup, bound once for the hot path
        self.for_workspace: Callable[[str], WorkspaceCaps | None] = self._caps.get

    @property
    def empty(self) -> bool:
        return not self._caps

    def enabled(self, cap: Cap) -> bool:
        """Whether `cap` is enabled as of the last load."""
        caps = self._caps.get(cap.workspace_id)
        return caps is not None and caps.holds(cap)

    async def start(self, listen_url: str) -> None:
        """Load the caps (raises when the database cannot be read: the gateway does not
        start without knowing them), then listen for changes."""
        self._listen_url = listen_url
        await self.reload()
        if not await self._connect_listener():
            self._spawn(self._reconnect_loop())
        self._spawn(self._refresh_loop())

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            await self.refresh()

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            try:
                await self._listener.close(timeout=self._timeout)
            except _STORE_ERRORS as exc:
                _log.warning("cap_listener_close_failed", error=type(exc).__name__)

    async def reload(self) -> None:
        """Read every cap again; raises on a database fault (the old caps stay)."""
        async with asyncio.timeout(self._timeout * 4), self._pool.acquire() as conn:
            caps = await load_caps(conn)
        first, self._loaded = not self._loaded, True
        self._caps = caps
        self.for_workspace = caps.get
        # the load at start-up is chatter; a reload (a cap changed) is worth a line
        (_log.debug if first else _log.info)("caps_loaded", workspaces=len(caps))

    async def refresh(self) -> bool:
        """`reload`, logged instead of raised; whether it went through."""
        try:
            await self.reload()
        except Exception as exc:  # kept: the caps held before stay in force
            _log.warning("cap_reload_failed", error=type(exc).__name__)
            return False
        return True

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work, name="cap-config")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_listener(self) -> bool:
        try:
            conn = await asyncpg.connect(self._listen_url, timeout=5)
            await conn.add_listener(CAP_CHANGES_CHANNEL, self._on_change)
        except _STORE_ERRORS as exc:
            _log.warning("cap_listener_unavailable", error=type(exc).__name__)
            return False
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        return True

    def _on_listener_lost(self, _conn: Any) -> None:
        self._listener = None
        if not self._closing:
            _log.warning("cap_listener_lost")
            self._spawn(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.25
        while not self._closing:
            await asyncio.sleep(delay)
            if await self._connect_listener():
                self._on_change(None, 0, CAP_CHANGES_CHANNEL, "")  # notices may be lost
                return
            delay = min(delay * 2, 10.0)

    def _on_change(self, _conn: Any, _pid: int, _channel: str, workspace_id: str) -> None:
        _log.info("cap_change_received", workspace_id=workspace_id or None)
        self._reload_wanted = True
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self._reload_soon())
            self._tasks.add(self._reloading)
            self._reloading.add_done_callback(self._tasks.discard)

    async def _reload_soon(self) -> None:
        # A burst of notices costs one reload (plus one for any that came during it).
        while self._reload_wanted and not self._closing:
            self._reload_wanted = False
            if not await self.refresh():
                await asyncio.sleep(1.0)
                self._reload_wanted = True
