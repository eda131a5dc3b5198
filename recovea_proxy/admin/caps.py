"""Spend caps on the command line and over the admin API (admin keys only); the SQL
behind both is `guards.caps_store`.

| `recovea cap set --workspace ID [--project NAME\\|--team NAME\\|--key KEY_ID] --usd AMOUNT [--period day\\|month] [--on-overrun finish\\|cut]` |
| `recovea cap disable --workspace ID [--project NAME\\|--team NAME\\|--key KEY_ID]` |
| `recovea cap show --workspace ID` |
| `recovea cap options --workspace ID [--fallback-price IN,OUT\\|--no-fallback-price] [--unmetered-reserve USD\\|--no-unmetered]` |

| method, path                      | what |
| GET  /admin/v1/caps               | the workspace's caps (spent, reserved, left) and options |
| PUT  /admin/v1/caps               | `{"usd", "period", "on_overrun"}` + at most one of `{"project", "team", "key"}` |
| POST /admin/v1/caps/disable       | `{}` (the workspace's cap) or one of `{"project", "team", "key"}` |
| PUT  /admin/v1/caps/options       | `{"fallback_price": {"input", "output"} or null, "unmetered_reserve": USD or null}` |
"""  # noqa: E501

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, scoped
from recovea_proxy.admin.operations import OperationError
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.config import Settings
from recovea_proxy.contract import (
    MONEY,
    UUID,
    Operation,
    Schema,
    array,
    boolean,
    declare,
    nullable,
    obj,
    string,
)
from recovea_proxy.guards import caps_store as store
from recovea_proxy.runtime import Runtime

_SCOPE_FIELDS = ("project", "team", "key")


def _amount(maximum: Decimal, what: str) -> Schema:
    """A dollar amount as a string or a JSON number (`caps_store.parse_usd` reads it
    and refuses more than 6 decimals with 400)."""
    return {
        "type": ["string", "number"],
        "pattern": r"^[0-9]+(\.[0-9]{1,6})?$",
        "minimum": 0,
        "maximum": int(maximum),
        "description": f'{what}, such as 25 or "12.50" (at most 6 decimals)',
    }


_NAME = nullable(string(minLength=1, maxLength=100))
#: at most one; none for the workspace's cap
_SCOPE_BODY = {
    "project": _NAME,
    "team": _NAME,
    "key": nullable(string(format="uuid", description="an rcv_ key id")),
}
_RATE = _amount(store.RATE_MAX, "USD")
CAP = obj(
    {
        "scope": string(enum=list(store.SCOPES)),
        "id": UUID,
        "name": nullable(string()),
        "usd": MONEY,
        "period": string(enum=list(store.PERIODS)),
        "period_start": string(format="date-time"),
        "on_overrun": string(enum=list(store.OVERRUNS)),
        "enabled": boolean(),
        "spent": MONEY,
        "reserved": MONEY,
        "in_flight": MONEY,
        "left": MONEY,
    }
)
OPTIONS = {
    "fallback_price": nullable(obj({"input": MONEY, "output": MONEY})),
    "unmetered_reserve": nullable(MONEY),
}


def _scope(body: dict[str, Any]) -> tuple[str, str | None]:
    given = [name for name in _SCOPE_FIELDS if body.get(name) is not None]
    if len(given) > 1:
        raise store.CapError("give at most one of project, team, key")
    if not given:
        return "workspace", None
    return given[0], body[given[0]]


async def _store(runtime: Runtime, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    try:
        async with runtime.pool.acquire() as conn:
            return await work(conn)
    except store.CapError as exc:
        raise bad_request(str(exc)) from None


@declare(
    Operation(
        "The workspace's spend caps with their state this period, and its cap options",
        obj({"workspace_id": UUID, "caps": array(CAP), "options": obj(OPTIONS)}),
    )
)
async def get_caps(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    shown = await scoped(runtime, key, lambda conn: store.show_caps(conn, key.customer_id))
    return json_response(shown)


@declare(
    Operation(
        "Set (and enable) the cap of the workspace, or of one project, team or key",
        CAP,
        body=obj(
            {
                "usd": _amount(store.USD_MAX, "USD per period"),
                "period": nullable(string(enum=list(store.PERIODS))),
                "on_overrun": nullable(string(enum=list(store.OVERRUNS))),
                **_SCOPE_BODY,
            },
            required=("usd",),
            closed=True,
        ),
    )
)
async def put_cap(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        scope, name = _scope(body)
        return await store.set_cap(
            conn,
            key.customer_id,
            scope=scope,
            name=name,
            usd=body["usd"],
            period=body.get("period") or "month",
            on_overrun=body.get("on_overrun") or "finish",
        )

    return json_response(await _store(runtime, work))


@declare(
    Operation(
        "Disable the cap of the workspace (no field), or of one project, team or key;"
        " 400 when there is none",
        CAP,
        body=obj(_SCOPE_BODY, required=(), closed=True),
    )
)
async def disable_cap(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        scope, name = _scope(body)
        return await store.disable_cap(conn, key.customer_id, scope=scope, name=name)

    return json_response(await _store(runtime, work))


@declare(
    Operation(
        "Change the workspace's cap options (a field left out is kept; null clears it)",
        obj({"workspace_id": UUID, **OPTIONS}),
        body=obj(
            {
                "fallback_price": nullable(
                    obj(
                        {"input": _RATE, "output": _RATE},
                        closed=True,
                        description="USD per 1M tokens for a model with no price",
                    )
                ),
                "unmetered_reserve": nullable(
                    {**_RATE, "description": "USD reserved (and charged) per unmetered request"}
                ),
            },
            required=(),
            closed=True,
        ),
    )
)
async def put_options(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    changes: dict[str, Any] = {}
    if "fallback_price" in body:
        price = body["fallback_price"]
        if price is not None:
            if set(price) != {"input", "output"}:
                raise bad_request('fallback_price must be {"input", "output"} or null')
            price = (price["input"], price["output"])
        changes["fallback"] = price
    if "unmetered_reserve" in body:
        changes["unmetered_reserve"] = body["unmetered_reserve"]
    return json_response(
        await _store(runtime, lambda conn: store.set_options(conn, key.customer_id, **changes))
    )


CAPS_ADMIN_ROUTES = [
    Route("/admin/v1/caps", admin(get_caps), methods=["GET"]),
    Route("/admin/v1/caps", admin(put_cap), methods=["PUT"]),
    Route("/admin/v1/caps/disable", admin(disable_cap), methods=["POST"]),
    Route("/admin/v1/caps/options", admin(put_options), methods=["PUT"]),
]

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(orjson.dumps(result).decode() if args.json else text)


def _line(cap: dict[str, Any]) -> str:
    who = (
        cap["scope"]
        if cap["scope"] == "workspace"
        else f"{cap['scope']} {cap['name'] or cap['id']}"
    )
    state = "" if cap["enabled"] else " (disabled)"
    return (
        f"{who}: ${cap['usd']} per {cap['period']}{state}, on overrun {cap['on_overrun']};"
        f" spent ${cap['spent']}, reserved ${cap['reserved']}, left ${cap['left']}"
    )


def _scope_of(args: argparse.Namespace) -> tuple[str, str | None]:
    for name in _SCOPE_FIELDS:
        value = getattr(args, name)
        if value is not None:
            return name, value
    return "workspace", None


async def cap_set(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    scope, name = _scope_of(args)
    cap = await store.set_cap(
        conn,
        args.workspace,
        scope=scope,
        name=name,
        usd=args.usd,
        period=args.period,
        on_overrun=args.on_overrun,
    )
    _emit(args, cap, _line(cap))
    return cap


async def cap_disable(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    scope, name = _scope_of(args)
    cap = await store.disable_cap(conn, args.workspace, scope=scope, name=name)
    _emit(args, cap, _line(cap))
    return cap


async def cap_show(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    shown = await store.show_caps(conn, args.workspace)
    lines = [_line(cap) for cap in shown["caps"]] or ["no caps"]
    _emit(args, shown, "\n".join(lines))
    return shown


async def cap_options(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if args.no_fallback_price:
        changes["fallback"] = None
    elif args.fallback_price is not None:
        changes["fallback"] = tuple([*args.fallback_price.split(",", 1), ""])[:2]
    if args.no_unmetered:
        changes["unmetered_reserve"] = None
    elif args.unmetered_reserve is not None:
        changes["unmetered_reserve"] = args.unmetered_reserve
    result = await store.set_options(conn, args.workspace, **changes)
    _emit(args, result, orjson.dumps(result).decode())
    return result


def _scope_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", required=True, help="workspace id")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--project", help="a project's cap (by name)")
    scope.add_argument("--team", help="a team's cap (by name)")
    scope.add_argument("--key", help="an rcv_ key's cap (by key id)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _checked(command: Command) -> Command:
    """The command with its input errors as the runner reports them (exit 1)."""

    async def checked(
        conn: asyncpg.Connection, args: argparse.Namespace, settings: Settings
    ) -> dict[str, Any]:
        try:
            return await command(conn, args, settings)
        except store.CapError as exc:
            raise OperationError(str(exc)) from None

    return checked


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea cap set|disable|show|options` on the `recovea` command's subparsers."""
    cap = commands.add_parser("cap", help="hard spend caps").add_subparsers(
        dest="action", required=True
    )
    cs = cap.add_parser("set", help="set (and enable) a spend cap")
    _scope_flags(cs)
    cs.add_argument("--usd", required=True, help="the cap in USD per period")
    cs.add_argument("--period", choices=store.PERIODS, default="month", help="UTC day or month")
    cs.add_argument(
        "--on-overrun",
        choices=store.OVERRUNS,
        default="finish",
        help="a stream past its reservation with no room left: finish it or cut it",
    )
    cs.set_defaults(run=lambda args: run(_checked(cap_set), args))
    cd = cap.add_parser("disable", help="disable a spend cap")
    _scope_flags(cd)
    cd.set_defaults(run=lambda args: run(_checked(cap_disable), args))
    show = cap.add_parser("show", help="caps with spent, reserved and left per scope")
    show.add_argument("--workspace", required=True, help="workspace id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=lambda args: run(_checked(cap_show), args))
    co = cap.add_parser("options", help="fallback price and unmetered paths under caps")
    co.add_argument("--workspace", required=True, help="workspace id")
    fallback = co.add_mutually_exclusive_group()
    fallback.add_argument(
        "--fallback-price", help="INPUT,OUTPUT USD per 1M tokens for models with no price"
    )
    fallback.add_argument("--no-fallback-price", action="store_true")
    unmetered = co.add_mutually_exclusive_group()
    unmetered.add_argument(
        "--unmetered-reserve", help="allow unmetered paths, reserving (and charging) USD each"
    )
    unmetered.add_argument("--no-unmetered", action="store_true")
    co.add_argument("--json", action="store_true", help="print one JSON object")
    co.set_defaults(run=lambda args: run(_checked(cap_options), args))
