"""Reconciliation over HTTP. Nothing here decrypts a report key: keys are sealed on
the way in and shown by their last four characters on the way out.

| GET    /v1/recovea/reconciliation?from=…&to=…  | the comparison, per day, provider and model |
|                                                | (any rcv_ key of the workspace, as usage)   |
| GET    /admin/v1/report-keys                   | the workspace's report keys (last four)     |
| PUT    /admin/v1/report-keys/{provider}        | `{"key": …}`: store (or replace) one        |
| DELETE /admin/v1/report-keys/{provider}        | remove one (its figures stay)               |

`from` and `to` are ISO 8601 dates (a time is taken as its UTC day); `to` is
exclusive. By default the last RECOVEA_RECONCILE_DAYS days up to today.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import admin, bad_request, declared_body, json_response, keyed, scoped
from recovea_proxy.admin.operations import PROVIDERS
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    MONEY,
    UUID,
    Operation,
    Param,
    array,
    boolean,
    declare,
    integer,
    listing,
    nullable,
    obj,
    string,
)
from recovea_proxy.errors import GatewayError
from recovea_proxy.meter.rollup import parse_moment
from recovea_proxy.reconcile.compare import reconciliation
from recovea_proxy.reconcile.report_keys import (
    REPORT_PROVIDERS,
    check_provider,
    delete_report_key,
    list_report_keys,
    set_report_key,
)
from recovea_proxy.runtime import Runtime

#: the longest range one request may ask for
MAX_DAYS = 366


def _day(request: Request, name: str, default: date) -> date:
    raw = request.query_params.get(name)
    if not raw:
        return default
    try:
        return parse_moment(raw).astimezone(UTC).date()
    except ValueError:
        raise bad_request(f"{name} must be an ISO 8601 date.") from None


_SIDE = {
    "requests": nullable(integer()),
    "input_tokens": integer(),
    "cached_tokens": integer(),
    "output_tokens": integer(),
    "cost_usd": nullable(MONEY),
}
_REPORT_PROVIDER = Param("provider", string(enum=list(REPORT_PROVIDERS)))


@declare(
    Operation(
        "Per day, provider and model: the provider's reported usage against the ledger's",
        obj(
            {
                "object": {"const": "reconciliation"},
                "workspace_id": UUID,
                "from": string(format="date"),
                "to": string(format="date"),
                "tolerance_pct": {"type": "number"},
                "data": array(
                    obj(
                        {
                            "day": string(format="date"),
                            "provider": string(),
                            "model": string(),
                            "verdict": string(),
                            "settled": boolean(),
                            "provider_reported": obj(_SIDE),
                            "ledger": obj({**_SIDE, "unpriced": integer()}),
                            "difference": obj(
                                {**_SIDE, "input_tokens": integer(), "requests": _SIDE["requests"]}
                            ),
                        },
                        required=(
                            "day",
                            "provider",
                            "model",
                            "verdict",
                            "provider_reported",
                            "ledger",
                        ),
                    )
                ),
                "polls": array({"type": "object"}),
            }
        ),
        query=(
            Param("from", string(format="date"), "first day (default: RECOVEA_RECONCILE_DAYS ago)"),
            Param("to", string(format="date"), "last day, exclusive (default: tomorrow)"),
        ),
        errors=(400,),
    )
)
async def get_reconciliation(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    settings = runtime.settings
    until = _day(request, "to", datetime.now(UTC).date() + timedelta(days=1))
    since = _day(request, "from", until - timedelta(days=settings.reconcile_days))
    if since >= until:
        raise bad_request("from must be before to.")
    if (until - since).days > MAX_DAYS:
        raise bad_request(f"from and to may be at most {MAX_DAYS} days apart.")
    result = await scoped(
        runtime,
        key,
        lambda conn: reconciliation(
            conn,
            uuid.UUID(key.customer_id),
            since,
            until,
            tolerance_pct=settings.reconcile_tolerance_pct,
        ),
    )
    return json_response(result)


def _provider(request: Request) -> str:
    provider: str = request.path_params["provider"]
    if provider not in PROVIDERS:
        raise GatewayError(404, "not_found", f"Unknown provider; use one of {PROVIDERS}.")
    return check_provider(provider)


@declare(
    Operation(
        "The workspace's usage-report keys (last four characters only)",
        listing(
            obj(
                {
                    "provider": string(),
                    "last_four": string(),
                    "backend": string(),
                    "created_at": string(format="date-time"),
                }
            )
        ),
    )
)
async def get_report_keys(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    async with runtime.pool.acquire() as conn:
        keys = await list_report_keys(conn, key.customer_id)
    return json_response({"data": keys})


@declare(
    Operation(
        "Store (or replace) the workspace's usage-report key for a provider",
        obj({"provider": string(), "last_four": string()}),
        body=obj({"key": string(minLength=1, maxLength=4096)}, closed=True),
        path=(_REPORT_PROVIDER,),
        errors=(400, 404),
    )
)
async def put_report_key(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    provider = _provider(request)
    body = declared_body(request)
    async with runtime.pool.acquire() as conn:
        stored = await set_report_key(
            conn, runtime.keyring, key.customer_id, provider, body.get("key") or ""
        )
    return json_response({"provider": provider, "last_four": stored["last_four"]})


@declare(
    Operation(
        "Remove the workspace's usage-report key for a provider (its figures stay)",
        obj({"provider": string(), "deleted": {"const": True}}),
        path=(_REPORT_PROVIDER,),
        errors=(400, 404),
    )
)
async def delete_report_key_route(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    provider = _provider(request)
    async with runtime.pool.acquire() as conn:
        deleted = await delete_report_key(conn, key.customer_id, provider)
    if not deleted:
        raise GatewayError(404, "not_found", "No report key for that provider in this workspace.")
    return json_response({"provider": provider, "deleted": True})


RECONCILE_ROUTES = [
    Route("/v1/recovea/reconciliation", keyed(get_reconciliation, admin_only=False)),
    Route("/admin/v1/report-keys", admin(get_report_keys), methods=["GET"]),
    Route("/admin/v1/report-keys/{provider}", admin(put_report_key), methods=["PUT"]),
    Route("/admin/v1/report-keys/{provider}", admin(delete_report_key_route), methods=["DELETE"]),
]
