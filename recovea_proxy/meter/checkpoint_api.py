"""`GET /v1/recovea/checkpoints`: the signed checkpoint covering a receipt of a chain
(RECOVEA_RECEIPT_SIGNING=checkpoint), for any rcv_ key of the workspace, scoped to it
like the rest of the ledger; and the checkpoints the ledger export lists beside one
page of a chain.

A checkpoint at seq M covers every receipt of its chain up to M: their `prev` links
lead from each to receipt M, whose hash is the checkpoint's signed `head`. So the
checkpoint covering receipt N is the chain's first stored checkpoint with seq ≥ N.
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from recovea_proxy.admin.api import bad_request, json_response, scoped
from recovea_proxy.auth.resolver import KeyRecord
from recovea_proxy.contract import Operation, Param, declare, integer, obj, string
from recovea_proxy.errors import GatewayError
from recovea_proxy.runtime import Runtime

#: what a chain id may look like (the gateway's are 32 hex digits)
CHAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
SEQ_MAX = 2**62
CHECKPOINT = obj(
    {
        "object": {"const": "recovea-checkpoint-v1"},
        "chain": string(),
        "seq": integer(minimum=1),
        "kid": string(),
        "token": string(),
        "created_at": string(format="date-time"),
    }
)
_COVERING = (
    "SELECT chain_id, seq, kid, token, created_at FROM recovea.receipt_checkpoints"
    " WHERE customer_id = $1::uuid AND chain_id = $2 AND seq >= $3 ORDER BY seq LIMIT 1"
)
# The checkpoints of one ledger page: those after the page's after_seq, up to its last
# receipt when more pages follow (so pages in order list each checkpoint once).
_OF_PAGE = (
    "SELECT chain_id, seq, kid, token, created_at FROM recovea.receipt_checkpoints"
    " WHERE customer_id = $1::uuid AND chain_id = $2 AND seq > $3 AND seq <= $4 ORDER BY seq"
)


def checkpoint_json(row: asyncpg.Record) -> dict[str, Any]:
    """A stored checkpoint as the API returns it."""
    return {
        "object": "recovea-checkpoint-v1",
        "chain": row["chain_id"],
        "seq": row["seq"],
        "kid": row["kid"],
        "token": row["token"],
        "created_at": row["created_at"].isoformat(),
    }


async def page_checkpoints(
    conn: asyncpg.Connection, workspace: str, chain: str, after: int, until: int | None
) -> list[dict[str, Any]]:
    """The chain's checkpoints with seq in (after, until] (no upper end when None)."""
    rows = await conn.fetch(_OF_PAGE, workspace, chain, after, until or SEQ_MAX)
    return [checkpoint_json(row) for row in rows]


def _seq(request: Request) -> int:
    raw = request.query_params.get("seq", "1")
    # isdecimal, not isdigit: "²" is a digit that int() cannot read
    if not raw.isdecimal() or len(raw) > 19 or not 1 <= int(raw) <= SEQ_MAX:
        raise bad_request(f"seq must be an integer from 1 to {SEQ_MAX}.")
    return int(raw)


@declare(
    Operation(
        "The signed checkpoint covering receipt seq of a chain: the first with seq ≥ seq",
        CHECKPOINT,
        query=(
            Param("chain", string(pattern="^[A-Za-z0-9_-]{1,128}$"), "a chain id (required)"),
            Param("seq", integer(minimum=1, maximum=SEQ_MAX), "a receipt's seq (default 1)"),
        ),
        errors=(400, 404),
    )
)
async def get_checkpoint(request: Request, runtime: Runtime, key: KeyRecord) -> Response:
    """The first stored checkpoint of the chain at or after `seq`; 404 while none is."""
    chain = request.query_params.get("chain", "")
    if not CHAIN_ID.fullmatch(chain):
        raise bad_request("chain must be a chain id.")
    seq = _seq(request)
    row = await scoped(runtime, key, lambda c: c.fetchrow(_COVERING, key.customer_id, chain, seq))
    if row is None:
        raise GatewayError(
            404,
            "not_found",
            "No checkpoint covers that receipt in this workspace yet (one is signed within"
            " the gateway's checkpoint interval).",
        )
    return json_response(checkpoint_json(row))
