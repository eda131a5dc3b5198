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
import uuid
from collections.abc import Awaitable, Callable, Mapping
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
    forget_workspace_keys,
    parse_id,
    scope,
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
from recovea_proxy.pricing.overrides import workspace_prices
from recovea_proxy.route_table import compatible
from recovea_proxy.runtime import Runtime

FALLBACKS_MAX = 8
RULES_MAX = 1000
ENVS = ("live", "test")
_FIELDS = (
    "match_surface",
    "match_path",
    "match_model",
    "feature",
    "env",
    "provider",
    "to",
    "fallbacks",
    "shadow",
)
_COLUMNS = (
    "id, match_surface, match_path, match_model, feature, env, provider, to_model,"
    " fallbacks, shadow_rate, disabled_at, disabled_reason"
)
_SHADOW_STATS = (
    "SELECT rule_id, routed_model, baseline_model, n, disagreements, verdict"
    " FROM recovea.shadow_stats WHERE customer_id = $1::uuid"
    " ORDER BY rule_id, routed_model, baseline_model"
)
_SHADOW_SPEND = (
    "SELECT day, usd, calls FROM recovea.shadow_spend WHERE customer_id = $1::uuid"
    " AND day = (now() AT TIME ZONE 'UTC')::date"
)


def _json(row: asyncpg.Record, stats: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    disabled = row["disabled_at"]
    return {
        "id": str(row["id"]),
        "match_surface": row["match_surface"],
        "match_path": row["match_path"],
        "match_model": row["match_model"],
        "feature": row["feature"],
        "env": row["env"],
        "provider": row["provider"],
        "to": row["to_model"],
        "fallbacks": list(row["fallbacks"]),
        "shadow": row["shadow_rate"],
        "disabled_at": disabled.isoformat() if disabled is not None else None,
        "disabled_reason": row["disabled_reason"],
        "shadow_results": stats or [],
    }


async def _with_shadow(conn: asyncpg.Connection, workspace: str) -> dict[str, Any]:
    """The workspace's rules, each with its shadow results (counts and verdict per
    model pair), and its shadow spend today."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM recovea.route_rules WHERE customer_id = $1::uuid"
        " ORDER BY created_at, id",
        workspace,
    )
    stats: dict[str, list[dict[str, Any]]] = {}
    for stat in await conn.fetch(_SHADOW_STATS, workspace):
        stats.setdefault(str(stat["rule_id"]), []).append(
            {
                "routed_model": stat["routed_model"],
                "baseline_model": stat["baseline_model"],
                "n": stat["n"],
                "disagreements": stat["disagreements"],
                "verdict": stat["verdict"],
            }
        )
    spend = await conn.fetchrow(_SHADOW_SPEND, workspace)
    return {
        "data": [_json(row, stats.get(str(row["id"]))) for row in rows],
        "shadow_spend_today": {
            "usd": str(spend["usd"]) if spend is not None else "0",
            "calls": spend["calls"] if spend is not None else 0,
        },
    }


def _text(value: object, what: str, limit: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= limit or not value.isprintable():
        raise OperationError(f"{what} must be 1 to {limit} printable characters")
    return value


def checked_rule(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The rule `spec` describes, its shape checked (the database checks come next)."""
    unknown = set(spec) - set(_FIELDS)
    if unknown:
        raise OperationError(f"unknown field(s): {', '.join(sorted(unknown))[:200]}")
    rule: dict[str, Any] = {
        "match_model": _text(spec.get("match_model"), "match_model", MODEL_MAX, required=True),
        "to": _text(spec.get("to"), "to", MODEL_MAX, required=True),
        "feature": _text(spec.get("feature"), "feature", TAG_MAX),
        "match_path": _text(spec.get("match_path"), "match_path", 256),
    }
    for name, allowed in (
        ("match_surface", PROVIDERS),
        ("provider", PROVIDERS),
        ("env", ENVS),
    ):
        value = spec.get(name)
        if value is not None and value not in allowed:
            raise OperationError(f"{name} must be one of {', '.join(allowed)}")
        rule[name] = value
    path = rule["match_path"]
    if path is not None and not path.startswith("/v1/"):
        raise OperationError("match_path must be a route template such as /v1/chat/completions")
    fallbacks = spec.get("fallbacks") or []
    if not isinstance(fallbacks, list) or len(fallbacks) > FALLBACKS_MAX:
        raise OperationError(f"fallbacks must be a list of at most {FALLBACKS_MAX} models")
    rule["fallbacks"] = [_text(model, "each fallback", MODEL_MAX) for model in fallbacks]
    if len(set(rule["fallbacks"]) | {rule["to"]}) != len(rule["fallbacks"]) + 1:
        raise OperationError("to and the fallbacks must name each model once")
    shadow = spec.get("shadow")
    shadow = 0.0 if shadow is None else shadow
    if type(shadow) not in (int, float) or not 0 <= shadow <= 1:
        raise OperationError("shadow must be a rate from 0 to 1")
    rule["shadow"] = float(shadow)
    surface, provider = rule["match_surface"], rule["provider"]
    if surface is not None and provider is not None and not compatible(surface, provider):
        raise OperationError(
            f"a rule from the {surface} surface to {provider} would need translating between"
            " wire formats, which the gateway does not do (only openai and openrouter share one)"
        )
    if rule["to"] == rule["match_model"] and provider in (None, surface):
        raise OperationError("to names the model the rule matches: the rule would change nothing")
    return rule


async def add_rule(
    conn: asyncpg.Connection, workspace_id: str, spec: Mapping[str, Any]
) -> dict[str, Any]:
    """Check and store one rule; the rule as stored, with its new id."""
    rule = checked_rule(spec)
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        if not await conn.fetchval(
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1", workspace
        ):
            raise OperationError(f"no workspace {workspace}")
        provider = rule["provider"]
        if provider is not None and not await conn.fetchval(
            "SELECT 1 FROM recovea.provider_keys WHERE customer_id = $1 AND provider = $2",
            workspace,
            provider,
        ):
            raise OperationError(
                f"this workspace has no {provider} key; store one with `recovea provider-key set`"
            )
        prices = await workspace_prices(conn, workspace)
        for model in (rule["to"], *rule["fallbacks"]):
            if prices.price_for(model) is None:
                raise OperationError(
                    f"model {model[:80]!r} has no price; add one to the workspace's prices"
                    " before routing to it"
                )
        if (
            await conn.fetchval(
                "SELECT count(*) FROM recovea.route_rules WHERE customer_id = $1", workspace
            )
            >= RULES_MAX
        ):
            raise OperationError(f"a workspace holds at most {RULES_MAX} rules")
        try:
            row = await conn.fetchrow(
                "INSERT INTO recovea.route_rules (id, customer_id, match_surface, match_path,"
                " match_model, feature, env, provider, to_model, fallbacks, shadow_rate)"
                f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLUMNS}",
                uuid.uuid4(),
                workspace,
                rule["match_surface"],
                rule["match_path"],
                rule["match_model"],
                rule["feature"],
                rule["env"],
                provider,
                rule["to"],
                rule["fallbacks"],
                rule["shadow"],
            )
        except asyncpg.UniqueViolationError:
            raise OperationError(
                "another rule matches exactly these requests; remove it first"
            ) from None
        await forget_workspace_keys(conn, workspace)
    return _json(row)


async def list_rules(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """The workspace's rules, oldest first, with their shadow results and spend."""
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        listed: dict[str, Any] = await _with_shadow(conn, str(workspace))
    return listed


async def remove_rule(
    conn: asyncpg.Connection, rule_id: str, workspace_id: str | None = None
) -> bool:
    """Remove a rule (of `workspace_id` only, when given); whether there was one."""
    parsed = parse_id(rule_id, "rule id")
    async with conn.transaction():
        if workspace_id is not None:
            await scope(conn, workspace_id)
        workspace = await conn.fetchval(
            "DELETE FROM recovea.route_rules WHERE id = $1"
            " AND ($2::uuid IS NULL OR customer_id = $2::uuid) RETURNING customer_id",
            parsed,
            workspace_id,
        )
        if workspace is None:
            return False
        await forget_workspace_keys(conn, workspace)
    return True


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
    listed = await scoped(runtime, key, lambda conn: _with_shadow(conn, key.customer_id))
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
