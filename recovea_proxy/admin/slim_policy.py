"""A workspace's slim lever (lossless request trimming, `levers.slim`), off by default,
on the command line and over the admin API (admin keys only):

| `recovea slim set --workspace ID on\\|off` |
| `GET /admin/v1/slim`  | `{"enabled"}` for the caller's workspace |
| `PUT /admin/v1/slim`  | `{"enabled": true\\|false}` |

Like the cache policy, it travels with the workspace's keys: a change sends the keys'
revocation notice, and every gateway applies it on the workspace's next request.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, scoped
from recovea_proxy.admin.operations import (
    OperationError,
    forget_workspace_keys,
    parse_id,
    scope,
)
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.config import Settings
from recovea_proxy.contract import UUID, Operation, boolean, declare, obj
from recovea_proxy.runtime import Runtime


async def set_slim(conn: asyncpg.Connection, workspace_id: str, enabled: object) -> dict[str, Any]:
    """Turn the workspace's slim lever on or off; the setting now."""
    if type(enabled) is not bool:
        raise OperationError("enabled must be true or false")
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        row = await conn.fetchrow(
            "UPDATE recovea.workspaces SET slim = $2 WHERE customer_id = $1 RETURNING slim",
            workspace,
            enabled,
        )
        if row is None:
            raise OperationError(f"no workspace {workspace}")
        await forget_workspace_keys(conn, workspace)
    return {"workspace_id": str(workspace), "enabled": row["slim"]}


SLIM = obj({"workspace_id": UUID, "enabled": boolean()})


@declare(Operation("Whether the workspace's slim lever is on", SLIM))
async def get_slim(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    enabled = await scoped(
        runtime,
        key,
        lambda conn: conn.fetchval(
            "SELECT slim FROM recovea.workspaces WHERE customer_id = $1::uuid", key.customer_id
        ),
    )
    return json_response({"workspace_id": key.customer_id, "enabled": enabled})


@declare(
    Operation(
        "Turn the workspace's slim lever on or off",
        SLIM,
        body=obj({"enabled": boolean()}, closed=True),
    )
)
async def put_slim(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    try:
        async with runtime.pool.acquire() as conn:
            result = await set_slim(conn, key.customer_id, body.get("enabled"))
    except OperationError as exc:
        raise bad_request(str(exc)) from None
    return json_response(result)


SLIM_ADMIN_ROUTES = [
    Route("/admin/v1/slim", admin(get_slim), methods=["GET"]),
    Route("/admin/v1/slim", admin(put_slim), methods=["PUT"]),
]

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


async def slim_set(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    result = await set_slim(conn, args.workspace, args.state == "on")
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"workspace {result['workspace_id']}: slim {'on' if result['enabled'] else 'off'}")
    return result


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea slim set` on the `recovea` command's subparsers."""
    slim = commands.add_parser("slim", help="lossless request trimming").add_subparsers(
        dest="action", required=True
    )
    ss = slim.add_parser("set", help="turn a workspace's slim lever on or off")
    ss.add_argument("--workspace", required=True, help="workspace id")
    ss.add_argument("state", choices=("on", "off"))
    ss.add_argument("--json", action="store_true", help="print one JSON object")
    ss.set_defaults(run=lambda args: run(slim_set, args))
