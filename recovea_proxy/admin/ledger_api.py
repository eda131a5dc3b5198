"""`/admin/v1/*` routes for the ledger: price overrides, retention, deletion.

| GET    /admin/v1/prices         | the effective price table (shipped + overrides) |
| PUT    /admin/v1/prices/{model} | override every rate of a model (`pricing.overrides`) |
| DELETE /admin/v1/prices/{model} | drop an override |
| PATCH  /admin/v1/workspace      | set `retention_days` (days, or null: the plan's) |
| DELETE /admin/v1/workspace      | delete the workspace and all it owns (`?confirm=<id>`) |
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, scoped
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    UUID,
    Operation,
    Param,
    boolean,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.errors import GatewayError
from recovea_proxy.meter.retention import PLAN_RETENTION_DAYS, delete_workspace
from recovea_proxy.pricing.overrides import override_entry, read_overrides, write_override
from recovea_proxy.pricing.rates import RATE_FIELDS, Price
from recovea_proxy.pricing.table import shipped_prices
from recovea_proxy.runtime import Runtime

RATE = {"type": ["string", "number", "null"], "description": "USD per 1M tokens"}
PRICE = obj(
    {
        **{name: string(description="USD per 1M tokens") for name in RATE_FIELDS},
        "long_context": {"type": ["object", "null"]},
        "service_tiers": {"type": "object"},
        "source": string(),
        "as_of": nullable(string()),
    },
    required=(*RATE_FIELDS, "source"),
)
MODEL_PATH = Param("model", string(minLength=1, maxLength=200), "a model name (may hold /)")


def _price_json(price: Price, overridden: bool) -> dict[str, Any]:
    return {**price.as_json(), "override": overridden}


@declare(
    Operation(
        "The effective price table: the shipped prices and the workspace's overrides",
        obj(
            {
                "unit": string(),
                "version": string(),
                "data": {
                    "type": "object",
                    "additionalProperties": {
                        **PRICE,
                        "properties": {**PRICE["properties"], "override": boolean()},
                    },
                },
            }
        ),
    )
)
async def list_prices(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    overrides = await scoped(runtime, key, lambda c: read_overrides(c, key.customer_id))
    shipped = shipped_prices()
    data = {model: _price_json(price, False) for model, price in shipped.entries().items()}
    data.update((model, _price_json(price, True)) for model, price in overrides.items())
    return json_response({"unit": "USD per 1M tokens", "version": shipped.version, "data": data})


def _model(request: Request) -> str:
    model: str = request.path_params["model"]
    if not 1 <= len(model) <= 200 or not model.isprintable():
        raise bad_request("The model name must be 1 to 200 printable characters.")
    return model


@declare(
    Operation(
        "Override every rate of a model for the workspace",
        obj({**PRICE["properties"], "model": string()}, required=("model", *RATE_FIELDS)),
        body=obj(
            {
                **{name: RATE for name in RATE_FIELDS},
                "long_context": {"type": ["object", "null"]},
                "service_tiers": {"type": ["object", "null"]},
            },
            required=("input", "cached_input", "output"),
            closed=True,
        ),
        path=(MODEL_PATH,),
    )
)
async def set_price(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    model = _model(request)
    body = declared_body(request)
    try:
        price = override_entry(model, body, datetime.now(UTC).date().isoformat())
    except ValueError as exc:
        raise bad_request(str(exc)[:300]) from None
    await scoped(runtime, key, lambda c: write_override(c, key.customer_id, model, price))
    return json_response({"model": model, **price.as_json()})


@declare(
    Operation(
        "Drop the workspace's price override of a model",
        obj({"model": string(), "deleted": {"const": True}}),
        path=(MODEL_PATH,),
        errors=(400, 404),
    )
)
async def delete_price(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    model = _model(request)
    status = await scoped(
        runtime,
        key,
        lambda c: c.execute(
            "DELETE FROM recovea.model_prices WHERE customer_id = $1::uuid AND model = $2",
            key.customer_id,
            model,
        ),
    )
    if status == "DELETE 0":
        raise GatewayError(404, "not_found", "No price override for that model.")
    return json_response({"model": model, "deleted": True})


@declare(
    Operation(
        "Set how long the workspace's rows are kept (null: its plan's default)",
        obj(
            {
                "retention_days": nullable(integer()),
                "effective_retention_days": integer(),
            }
        ),
        body=obj(
            {"retention_days": nullable(integer(minimum=1, maximum=3650))},
            closed=True,
        ),
    )
)
async def set_retention(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    body = declared_body(request)
    days = body.get("retention_days")
    if days is not None and (
        not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 3650
    ):
        raise bad_request("retention_days must be an integer from 1 to 3650, or null.")
    row = await scoped(
        runtime,
        key,
        lambda c: c.fetchrow(
            "UPDATE recovea.workspaces SET retention_days = $2 WHERE customer_id = $1::uuid"
            " RETURNING plan, retention_days",
            key.customer_id,
            days,
        ),
    )
    effective = row["retention_days"] or PLAN_RETENTION_DAYS[row["plan"]]
    return json_response(
        {"retention_days": row["retention_days"], "effective_retention_days": effective}
    )


@declare(
    Operation(
        "Delete the workspace and everything it owns",
        obj(
            {
                "id": UUID,
                "deleted": {"type": "object", "additionalProperties": integer()},
            }
        ),
        query=(
            Param(
                "confirm",
                UUID,
                "the workspace's own id, to confirm",
                required=True,
            ),
        ),
        errors=(400,),
    )
)
async def delete_own_workspace(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    if request.query_params.get("confirm") != key.customer_id:
        raise bad_request("Deleting a workspace removes all its data: add ?confirm=<workspace id>.")
    async with runtime.pool.acquire() as conn:
        counts = await delete_workspace(conn, key.customer_id)
    return json_response({"id": key.customer_id, "deleted": counts})


LEDGER_ADMIN_ROUTES = [
    Route("/admin/v1/prices", admin(list_prices), methods=["GET"]),
    Route("/admin/v1/prices/{model:path}", admin(set_price), methods=["PUT"]),
    Route("/admin/v1/prices/{model:path}", admin(delete_price), methods=["DELETE"]),
    Route("/admin/v1/workspace", admin(set_retention), methods=["PATCH"]),
    Route("/admin/v1/workspace", admin(delete_own_workspace), methods=["DELETE"]),
]
