"""The ledger, read back: `/v1/recovea/*` for any rcv_ key of a workspace (results
scoped to it, by query and by row-level security), and the receipt public keys.

| GET /v1/recovea/requests              | the latest rows, newest first (`from`, `to`, `limit`) |
| GET /v1/recovea/requests/{request_id} | the stored row: exactly the request_events columns |
| GET /v1/recovea/receipts/{request_id} | that request's receipt (token and decoded fields) |
| GET /v1/recovea/ledger                | the workspace's chains; `?chain=` one chain, paged |
| GET /v1/recovea/checkpoints           | the signed checkpoint covering a receipt |
| GET /v1/recovea/usage                 | rollup totals grouped by one dimension, or by hour or |
|                                       | UTC day (`group_by=hour` or `day`: spend over time)   |
| GET /.well-known/recovea-receipt-keys | Ed25519 public keys (no auth) |

Rows are written by the drainer, so a request's row and receipt appear within a
flush interval (`RECOVEA_METER_FLUSH_INTERVAL_S`) of its end. The route table is
here; the checkpoints are meter/checkpoint_api.py's, the usage meter/usage_api.py's,
and the query parameters they share are read by meter/api_params.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recovea_proxy.admin.api import bad_request, json_response, keyed, scoped
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import (
    MOMENT,
    UUID,
    Operation,
    Param,
    array,
    boolean,
    declare,
    integer,
    nullable,
    obj,
    string,
)
from recovea_proxy.errors import GatewayError
from recovea_proxy.meter.api_params import int_param, moment
from recovea_proxy.meter.checkpoint_api import (
    CHAIN_ID,
    CHECKPOINT,
    get_checkpoint,
    page_checkpoints,
)
from recovea_proxy.meter.event import COLUMNS
from recovea_proxy.meter.usage_api import get_usage
from recovea_proxy.runtime import Runtime

LEDGER_PAGE_MAX = 10_000
#: the most rows one `GET /v1/recovea/requests` returns
REQUESTS_PAGE_MAX = 500

_TEXT = nullable(string())
_COUNT = nullable(integer())
#: a request_events row as the API returns it (exactly the columns, in JSON)
ROW = obj(
    {
        "request_id": string(pattern="^[0-9a-f]{32}$"),
        "trace_id": string(),
        "customer_id": nullable(UUID),
        "project_id": nullable(UUID),
        "team_id": nullable(UUID),
        "rcv_key_id": nullable(UUID),
        "route_id": nullable(UUID),
        "feature": _TEXT,
        "end_user_id": _TEXT,
        "baseline_model": _TEXT,
        "realized_model": _TEXT,
        "input_tokens": _COUNT,
        "output_tokens": _COUNT,
        "cached_tokens": _COUNT,
        "reasoning_tokens": _COUNT,
        "levers_fired": {
            "type": "object",
            "additionalProperties": string(enum=["hit", "miss", "skip", "error"]),
        },
        "cache_hit": boolean(),
        "cache_type": _TEXT,
        "dedup_singleflight": boolean(),
        "finish_reason": _TEXT,
        "success": nullable(boolean()),
        "fell_back_to_baseline": boolean(),
        "status": string(enum=["success", "error"]),
        "latency_total_ms": {"type": "number"},
        "gateway_overhead_ms": {"type": "number"},
        "provider": string(),
        "env": nullable(string(enum=["live", "test"])),
        "ts": string(format="date-time"),
        "baseline_cost": {"type": "null"},
        "realized_cost": {"type": "null"},
    },
    closed=True,
)
RECEIPT = obj(
    {
        "request_id": string(pattern="^[0-9a-f]{32}$"),
        "chain": string(),
        "seq": integer(minimum=1),
        "kid": string(),
        "token": string(),
    }
)
_REQUEST_ID = Param("request_id", string(), "the request's x-request-id (32 hex digits)")


def _not_found(what: str) -> GatewayError:
    return GatewayError(404, "not_found", f"No {what} with that id in this workspace.")


def _request_id(request: Request) -> uuid.UUID:
    raw = request.path_params["request_id"]
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _not_found("request") from None


def _row_json(row: asyncpg.Record) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in COLUMNS:
        value = row[name]
        if name == "request_id":
            value = value.hex
        elif isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif name == "levers_fired":
            value = orjson.loads(value)
        elif isinstance(value, Decimal):
            value = str(value)
        out[name] = value
    return out


# Each handler's contract is an `Operation` named above it and declared on the line
# after it, not with `@declare`: mutmut (`make mutate`) makes no mutants of a decorated
# function.
GET_REQUEST = Operation(
    "The stored row of one request: exactly the request_events columns",
    ROW,
    path=(_REQUEST_ID,),
    errors=(404,),
)


async def get_request(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    request_id = _request_id(request)
    row = await scoped(
        runtime,
        key,
        lambda c: c.fetchrow(
            f"SELECT {', '.join(COLUMNS)} FROM recovea.request_events"
            " WHERE request_id = $1 AND customer_id = $2::uuid",
            request_id,
            key.customer_id,
        ),
    )
    if row is None:
        raise _not_found("request")
    return json_response(_row_json(row))


declare(GET_REQUEST)(get_request)


LIST_REQUESTS = Operation(
    "The workspace's latest rows in [from, to), newest first",
    obj(
        {
            "object": {"const": "list"},
            "from": string(format="date-time"),
            "to": string(format="date-time"),
            "data": array(ROW),
            "has_more": boolean(),
        }
    ),
    query=(
        Param("from", MOMENT, "start (default: 24 hours before to)"),
        Param("to", MOMENT, "end, exclusive (default: now)"),
        Param(
            "limit",
            integer(minimum=0, maximum=REQUESTS_PAGE_MAX),
            "rows per answer (default 50; 0 is read as 1)",
        ),
    ),
    errors=(400,),
)


async def list_requests(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    """The workspace's latest rows in [from, to), newest first: exactly the columns of
    `GET /v1/recovea/requests/{id}`, at most `limit` of them."""
    now = datetime.now(UTC)
    until = moment(request, "to", now)
    since = moment(request, "from", until - timedelta(days=1))
    if since >= until:
        raise bad_request("from must be before to.")
    limit = int_param(request, "limit", 50, REQUESTS_PAGE_MAX) or 1
    rows = await scoped(
        runtime,
        key,
        lambda c: c.fetch(
            f"SELECT {', '.join(COLUMNS)} FROM recovea.request_events"
            " WHERE customer_id = $1::uuid AND ts >= $2 AND ts < $3"
            " ORDER BY ts DESC, request_id DESC LIMIT $4",
            key.customer_id,
            since,
            until,
            limit + 1,
        ),
    )
    return json_response(
        {
            "object": "list",
            "from": since.isoformat(),
            "to": until.isoformat(),
            "data": [_row_json(row) for row in rows[:limit]],
            "has_more": len(rows) > limit,
        }
    )


declare(LIST_REQUESTS)(list_requests)


def _receipt_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "request_id": row["request_id"].hex,
        "chain": row["chain_id"],
        "seq": row["seq"],
        "kid": row["kid"],
        "token": row["token"],
    }


GET_RECEIPT = Operation("The receipt of one request", RECEIPT, path=(_REQUEST_ID,), errors=(404,))


async def get_receipt(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    request_id = _request_id(request)
    row = await scoped(
        runtime,
        key,
        lambda c: c.fetchrow(
            "SELECT request_id, chain_id, seq, kid, token FROM recovea.receipts"
            " WHERE request_id = $1 AND customer_id = $2::uuid",
            request_id,
            key.customer_id,
        ),
    )
    if row is None:
        raise _not_found("receipt")
    return json_response(_receipt_json(row))


declare(GET_RECEIPT)(get_receipt)


# One statement, so one snapshot: the page and the chain's first and last seq agree
# even while the drainer writes more of the chain.
_CHAIN_PAGE = """
WITH bounds AS (
  SELECT min(seq) AS first_seq, max(seq) AS last_seq FROM recovea.receipts
  WHERE customer_id = $1::uuid AND chain_id = $2
)
SELECT b.first_seq, b.last_seq, r.request_id, r.chain_id, r.seq, r.kid, r.token
FROM bounds b LEFT JOIN LATERAL (
  SELECT request_id, chain_id, seq, kid, token FROM recovea.receipts
  WHERE customer_id = $1::uuid AND chain_id = $2 AND seq > $3 ORDER BY seq LIMIT $4
) r ON true
ORDER BY r.seq
"""


async def _chains(runtime: Runtime, key: KeyRecord) -> Response:
    rows = await scoped(
        runtime,
        key,
        lambda c: c.fetch(
            "SELECT chain_id, min(seq) AS first_seq, max(seq) AS last_seq, count(*) AS n,"
            " min(ts) AS first_ts, max(ts) AS last_ts FROM recovea.receipts"
            " WHERE customer_id = $1::uuid GROUP BY chain_id ORDER BY min(ts)",
            key.customer_id,
        ),
    )
    chains = [
        {
            "chain": row["chain_id"],
            "first_seq": row["first_seq"],
            "last_seq": row["last_seq"],
            "receipts": row["n"],
            "first_ts": row["first_ts"].isoformat(),
            "last_ts": row["last_ts"].isoformat(),
        }
        for row in rows
    ]
    return json_response({"object": "list", "data": chains})


GET_LEDGER = Operation(
    "The workspace's receipt chains; with chain=, one page of that chain",
    {
        "oneOf": [
            obj(
                {
                    "object": {"const": "list"},
                    "data": array(
                        obj(
                            {
                                "chain": string(),
                                "first_seq": integer(),
                                "last_seq": integer(),
                                "receipts": integer(),
                                "first_ts": string(format="date-time"),
                                "last_ts": string(format="date-time"),
                            }
                        )
                    ),
                }
            ),
            obj(
                {
                    "object": {"const": "recovea-chain-v1"},
                    "chain": string(),
                    "first_seq": nullable(integer()),
                    "last_seq": nullable(integer()),
                    "receipts": array(
                        obj({k: v for k, v in RECEIPT["properties"].items() if k != "chain"})
                    ),
                    "has_more": boolean(),
                    "next_after_seq": nullable(integer()),
                    "checkpoints": array(CHECKPOINT),
                }
            ),
        ]
    },
    query=(
        Param("chain", string(pattern="^[A-Za-z0-9_-]{1,128}$"), "a chain id"),
        Param("after_seq", integer(minimum=0, maximum=2**62), "receipts after this seq"),
        Param("limit", integer(minimum=0, maximum=LEDGER_PAGE_MAX), "receipts per page"),
    ),
    errors=(400,),
)


async def get_ledger(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    """The workspace's chains; with `chain=`, one page of that chain (`recovea-chain-v1`)
    and the chain's stored first and last seq, so a verifier can tell a cut head or tail,
    and its signed checkpoints after `after_seq` (up to the page's last receipt when more
    pages follow)."""
    chain = request.query_params.get("chain")
    after = int_param(request, "after_seq", 0, 2**62)
    limit = int_param(request, "limit", 1000, LEDGER_PAGE_MAX) or 1
    if not chain:
        return await _chains(runtime, key)
    if not CHAIN_ID.fullmatch(chain):
        raise bad_request("chain must be a chain id.")

    async def read(c: asyncpg.Connection) -> tuple[list[asyncpg.Record], list[dict[str, Any]]]:
        rows = await c.fetch(_CHAIN_PAGE, key.customer_id, chain, after, limit + 1)
        found = [row for row in rows if row["seq"] is not None]
        until = found[limit - 1]["seq"] if len(found) > limit else None
        return rows, await page_checkpoints(c, key.customer_id, chain, after, until)

    rows, checkpoints = await scoped(runtime, key, read)
    found = [row for row in rows if row["seq"] is not None]
    more = len(found) > limit
    page = [_receipt_json(row) for row in found[:limit]]
    return json_response(
        {
            "object": "recovea-chain-v1",
            "chain": chain,
            "first_seq": rows[0]["first_seq"],
            "last_seq": rows[0]["last_seq"],
            "receipts": [{k: v for k, v in r.items() if k != "chain"} for r in page],
            "has_more": more,
            "next_after_seq": page[-1]["seq"] if more else None,
            "checkpoints": checkpoints,
        }
    )


declare(GET_LEDGER)(get_ledger)


async def receipt_keys(request: Request) -> Response:
    """The receipt public keys, from memory; no auth."""
    runtime: Runtime = request.state.runtime
    body = await runtime.published_keys.current()
    if not body:
        return json_response(
            {"error": {"message": "The key store is unreachable.", "code": "store_unavailable"}},
            503,
        )
    return Response(
        body,
        media_type="application/json",
        headers={"cache-control": "public, max-age=300"},
    )


LEDGER_ROUTES = [
    Route("/v1/recovea/requests", keyed(list_requests, admin_only=False)),
    Route("/v1/recovea/requests/{request_id}", keyed(get_request, admin_only=False)),
    Route("/v1/recovea/receipts/{request_id}", keyed(get_receipt, admin_only=False)),
    Route("/v1/recovea/ledger", keyed(get_ledger, admin_only=False)),
    Route("/v1/recovea/checkpoints", keyed(get_checkpoint, admin_only=False)),
    Route("/v1/recovea/usage", keyed(get_usage, admin_only=False)),
    Route("/.well-known/recovea-receipt-keys", receipt_keys),
]
