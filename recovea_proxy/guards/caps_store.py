"""The spend caps as the command line and the admin API manage them: set, disable,
show (with spent, reserved and left this period), and a workspace's cap options.

Every change is written in one transaction that also sends `CAP_CHANGES_CHANNEL`, so
every gateway reloads its caps at once. Input is validated before anything is
written; `CapError` says what is wrong.

| scope       | named by                  | a request falls under it when            |
| `workspace` | (nothing)                 | it is the workspace's                    |
| `project`   | project name (created on  | its rcv_ key belongs to the project      |
|             | first use, as for keys)   |                                          |
| `team`      | team name (likewise)      | its rcv_ key belongs to the team         |
| `key`       | rcv_ key id               | it is made with that key                 |

Shown per cap, for the current period: `spent` (settled), `reserved` (leased by
gateway processes: requests in flight and the unused part of their slices, given
back when idle), `in_flight` (what those processes had in flight at their last
sync) and `left` (`usd - spent - reserved`, at least 0).
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

import asyncpg

from recovea_proxy.guards.caps_config import CAP_CHANGES_CHANNEL

SCOPES = ("workspace", "project", "team", "key")
PERIODS = ("day", "month")
OVERRUNS = ("finish", "cut")
USD_MAX = Decimal(1_000_000_000)
RATE_MAX = Decimal(1_000_000)
_SHOW = """
SELECT c.scope, c.scope_id, c.usd, c.period, c.on_overrun, c.enabled, c.updated_at,
  coalesce(p.name, t.name) AS name,
  coalesce(s.spent, 0) AS spent, coalesce(s.leased, 0) AS leased,
  coalesce((SELECT sum(least(l.held, l.amount)) FROM recovea.spend_cap_leases l
            WHERE l.cap_id = c.id AND l.period_start = s.period_start), 0) AS in_flight,
  date_trunc(c.period, now(), 'UTC') AS period_start
FROM recovea.spend_caps c
LEFT JOIN recovea.spend_cap_state s
  ON s.cap_id = c.id AND s.period_start = date_trunc(c.period, now(), 'UTC')
LEFT JOIN recovea.projects p ON c.scope = 'project' AND p.id = c.scope_id
LEFT JOIN recovea.teams t ON c.scope = 'team' AND t.id = c.scope_id
WHERE c.customer_id = $1
ORDER BY array_position(ARRAY['workspace', 'project', 'team', 'key'], c.scope), name, c.scope_id
"""


class CapError(ValueError):
    """The input is not acceptable; the message says why."""


def parse_usd(raw: object, what: str = "usd", maximum: Decimal = USD_MAX) -> Decimal:
    """A dollar amount from text or a JSON number: 0 to `maximum`, at most 6 decimals."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise CapError(f"{what} must be a dollar amount, such as 25 or 12.50")
    try:
        value = Decimal(str(raw).strip())
    except InvalidOperation:
        raise CapError(f"{what} must be a dollar amount, such as 25 or 12.50") from None
    if not value.is_finite() or not 0 <= value <= maximum:
        raise CapError(f"{what} must be from 0 to {maximum}")
    if value != value.quantize(Decimal("0.000001")):
        raise CapError(f"{what} has more than 6 decimal places")
    return value


def _choice(value: object, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise CapError(f"{what} must be one of {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def parse_uuid(raw: object, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise CapError(f"{what} must be a UUID, not {str(raw)[:40]!r}") from None


async def _scoped(conn: asyncpg.Connection, workspace: uuid.UUID) -> None:
    await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", str(workspace))
    if not await conn.fetchval(
        "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1", workspace
    ):
        raise CapError(f"no workspace {workspace}")


async def _scope_id(
    conn: asyncpg.Connection, workspace: uuid.UUID, scope: str, name: str | None, create: bool
) -> uuid.UUID:
    """The id a cap of `scope` is stored under (see the module's table)."""
    if scope == "workspace":
        return workspace
    if not name or not isinstance(name, str):
        raise CapError(f"a {scope} cap needs the {scope}'s {'id' if scope == 'key' else 'name'}")
    if scope == "key":
        key_id = parse_uuid(name, "key id")
        if not await conn.fetchval(
            "SELECT 1 FROM recovea.rcv_keys WHERE id = $1 AND customer_id = $2", key_id, workspace
        ):
            raise CapError(f"no key {key_id} in this workspace")
        return key_id
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise CapError(f"{scope} name must be 1 to 100 printable characters")
    table = "projects" if scope == "project" else "teams"
    found = await conn.fetchval(
        f"SELECT id FROM recovea.{table} WHERE customer_id = $1 AND name = $2", workspace, name
    )
    if found is not None:
        return uuid.UUID(str(found))
    if not create:
        raise CapError(f"no {scope} {name!r} in this workspace")
    new_id = uuid.uuid4()
    await conn.execute(
        f"INSERT INTO recovea.{table} (id, customer_id, name) VALUES ($1, $2, $3)",
        new_id,
        workspace,
        name,
    )
    return new_id


async def _notify(conn: asyncpg.Connection, workspace: uuid.UUID) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", CAP_CHANGES_CHANNEL, str(workspace))


async def set_cap(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    scope: str,
    name: str | None,
    usd: object,
    period: object = "month",
    on_overrun: object = "finish",
) -> dict[str, Any]:
    """Set (and enable) the cap of one scope; the cap as shown."""
    workspace = parse_uuid(workspace_id, "workspace id")
    _choice(scope, SCOPES, "scope")
    amount = parse_usd(usd)
    period = _choice(period, PERIODS, "period")
    on_overrun = _choice(on_overrun, OVERRUNS, "on_overrun")
    async with conn.transaction():
        await _scoped(conn, workspace)
        scope_id = await _scope_id(conn, workspace, scope, name, create=True)
        await conn.execute(
            "INSERT INTO recovea.spend_caps"
            " (id, customer_id, scope, scope_id, usd, period, on_overrun, enabled)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, true)"
            " ON CONFLICT (customer_id, scope, scope_id) DO UPDATE SET usd = EXCLUDED.usd,"
            " period = EXCLUDED.period, on_overrun = EXCLUDED.on_overrun, enabled = true,"
            " updated_at = now()",
            uuid.uuid4(),
            workspace,
            scope,
            scope_id,
            amount,
            period,
            on_overrun,
        )
        await _notify(conn, workspace)
        shown = await _show(conn, workspace)
    return next(cap for cap in shown if cap["scope"] == scope and cap["id"] == str(scope_id))


async def disable_cap(
    conn: asyncpg.Connection, workspace_id: str, *, scope: str, name: str | None
) -> dict[str, Any]:
    """Disable the cap of one scope (kept, with its state); the cap as shown."""
    workspace = parse_uuid(workspace_id, "workspace id")
    _choice(scope, SCOPES, "scope")
    async with conn.transaction():
        await _scoped(conn, workspace)
        scope_id = await _scope_id(conn, workspace, scope, name, create=False)
        done = await conn.fetchval(
            "UPDATE recovea.spend_caps SET enabled = false, updated_at = now()"
            " WHERE customer_id = $1 AND scope = $2 AND scope_id = $3 RETURNING 1",
            workspace,
            scope,
            scope_id,
        )
        if not done:
            raise CapError(f"no {scope} cap to disable")
        await _notify(conn, workspace)
        shown = await _show(conn, workspace)
    return next(cap for cap in shown if cap["scope"] == scope and cap["id"] == str(scope_id))


async def show_caps(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """Every cap of the workspace with its state this period, and the options."""
    workspace = parse_uuid(workspace_id, "workspace id")
    async with conn.transaction(readonly=True):
        await _scoped(conn, workspace)
        caps = await _show(conn, workspace)
        options = await _options(conn, workspace)
    return {"workspace_id": str(workspace), "caps": caps, "options": options}


async def _show(conn: asyncpg.Connection, workspace: uuid.UUID) -> list[dict[str, Any]]:
    caps = []
    for row in await conn.fetch(_SHOW, workspace):
        usd, spent, leased = row["usd"], row["spent"], row["leased"]
        caps.append(
            {
                "scope": row["scope"],
                "id": str(row["scope_id"]),
                "name": row["name"],
                "usd": str(usd),
                "period": row["period"],
                "period_start": row["period_start"].isoformat(),
                "on_overrun": row["on_overrun"],
                "enabled": row["enabled"],
                "spent": _text(spent),
                "reserved": _text(leased),
                "in_flight": _text(row["in_flight"]),
                "left": _text(max(usd - spent - leased, Decimal(0))),
            }
        )
    return caps


def _text(value: Decimal) -> str:
    """An amount as plain decimal text, to the nano-dollar."""
    return str(value.quantize(Decimal("0.000000001")).normalize().__format__("f"))


async def _options(conn: asyncpg.Connection, workspace: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow(
        "SELECT fallback_input, fallback_output, unmetered_reserve"
        " FROM recovea.spend_cap_options WHERE customer_id = $1",
        workspace,
    )
    if row is None:
        return {"fallback_price": None, "unmetered_reserve": None}
    return {
        "fallback_price": None
        if row["fallback_input"] is None
        else {"input": str(row["fallback_input"]), "output": str(row["fallback_output"])},
        "unmetered_reserve": None
        if row["unmetered_reserve"] is None
        else str(row["unmetered_reserve"]),
    }


_KEEP = object()


async def set_options(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    fallback: object = _KEEP,
    unmetered_reserve: object = _KEEP,
) -> dict[str, Any]:
    """Change what is given (None clears it): `fallback` as (input, output) USD per 1M
    tokens, `unmetered_reserve` USD per request on a path that cannot be metered."""
    workspace = parse_uuid(workspace_id, "workspace id")
    columns: dict[str, Decimal | None] = {}
    if fallback is not _KEEP:
        if fallback is None:
            columns.update(fallback_input=None, fallback_output=None)
        else:
            if not isinstance(fallback, list | tuple) or len(fallback) != 2:
                raise CapError("fallback price must be an input and an output price")
            columns["fallback_input"] = parse_usd(fallback[0], "fallback input price", RATE_MAX)
            columns["fallback_output"] = parse_usd(fallback[1], "fallback output price", RATE_MAX)
    if unmetered_reserve is not _KEEP:
        columns["unmetered_reserve"] = (
            None
            if unmetered_reserve is None
            else parse_usd(unmetered_reserve, "unmetered reserve", RATE_MAX)
        )
    async with conn.transaction():
        await _scoped(conn, workspace)
        await conn.execute(
            "INSERT INTO recovea.spend_cap_options (customer_id) VALUES ($1)"
            " ON CONFLICT DO NOTHING",
            workspace,
        )
        if columns:
            names = list(columns)
            sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(names, start=2))
            await conn.execute(
                f"UPDATE recovea.spend_cap_options SET {sets}, updated_at = now()"
                " WHERE customer_id = $1",
                workspace,
                *(columns[name] for name in names),
            )
        await _notify(conn, workspace)
        options = await _options(conn, workspace)
    return {"workspace_id": str(workspace), **options}
