"""A workspace's routing rules on the command line and over the admin API (admin keys
only):

| `recovea route add --workspace ID --match-model MODEL --to MODEL [--provider P]` |
|   `[--fallback MODEL]… [--feature F] [--shadow RATE]` (also `--match-surface`,  |
|   `--match-path`, `--env`): prints the rule id                                  |
| `recovea route list --workspace ID`, `recovea route remove RULE_ID`             |
| `GET /admin/v1/routes`              | the caller's workspace's rules           |
| `POST /admin/v1/routes`             | add one (`201`, the rule with its `id`)  |
| `DELETE /admin/v1/routes/{rule_id}` | remove one                               |

A rule is checked before it is written, and refused with the reason (CLI exit 1,
HTTP 400) when it is malformed, names an unknown provider or one the workspace has
no key for, would need a translation between wire formats (only OpenAI's and
OpenRouter's surfaces share one), sends requests to a model with no price (in the
shipped table or the workspace's overrides), or matches exactly what another rule
matches. Rules travel with the workspace's keys (the key lookup returns them), so a
change sends the keys' revocation notice: every gateway reads them again, with the
new rules, on their next request.
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
    PROVIDERS,
    OperationError,
    parse_id,
)
from recovea_proxy.admin.route_rules import (
    ENVS,
    FALLBACKS_MAX,
    add_rule,
    list_rules,
    remove_rule,
    rules_with_shadow,
)
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.clean import MODEL_MAX, TAG_MAX
from recovea_proxy.config import Settings
from recovea_proxy.contract import (
    UUID,
    Operation,
    Param,
    array,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.errors import GatewayError
from recovea_proxy.runtime import Runtime

RULE = obj(
    {
        "id": UUID,
        "match_surface": nullable(string()),
        "match_path": nullable(string()),
        "match_model": string(),
        "feature": nullable(string()),
        "env": nullable(string()),
        "provider": nullable(string()),
        "to": string(),
        "fallbacks": array(string()),
        "shadow": {"type": "number"},
        "disabled_at": nullable(string()),
        "disabled_reason": nullable(string()),
        "shadow_results": array(
            obj(
                {
                    "routed_model": string(),
                    "baseline_model": string(),
                    "n": integer(),
                    "disagreements": integer(),
                    "verdict": nullable(string()),
                }
            )
        ),
    }
)
_MODEL = string(minLength=1, maxLength=MODEL_MAX)


@declare(
    Operation(
        "The workspace's routing rules, with their shadow results and today's shadow spend",
        obj(
            {
                "data": array(RULE),
                "shadow_spend_today": obj({"usd": string(), "calls": integer()}),
            }
        ),
    )
)
async def get_routes(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    listed = await scoped(runtime, key, lambda conn: rules_with_shadow(conn, key.customer_id))
    return json_response(listed)


@declare(
    Operation(
        "Add a routing rule",
        RULE,
        status=201,
        body=obj(
            {
                "match_model": _MODEL,
                "to": _MODEL,
                "match_surface": nullable(string(enum=list(PROVIDERS))),
                "match_path": nullable(string(minLength=1, maxLength=256)),
                "feature": nullable(string(minLength=1, maxLength=TAG_MAX)),
                "env": nullable(string(enum=list(ENVS))),
                "provider": nullable(string(enum=list(PROVIDERS))),
                "fallbacks": nullable(array(_MODEL, maxItems=FALLBACKS_MAX)),
                "shadow": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            },
            required=("match_model", "to"),
            closed=True,
        ),
    )
)
async def post_route(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    try:
        async with runtime.pool.acquire() as conn:
            rule = await add_rule(conn, key.customer_id, body)
    except OperationError as exc:
        raise bad_request(str(exc)) from None
    return json_response(rule, 201)


@declare(
    Operation(
        "Remove a routing rule of the workspace",
        obj({"id": UUID, "removed": {"const": True}}),
        path=(Param("rule_id", UUID),),
        errors=(400, 404),
    )
)
async def delete_route(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    rule_id = request.path_params["rule_id"]
    parse_id(rule_id, "rule id")
    async with runtime.pool.acquire() as conn:
        removed = await remove_rule(conn, rule_id, key.customer_id)
    if not removed:
        raise GatewayError(404, "not_found", "No rule with that id in this workspace.")
    return json_response({"id": rule_id, "removed": True})


ROUTES_ADMIN_ROUTES = [
    Route("/admin/v1/routes", admin(get_routes), methods=["GET"]),
    Route("/admin/v1/routes", admin(post_route), methods=["POST"]),
    Route("/admin/v1/routes/{rule_id}", admin(delete_route), methods=["DELETE"]),
]

Command = Callable[[asyncpg.Connection, argparse.Namespace, Settings], Awaitable[dict[str, Any]]]
#: the admin commands' one runner (admin.commands.run), handed in to avoid an import cycle
Runner = Callable[[Command, argparse.Namespace], int]


def _emit(args: argparse.Namespace, result: Any, text: str) -> None:
    print(orjson.dumps(result).decode() if args.json else text)


async def route_add(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    spec = {
        "match_model": args.match_model,
        "to": args.to,
        "provider": args.provider,
        "fallbacks": args.fallback or [],
        "feature": args.feature,
        "shadow": args.shadow,
        "match_surface": args.match_surface,
        "match_path": args.match_path,
        "env": args.env,
    }
    rule = await add_rule(conn, args.workspace, spec)
    _emit(args, rule, rule["id"])
    return rule


async def route_list(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    listed = await list_rules(conn, args.workspace)
    lines = [
        f"{r['id']}  {r['match_model']} -> {' -> '.join([r['to'], *r['fallbacks']])}"
        f"{' on ' + r['provider'] if r['provider'] else ''}"
        f"{' (feature ' + r['feature'] + ')' if r['feature'] else ''}"
        f"{' [disabled: ' + r['disabled_reason'] + ']' if r['disabled_at'] else ''}"
        for r in listed["data"]
    ]
    _emit(args, listed, "\n".join(lines) or "no rules")
    return listed


async def route_remove(
    conn: asyncpg.Connection, args: argparse.Namespace, _: Settings
) -> dict[str, Any]:
    if not await remove_rule(conn, args.rule_id):
        raise OperationError(f"no rule {args.rule_id}")
    result = {"id": args.rule_id, "removed": True}
    _emit(args, result, f"removed {args.rule_id}")
    return result


def _rate(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError("a rate from 0 to 1") from None


def add_commands(commands: Any, run: Runner) -> None:
    """`recovea route add|list|remove` on the `recovea` command's subparsers."""
    route = commands.add_parser("route", help="routing rules").add_subparsers(
        dest="action", required=True
    )
    ra = route.add_parser("add", help="add a routing rule (prints its id)")
    ra.add_argument("--workspace", required=True, help="workspace id")
    ra.add_argument("--match-model", required=True, help="the model requests ask for")
    ra.add_argument("--to", required=True, help="the model to serve them on")
    ra.add_argument("--provider", help="serve on this provider (default: the request's)")
    ra.add_argument("--fallback", action="append", help="a model to try next (repeat, in order)")
    ra.add_argument("--feature", help="only requests with this X-Recovea-Feature")
    ra.add_argument("--shadow", type=_rate, help="share of requests to shadow-evaluate (0..1)")
    ra.add_argument("--match-surface", choices=PROVIDERS, help="only this provider surface")
    ra.add_argument("--match-path", help="only this route, e.g. /v1/chat/completions")
    ra.add_argument("--env", choices=ENVS, help="only keys of this env")
    ra.add_argument("--json", action="store_true", help="print one JSON object")
    ra.set_defaults(run=lambda args: run(route_add, args))
    rl = route.add_parser("list", help="a workspace's routing rules")
    rl.add_argument("--workspace", required=True, help="workspace id")
    rl.add_argument("--json", action="store_true", help="print one JSON object")
    rl.set_defaults(run=lambda args: run(route_list, args))
    rr = route.add_parser("remove", help="remove a routing rule")
    rr.add_argument("rule_id", help="the rule's id")
    rr.add_argument("--json", action="store_true", help="print one JSON object")
    rr.set_defaults(run=lambda args: run(route_remove, args))
