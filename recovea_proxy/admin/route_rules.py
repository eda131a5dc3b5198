"""Routing rules as stored: the checks a rule passes before it is written (malformed,
unknown or keyless provider, a translation between wire formats, a model with no
price, a duplicate match) and the SQL that adds, lists and removes them. The admin
API and the `recovea route` commands (`admin.routes`) call these."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg

from recovea_proxy.admin.operations import (
    PROVIDERS,
    OperationError,
    forget_workspace_keys,
    parse_id,
    scope,
)
from recovea_proxy.clean import MODEL_MAX, TAG_MAX
from recovea_proxy.pricing.overrides import workspace_prices
from recovea_proxy.route_table import compatible

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


async def rules_with_shadow(conn: asyncpg.Connection, workspace: str) -> dict[str, Any]:
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
        listed: dict[str, Any] = await rules_with_shadow(conn, str(workspace))
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
