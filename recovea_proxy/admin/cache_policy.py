"""A workspace's lever policy — the exact cache and singleflight — on the command line
and over the admin API (admin keys only):

| `recovea cache set --workspace ID --policy off\\|deterministic\\|all [--ttl SECONDS]` |
| `recovea cache purge --workspace ID` |
| `GET /admin/v1/cache`  | the caller's workspace's policy |
| `PUT /admin/v1/cache`  | `{"policy", "ttl_s", "tool_calls"}` (each optional) |
| `POST /admin/v1/cache/purge` | the caller's workspace's stored answers, unreachable |

The policy travels with the workspace's keys (the key lookup returns it), so a change
sends the keys' revocation notice: every gateway forgets them and reads them again,
with the new policy, on their next request. A purge raises the workspace's cache
generation, which is part of every cache key: once the notice has reached a gateway,
none of the workspace's stored answers (in its memory or in Redis) is served again;
they age out by their TTL or are evicted.
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
from recovea_proxy.contract import (
    UUID,
    Operation,
    boolean,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.policy import CACHE_POLICIES, CACHE_TTL_MAX_S
from recovea_proxy.runtime import Runtime

_COLUMNS = "cache_policy, cache_ttl_s, cache_tool_calls"


def _json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "policy": row["cache_policy"],
        "ttl_s": row["cache_ttl_s"],
        "tool_calls": row["cache_tool_calls"],
    }


def _checked(policy: object, ttl_s: object, tool_calls: object) -> None:
    if policy is not None and policy not in CACHE_POLICIES:
        raise OperationError(f"policy must be one of {', '.join(CACHE_POLICIES)}")
    if ttl_s is not None and (type(ttl_s) is not int or not 1 <= ttl_s <= CACHE_TTL_MAX_S):
        raise OperationError(f"ttl must be a whole number of seconds from 1 to {CACHE_TTL_MAX_S}")
    if tool_calls is not None and type(tool_calls) is not bool:
        raise OperationError("tool_calls must be true or false")


async def set_cache_policy(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    policy: str | None = None,
    ttl_s: int | None = None,
    tool_calls: bool | None = None,
) -> dict[str, Any]:
    """Change what is given (the rest stays); the workspace's policy now."""
    _checked(policy, ttl_s, tool_calls)
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        row = await conn.fetchrow(
            "UPDATE recovea.workspaces SET cache_policy = coalesce($2, cache_policy),"
            " cache_ttl_s = coalesce($3, cache_ttl_s),"
            " cache_tool_calls = coalesce($4, cache_tool_calls)"
            f" WHERE customer_id = $1 RETURNING {_COLUMNS}",
            workspace,
            policy,
            ttl_s,
            tool_calls,
        )
        if row is None:
            raise OperationError(f"no workspace {workspace}")
        await forget_workspace_keys(conn, workspace)
    return {"workspace_id": str(workspace), **_json(row)}


async def purge_cache(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """Leave every answer the workspace's cache holds unreachable (its generation
    rises); the new generation."""
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        generation = await conn.fetchval(
            "UPDATE recovea.workspaces SET cache_generation = cache_generation + 1"
            " WHERE customer_id = $1 RETURNING cache_generation",
            workspace,
        )
        if generation is None:
            raise OperationError(f"no workspace {workspace}")
        await forget_workspace_keys(conn, workspace)
    return {"workspace_id": str(workspace), "purged": True, "generation": generation}


POLICY = obj(
    {
        "policy": string(enum=list(CACHE_POLICIES)),
        "ttl_s": integer(),
        "tool_calls": boolean(),
    }
)


@declare(Operation("The workspace's exact cache and singleflight policy", POLICY))
async def get_cache(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    row = await scoped(
        runtime,
        key,
        lambda conn: conn.fetchrow(
            f"SELECT {_COLUMNS} FROM recovea.workspaces WHERE customer_id = $1::uuid",
            key.customer_id,
        ),
    )
    return json_response(_json(row))


@declare(
    Operation(
        "Change the workspace's cache policy (what is given; the rest stays)",
        obj({"workspace_id": UUID, **POLICY["properties"]}),
        body=obj(
            {
                "policy": nullable(string(enum=list(CACHE_POLICIES))),
                "ttl_s": nullable(integer(minimum=1, maximum=CACHE_TTL_MAX_S)),
                "tool_calls": nullable(boolean()),
            },
            required=(),
            closed=True,
        ),
    )
)
async def put_cache(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    try:
        async with runtime.pool.acquire() as conn:
            result = await set_cache_policy(
                conn,
                key.customer_id,
                policy=body.get("policy"),
                ttl_s=body.get("ttl_s"),
                tool_calls=body.get("tool_calls"),
            )
    except OperationError as exc:
        raise bad_request(str(exc)) from None
    return json_response(result)


PURGED = obj({"workspace_id": UUID, "purged": boolean(), "generation": integer()})


@declare(
    Operation(
        "Purge the workspace's exact cache: no answer stored so far is served again",
        PURGED,
    )
)
async def post_cache_purge(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    async with runtime.pool.acquire() as conn:
        result = await purge_cache(conn, key.customer_id)
    return json_response(result)


CACHE_ADMIN_ROUTES = [
    Route("/admin/v1/cache", admin(get_cache), methods=["GET"]),
    Route("/admin/v1/cache", admin(put_cache), methods=["PUT"]),
    Route("/admin/v1/cache/purge", admin(post_cache_purge), methods=["POST"]),
]

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


async def cache_set(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    result = await set_cache_policy(conn, args.workspace, policy=args.policy, ttl_s=args.ttl)
    kept = "kept" if result["tool_calls"] else "not kept"
    _report(args, result, f"cache {result['policy']}, ttl {result['ttl_s']} s, tool calls {kept}")
    return result


async def cache_purge(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    result = await purge_cache(conn, args.workspace)
    _report(
        args,
        result,
        f"cache purged (generation {result['generation']}); gateways stop serving its"
        " stored answers on the workspace's next request",
    )
    return result


def _report(args: argparse.Namespace, result: dict[str, Any], line: str) -> None:
    """A command's result: one JSON object (`--json`), or one line about the workspace."""
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print(f"workspace {result['workspace_id']}: {line}")


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea cache set` and `recovea cache purge` on the `recovea` command's
    subparsers."""
    cache = commands.add_parser("cache", help="the exact cache and singleflight").add_subparsers(
        dest="action", required=True
    )
    cs = cache.add_parser("set", help="set a workspace's cache policy")
    cs.add_argument("--workspace", required=True, help="workspace id")
    cs.add_argument("--policy", required=True, choices=CACHE_POLICIES)
    cs.add_argument("--ttl", type=int, help="seconds an answer may be served (default 3600)")
    cs.add_argument("--json", action="store_true", help="print one JSON object")
    cs.set_defaults(run=lambda args: run(cache_set, args))
    cp = cache.add_parser("purge", help="serve none of a workspace's stored answers again")
    cp.add_argument("--workspace", required=True, help="workspace id")
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    cp.set_defaults(run=lambda args: run(cache_purge, args))
