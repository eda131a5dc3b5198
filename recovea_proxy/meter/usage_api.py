"""`GET /v1/recovea/usage`: the workspace's rollups read back, for any rcv_ key of the
workspace (scoped to it, by query and by row-level security).

Requests, tokens, costs and savings in [from, to) (by default `to` is now and `from` 30
days before it), grouped by one dimension, most requests first, or by hour or UTC day
(`group_by=hour` or `day`: spend over time, in time order), and their totals. Costs are
decimal strings, null where a model has no price. Usage reflects the last rollup
(`RECOVEA_MAINTENANCE_INTERVAL_S`, or `recovea rollup`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from recovea_proxy.admin.api import bad_request, json_response, scoped
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    MOMENT,
    MONEY,
    Operation,
    Param,
    array,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.meter.api_params import moment
from recovea_proxy.meter.rollup import COUNTS
from recovea_proxy.runtime import Runtime

_GROUPS = {
    "feature": "r.feature",
    "model": "r.baseline_model",
    "realized_model": "r.realized_model",
    "end_user": "r.end_user_id",
    "project": "coalesce(p.name, r.project_id::text)",
    "team": "coalesce(t.name, r.team_id::text)",
    "route": "coalesce(ro.provider || ' ' || ro.path, r.route_id::text)",
    "provider": "r.provider",
    "key": "r.rcv_key_id::text",
    # over time: the rollup's hours, or their UTC days; ordered by time, not by requests
    "hour": "r.hour",
    "day": "date_trunc('day', r.hour, 'UTC')",
}
_OVER_TIME = ("hour", "day")
_SUMS = (*COUNTS, "unpriced")
_TEXT = nullable(string())
_COUNT = nullable(integer())
_USAGE_SUMS = {name: _COUNT for name in (*COUNTS, "unpriced")}
_USAGE_MONEY = {
    "baseline_cost_usd": nullable(MONEY),
    "realized_cost_usd": nullable(MONEY),
    "savings_usd": nullable(MONEY),
}


# Each handler's contract is an `Operation` named above it and declared on the line
# after it, not with `@declare`: mutmut (`make mutate`) makes no mutants of a decorated
# function.
GET_USAGE = Operation(
    "Priced rollups grouped by one dimension: requests, tokens, costs, savings",
    obj(
        {
            "object": {"const": "usage"},
            "group_by": string(enum=list(_GROUPS)),
            "from": string(format="date-time"),
            "to": string(format="date-time"),
            "data": array(obj({"key": _TEXT, **_USAGE_SUMS, **_USAGE_MONEY})),
            "totals": obj({**_USAGE_SUMS, **_USAGE_MONEY}),
        }
    ),
    query=(
        Param("group_by", string(enum=list(_GROUPS)), "the dimension (default model)"),
        Param("from", MOMENT, "start (default: 30 days before to)"),
        Param("to", MOMENT, "end, exclusive (default: now)"),
    ),
    errors=(400,),
)


async def get_usage(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    group_by = request.query_params.get("group_by", "model")
    expression = _GROUPS.get(group_by)
    if expression is None:
        raise bad_request(f"group_by must be one of {', '.join(_GROUPS)}.")
    now = datetime.now(UTC)
    until = moment(request, "to", now)
    since = moment(request, "from", until - timedelta(days=30))
    if since >= until:
        raise bad_request("from must be before to.")
    sums = ", ".join(f"sum(r.{name})::bigint AS {name}" for name in _SUMS)
    order = "1" if group_by in _OVER_TIME else "sum(r.requests) DESC, 1"
    rows = await scoped(
        runtime,
        key,
        lambda c: c.fetch(
            f"SELECT {expression} AS key, {sums},"
            " sum(r.baseline_cost) AS baseline_cost, sum(r.realized_cost) AS realized_cost"
            " FROM recovea.usage_rollups r"
            " LEFT JOIN recovea.projects p ON p.id = r.project_id"
            " LEFT JOIN recovea.teams t ON t.id = r.team_id"
            " LEFT JOIN recovea.routes ro ON ro.route_id = r.route_id"
            " WHERE r.customer_id = $1::uuid AND r.hour >= $2 AND r.hour < $3"
            f" GROUP BY 1 ORDER BY {order}",
            key.customer_id,
            since,
            until,
        ),
    )
    data = [_usage_json(row, _group_key(row["key"])) for row in rows]
    totals = _totals(data)
    return json_response(
        {
            "object": "usage",
            "group_by": group_by,
            "from": since.isoformat(),
            "to": until.isoformat(),
            "data": data,
            "totals": totals,
        }
    )


declare(GET_USAGE)(get_usage)


def _group_key(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _usage_json(row: Any, key: Any) -> dict[str, Any]:
    baseline, realized = row["baseline_cost"], row["realized_cost"]
    savings = baseline - realized if baseline is not None and realized is not None else None
    out: dict[str, Any] = {"key": key}
    out.update({name: row[name] for name in _SUMS})
    out["baseline_cost_usd"] = _money(baseline)
    out["realized_cost_usd"] = _money(realized)
    out["savings_usd"] = _money(savings)
    return out


def _totals(data: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {name: sum(item[name] for item in data) for name in _SUMS}
    for name in ("baseline_cost_usd", "realized_cost_usd", "savings_usd"):
        values = [Decimal(item[name]) for item in data if item[name] is not None]
        totals[name] = _money(sum(values, Decimal(0))) if values else None
    return totals
