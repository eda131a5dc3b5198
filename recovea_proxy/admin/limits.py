"""A workspace's rate and concurrency limits on the command line and over the admin API
(admin keys only):

| `recovea limit set --workspace ID [--project NAME \\| --team NAME \\| --key KEY_ID] [--model M] [--rpm N] [--tpm N] [--concurrency N] [--on-failure open\\|closed]` |
| `recovea limit show --workspace ID`, `recovea limit clear --workspace ID [scope flags] [--model M]` |
| `GET /admin/v1/limits`           | the caller's workspace's limits                      |
| `PUT /admin/v1/limits`           | set one: `{"project" \\| "team" \\| "key_id", "model", "rpm", "tpm", "concurrency", "on_failure"}` |
| `DELETE /admin/v1/limits/{id}`   | remove one                                           |

`set` changes what it is given and keeps the rest; 0 removes that bound (a limit
left with none is removed). Every gateway hears of a change at once
(`recovea_limits_changed`); the one whose admin API made it reads it before it
answers.
"""  # noqa: E501

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, scoped
from recovea_proxy.admin.operations import OperationError, check_name, parse_id, scope
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.config import Settings
from recovea_proxy.contract import (
    UUID,
    Operation,
    Param,
    declare,
    integer,
    listing,
    nullable,
    obj,
    string,
)
from recovea_proxy.errors import GatewayError
from recovea_proxy.guards.limit_rules import CONCURRENCY_MAX, MODEL_MAX, RPM_MAX, TPM_MAX
from recovea_proxy.guards.limit_store import LIMITS_CHANNEL
from recovea_proxy.runtime import Runtime

FAILURE_MODES = ("open", "closed")
_BOUNDS = (("rpm", RPM_MAX), ("tpm", TPM_MAX), ("concurrency", CONCURRENCY_MAX))
_LIST = (
    "SELECT l.id, l.scope, p.name AS project, t.name AS team, l.rcv_key_id, l.model,"
    " l.rpm, l.tpm, l.concurrency, l.fail_closed FROM recovea.rate_limits l"
    " LEFT JOIN recovea.projects p ON p.id = l.project_id"
    " LEFT JOIN recovea.teams t ON t.id = l.team_id"
)


def _json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "scope": row["scope"],
        "project": row["project"],
        "team": row["team"],
        "key_id": None if row["rcv_key_id"] is None else str(row["rcv_key_id"]),
        "model": row["model"] or None,
        "rpm": row["rpm"],
        "tpm": row["tpm"],
        "concurrency": row["concurrency"],
        "on_failure": "closed" if row["fail_closed"] else "open",
    }


def _checked_bounds(values: dict[str, object]) -> None:
    for name, most in _BOUNDS:
        value = values.get(name)
        if value is not None and (type(value) is not int or not 0 <= value <= most):
            raise OperationError(f"{name} must be a whole number from 0 (remove) to {most}")


def _checked_model(model: object) -> str:
    if model is None:
        return ""
    if type(model) is not str or not 1 <= len(model) <= MODEL_MAX or not model.isprintable():
        raise OperationError(f"model must be 1 to {MODEL_MAX} printable characters")
    return model


async def _target(
    conn: asyncpg.Connection,
    workspace: uuid.UUID,
    project: str | None,
    team: str | None,
    key_id: str | None,
) -> tuple[str, str, uuid.UUID | None]:
    """(scope, the column naming its target, the target's id)."""
    if sum(x is not None for x in (project, team, key_id)) > 1:
        raise OperationError("give at most one of project, team, key")
    if project is not None:
        table, column, name, what = "projects", "project_id", project, "project"
    elif team is not None:
        table, column, name, what = "teams", "team_id", team, "team"
    elif key_id is not None:
        found = await conn.fetchval(
            "SELECT id FROM recovea.rcv_keys WHERE customer_id = $1 AND id = $2",
            workspace,
            parse_id(key_id, "key id"),
        )
        if found is None:
            raise OperationError(f"no key {key_id} in this workspace")
        return "key", "rcv_key_id", found
    else:
        return "workspace", "project_id", None
    if type(name) is not str:
        raise OperationError(f"{what} must be a name")
    found = await conn.fetchval(
        f"SELECT id FROM recovea.{table} WHERE customer_id = $1 AND name = $2",
        workspace,
        check_name(name, f"{what} name"),
    )
    if found is None:
        raise OperationError(f"no {what} named {name.strip()!r} in this workspace")
    return what, column, found


async def _existing(
    conn: asyncpg.Connection,
    workspace: uuid.UUID,
    scope_name: str,
    column: str,
    target: uuid.UUID | None,
    model: str,
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, rpm, tpm, concurrency, fail_closed FROM recovea.rate_limits"
        f" WHERE customer_id = $1 AND scope = $2 AND {column} IS NOT DISTINCT FROM $3"
        " AND model = $4 FOR UPDATE",
        workspace,
        scope_name,
        target,
        model,
    )
    return row


async def set_limit(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    project: str | None = None,
    team: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    rpm: int | None = None,
    tpm: int | None = None,
    concurrency: int | None = None,
    on_failure: str | None = None,
) -> dict[str, Any] | None:
    """Set (or change) one limit; the limit now, or None when it was left with no bound
    and removed."""
    _checked_bounds({"rpm": rpm, "tpm": tpm, "concurrency": concurrency})
    if on_failure is not None and on_failure not in FAILURE_MODES:
        raise OperationError("on_failure must be open or closed")
    model_name = _checked_model(model)
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        if not await conn.fetchval(
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1", workspace
        ):
            raise OperationError(f"no workspace {workspace}")
        scope_name, column, target = await _target(conn, workspace, project, team, key_id)
        old = await _existing(conn, workspace, scope_name, column, target, model_name)
        merged = {
            name: (old[name] if old is not None else None) if given is None else (given or None)
            for name, given in (("rpm", rpm), ("tpm", tpm), ("concurrency", concurrency))
        }
        fail_closed = (
            on_failure == "closed"
            if on_failure is not None
            else (old is not None and old["fail_closed"])
        )
        if all(value is None for value in merged.values()):
            if old is None:
                raise OperationError("give at least one of rpm, tpm, concurrency above 0")
            await conn.execute("DELETE FROM recovea.rate_limits WHERE id = $1", old["id"])
            limit_id = None
        elif old is not None:
            limit_id = old["id"]
            await conn.execute(
                "UPDATE recovea.rate_limits SET rpm = $2, tpm = $3, concurrency = $4,"
                " fail_closed = $5, updated_at = now() WHERE id = $1",
                limit_id,
                merged["rpm"],
                merged["tpm"],
                merged["concurrency"],
                fail_closed,
            )
        else:
            limit_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO recovea.rate_limits (id, customer_id, scope, "
                f"{column}, model, rpm, tpm, concurrency, fail_closed)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                limit_id,
                workspace,
                scope_name,
                target,
                model_name,
                merged["rpm"],
                merged["tpm"],
                merged["concurrency"],
                fail_closed,
            )
        await conn.execute("SELECT pg_notify($1, $2)", LIMITS_CHANNEL, str(workspace))
        if limit_id is None:
            return None
        row = await conn.fetchrow(_LIST + " WHERE l.id = $1", limit_id)
    return _json(row)


async def list_limits(conn: asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's limits (call inside a transaction scoped to it)."""
    rows = await conn.fetch(
        _LIST + " WHERE l.customer_id = $1 ORDER BY l.scope, project, team, l.rcv_key_id, l.model",
        uuid.UUID(workspace_id),
    )
    return [_json(row) for row in rows]


async def clear_limit(conn: asyncpg.Connection, workspace_id: str, limit_id: str) -> bool:
    """Remove one limit of the workspace; False when it has no such limit."""
    workspace = parse_id(workspace_id, "workspace id")
    parsed = parse_id(limit_id, "limit id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        status = await conn.execute(
            "DELETE FROM recovea.rate_limits WHERE id = $1 AND customer_id = $2", parsed, workspace
        )
        removed = str(status).endswith(" 1")
        if removed:
            await conn.execute("SELECT pg_notify($1, $2)", LIMITS_CHANNEL, str(workspace))
    return removed


# -- the admin API ------------------------------------------------------------------


_BOUND = nullable(integer())
LIMIT = obj(
    {
        "id": UUID,
        "scope": string(enum=["workspace", "project", "team", "key"]),
        "project": nullable(string()),
        "team": nullable(string()),
        "key_id": nullable(UUID),
        "model": nullable(string()),
        "rpm": _BOUND,
        "tpm": _BOUND,
        "concurrency": _BOUND,
        "on_failure": string(enum=list(FAILURE_MODES)),
    }
)
_NAME = nullable(string(minLength=1, maxLength=100))


@declare(Operation("The workspace's rate and concurrency limits", listing(LIMIT)))
async def get_limits(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    limits = await scoped(runtime, key, lambda conn: list_limits(conn, key.customer_id))
    return json_response({"data": limits})


@declare(
    Operation(
        "Set (or change) one limit; a limit left with no bound is removed (null)",
        obj({"limit": nullable(LIMIT)}),
        body=obj(
            {
                "project": _NAME,
                "team": _NAME,
                "key_id": nullable(string()),
                "model": nullable(string(minLength=1, maxLength=MODEL_MAX)),
                "rpm": nullable(integer(minimum=0, maximum=RPM_MAX)),
                "tpm": nullable(integer(minimum=0, maximum=TPM_MAX)),
                "concurrency": nullable(integer(minimum=0, maximum=CONCURRENCY_MAX)),
                "on_failure": nullable(string(enum=list(FAILURE_MODES))),
            },
            required=(),
            closed=True,
        ),
    )
)
async def put_limit(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    try:
        async with runtime.pool.acquire() as conn:
            result = await set_limit(conn, key.customer_id, **body)
    except OperationError as exc:
        raise bad_request(str(exc)) from None
    await runtime.limits.reload(key.customer_id)
    return json_response({"limit": result})


@declare(
    Operation(
        "Remove one limit of the workspace",
        obj({"id": UUID, "removed": {"const": True}}),
        path=(Param("limit_id", UUID),),
        errors=(400, 404),
    )
)
async def delete_limit(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    limit_id = request.path_params["limit_id"]
    async with runtime.pool.acquire() as conn:
        removed = await clear_limit(conn, key.customer_id, limit_id)
    if not removed:
        raise GatewayError(404, "not_found", "No limit with that id in this workspace.")
    await runtime.limits.reload(key.customer_id)
    return json_response({"id": limit_id, "removed": True})


LIMITS_ADMIN_ROUTES = [
    Route("/admin/v1/limits", admin(get_limits), methods=["GET"]),
    Route("/admin/v1/limits", admin(put_limit), methods=["PUT"]),
    Route("/admin/v1/limits/{limit_id}", admin(delete_limit), methods=["DELETE"]),
]

# -- the command line ---------------------------------------------------------------

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


def describe(limit: dict[str, Any]) -> str:
    """One line for a person: who, which model, the bounds, the failure mode."""
    who = limit["scope"]
    if limit["scope"] != "workspace":
        who += " " + str(limit[limit["scope"] if limit["scope"] != "key" else "key_id"])
    if limit["model"]:
        who += f" (model {limit['model']})"
    bounds = ", ".join(
        f"{name} {limit[name]}" for name in ("rpm", "tpm", "concurrency") if limit[name]
    )
    return f"{limit['id']}: {who}: {bounds}; fails {limit['on_failure']}"


def _emit(args: argparse.Namespace, result: Any, text: str) -> None:
    print(orjson.dumps(result).decode() if args.json else text)


async def limit_set(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    result = await set_limit(
        conn,
        args.workspace,
        project=args.project,
        team=args.team,
        key_id=args.key,
        model=args.model,
        rpm=args.rpm,
        tpm=args.tpm,
        concurrency=args.concurrency,
        on_failure=args.on_failure,
    )
    _emit(args, {"limit": result}, describe(result) if result else "limit removed (no bounds)")
    return result or {}


async def limit_show(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    workspace = parse_id(args.workspace, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        limits = await list_limits(conn, str(workspace))
    _emit(args, {"data": limits}, "\n".join(map(describe, limits)) or "no limits")
    return {"data": limits}


async def limit_clear(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    if not await clear_limit(conn, args.workspace, args.limit_id):
        raise OperationError(f"no limit {args.limit_id} in workspace {args.workspace}")
    _emit(args, {"id": args.limit_id, "removed": True}, f"removed {args.limit_id}")
    return {}


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea limit set|show|clear` on the `recovea` command's subparsers."""
    limit = commands.add_parser("limit", help="rate and concurrency limits").add_subparsers(
        dest="action", required=True
    )
    ls = limit.add_parser("set", help="set a limit (workspace-wide without a scope flag)")
    ls.add_argument("--workspace", required=True, help="workspace id")
    target = ls.add_mutually_exclusive_group()
    target.add_argument("--project", help="project name")
    target.add_argument("--team", help="team name")
    target.add_argument("--key", help="rcv_ key id")
    ls.add_argument("--model", help="only requests for this model")
    ls.add_argument("--rpm", type=int, help="requests per minute (0 removes it)")
    ls.add_argument("--tpm", type=int, help="tokens per minute (0 removes it)")
    ls.add_argument("--concurrency", type=int, help="requests in flight (0 removes it)")
    ls.add_argument(
        "--on-failure",
        choices=FAILURE_MODES,
        help="when the counters cannot be reached: admit (open, default) or refuse",
    )
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(run=lambda args: run(limit_set, args))
    show = limit.add_parser("show", help="a workspace's limits")
    show.add_argument("--workspace", required=True, help="workspace id")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(run=lambda args: run(limit_show, args))
    clear = limit.add_parser("clear", help="remove a limit")
    clear.add_argument("limit_id", help="the limit's id (from `recovea limit show`)")
    clear.add_argument("--workspace", required=True, help="workspace id")
    clear.add_argument("--json", action="store_true", help="print one JSON object")
    clear.set_defaults(run=lambda args: run(limit_clear, args))
