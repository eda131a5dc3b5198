"""The ledger API (`/v1/recovea/*`) and the admin API's reads, in this process, with
row-level security out of the way: the gateway's real routes and runtime
(`open_runtime`) on the session's Postgres, its pool connected as the owner
(RECOVEA_APP_DATABASE_URL), which RLS does not bind. So every answer here is scoped
by the code alone — the first line of defence, proven on its own (tests/test_tenancy.py
proves the backstop): a workspace sees exactly its own rows, receipts, chains, usage,
keys and provider keys, and another workspace's ids are 404 or absent. One test
(`secured`) runs the same routes on the gateway's own role, as deployed, to prove each
read also sets the scope that row-level security reads; another, on a pool whose
database is out of reach, what a caller gets then.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from recovea_proxy.admin import api as admin_api
from recovea_proxy.admin import operations as ops
from recovea_proxy.admin.api import ADMIN_ROUTES, admin, keyed
from recovea_proxy.asgi import Message, Receive, Scope, Send
from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.config import Settings
from recovea_proxy.headers import split_request_headers
from recovea_proxy.meter import api as ledger_api
from recovea_proxy.meter.api import LEDGER_ROUTES
from recovea_proxy.meter.event import COLUMNS, RouteIds, event_row
from recovea_proxy.meter.receipt_keys import PublishedKeys, SigningKey, key_id
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.meter.rollup import run_rollup
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime, open_runtime
from recovea_proxy.store.database import connect
from recovea_proxy.store.migrate import apply_migrations
from tests.support import Postgres, free_port, short_tmpdir

pytestmark = pytest.mark.asyncio(loop_scope="module")


@dataclass
class Tenant:
    """One workspace: its keys, and the request ids of its rows (one with a receipt)."""

    id: str
    admin: ops.CreatedKey
    member: ops.CreatedKey
    requests: list[str]
    chain: str

    def auth(self, role: str = "admin") -> dict[str, str]:
        key = self.admin if role == "admin" else self.member
        return {"authorization": f"Bearer {key.secret}"}


@dataclass
class World:
    """The session's database with two workspaces, and a gateway runtime on it."""

    runtime: Runtime
    mine: Tenant
    theirs: Tenant
    operator: ops.CreatedKey
    #: a workspace with a request too cheap for plain notation and one of no known price
    odd: Tenant


@dataclass
class Ledger:
    client: httpx.AsyncClient
    mine: Tenant
    theirs: Tenant
    operator: ops.CreatedKey
    odd: Tenant


def _record(
    workspace: str,
    rcv_key_id: str,
    model: str,
    ts_ms: int,
    cache_hit: bool = False,
    usage: Usage | None = None,
) -> RequestRecord:
    rec = RequestRecord(uuid.uuid4().hex, uuid.uuid4().hex, 0, ts_ms)
    rec.cache_hit, rec.cache_type = cache_hit, "exact" if cache_hit else None
    rec.workspace_id, rec.rcv_key_id, rec.env = workspace, rcv_key_id, "live"
    rec.provider, rec.route, rec.model = "openai", "/v1/chat/completions", model
    rec.feature = "search"
    rec.usage = usage or Usage(10, 5, 2, None, "stop")
    rec.success = True
    rec.levers_fired = {"cache": "miss"}
    rec.request_sha256 = hashlib.sha256(b"request").hexdigest()
    rec.end(1_000_000)
    return rec


async def _tenant(
    owner: str,
    conn: Any,
    keyring: Keyring,
    name: str,
    signer: ReceiptSigner,
    requests: list[tuple[str, Usage]] | None = None,
) -> Tenant:
    """A workspace with two keys, an OpenAI key and four signed requests (or these
    `requests`, model and usage), written by the real writer."""
    workspace = await ops.create_workspace(conn, f"{name}-{uuid.uuid4().hex[:8]}")
    admin = await ops.create_key(conn, workspace, role="admin")
    member = await ops.create_key(conn, workspace, project="web")
    await ops.set_provider_key(conn, keyring, workspace, "openai", f"sk-{name}-0123456789")
    now_ms = int(time.time() * 1000)
    records = [
        _record(
            workspace,
            admin.id,
            "gpt-4o" if i < 3 else "gpt-4o-mini",
            now_ms - i * 1000,
            cache_hit=i == 2,  # served from the cache: realized cost 0
        )
        for i in range(4)
    ]
    if requests is not None:
        records = [
            _record(workspace, admin.id, model, now_ms - i * 1000, usage=usage)
            for i, (model, usage) in enumerate(requests)
        ]
    routes = RouteIds()
    rows = []
    for rec in records:
        signer.sign(rec, hashlib.sha256(b"response").hexdigest())
        rows.append(event_row(rec, routes.id_for(rec)))
    writer = EventWriter(owner)
    try:
        await writer.write(rows)
    finally:
        await writer.close()
    place = records[0].receipt_place
    assert place is not None
    return Tenant(workspace, admin, member, [r.request_id for r in records], place[0])


#: one input token of gpt-4o-mini ($0.15 a million), and a model no price table knows
_ODD_REQUESTS = [
    ("gpt-4o-mini", Usage(1, 0, 0, None, "stop")),
    ("no-such-model", Usage(10, 5, 0, None, "stop")),
]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def world(postgres: Postgres, db_env: dict[str, str]) -> AsyncIterator[World]:
    # The session's master key, as its gateways use: the receipt signing key they (or
    # this fixture) stored in the session's database is sealed under it.
    master_file = Path(db_env["RECOVEA_MASTER_KEY_FILE"])
    settings = Settings(
        database_url=postgres.url,
        app_database_url=postgres.url,  # the owner: row-level security does not apply
        data_dir=short_tmpdir(),
        master_key_file=master_file,
        maintenance_interval_s=3600.0,
    )
    keyring = Keyring(LocalMasterKey.load_or_create(master_file), {})
    conn = await connect(postgres.url)
    try:
        await apply_migrations(conn)
    finally:
        await conn.close()
    async with open_runtime(settings, GatewayMetrics()) as runtime:
        signer = ReceiptSigner(_signing_key())
        conn = await connect(postgres.url)
        try:
            mine = await _tenant(postgres.url, conn, keyring, "mine", signer)
            theirs = await _tenant(postgres.url, conn, keyring, "theirs", signer)
            odd = await _tenant(postgres.url, conn, keyring, "odd", signer, _ODD_REQUESTS)
            await run_rollup(conn, timeout_s=30, max_tags=100)
            operator = await _operator_key(conn)
        finally:
            await conn.close()
        yield World(runtime, mine, theirs, operator, odd)


async def _operator_key(conn: Any) -> ops.CreatedKey:
    """An admin key of the operator's workspace (`default`), made by `init` if need be."""
    default = await conn.fetchval(
        "SELECT customer_id FROM recovea.workspaces WHERE name = 'default'"
    )
    if default is None:
        return (await ops.init(conn))[1]
    return await ops.create_key(conn, str(default), role="admin")


@pytest_asyncio.fixture(loop_scope="module")
async def ledger(world: World) -> AsyncIterator[Ledger]:
    transport = httpx.ASGITransport(app=_app(world.runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield Ledger(client, world.mine, world.theirs, world.operator, world.odd)


@pytest_asyncio.fixture(loop_scope="module")
async def scratch(world: World) -> dict[str, str]:
    """An admin key of a workspace of its own, for a test that adds keys: the reads above
    list `mine`'s keys exactly, whatever order the tests run in (mutmut runs a set)."""
    async with world.runtime.pool.acquire() as conn:
        workspace = await ops.create_workspace(conn, f"scratch-{uuid.uuid4().hex[:8]}")
        key = await ops.create_key(conn, workspace, role="admin")
    return {"authorization": f"Bearer {key.secret}"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secured(
    world: World, postgres: Postgres, db_env: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The same routes on a runtime whose pool uses the gateway's own role, as deployed:
    row-level security applies to every read."""
    settings = Settings(
        database_url=postgres.url,
        data_dir=short_tmpdir(),
        master_key_file=Path(db_env["RECOVEA_MASTER_KEY_FILE"]),
        maintenance_interval_s=3600.0,
    )
    async with open_runtime(settings, GatewayMetrics()) as runtime:
        transport = httpx.ASGITransport(app=_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def long_chain(postgres: Postgres, db_env: dict[str, str]) -> Tenant:
    """A workspace whose chain is one receipt longer than the default page."""
    keyring = Keyring(LocalMasterKey.load_or_create(Path(db_env["RECOVEA_MASTER_KEY_FILE"])), {})
    usage = Usage(10, 5, 2, None, "stop")
    conn = await connect(postgres.url)
    try:
        requests = [("gpt-4o", usage)] * 1001
        return await _tenant(
            postgres.url, conn, keyring, "long", ReceiptSigner(_signing_key()), requests
        )
    finally:
        await conn.close()


def _signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(key_id(public), private)


def routes() -> list[BaseRoute]:
    """The gateway's ledger and admin read routes, wrapped as `meter/api.py` and
    `admin/api.py` wrap them, but now (their wrappers run at import, before a test
    could change them)."""
    return [
        Route("/v1/recovea/requests/{request_id}", keyed(ledger_api.get_request, admin_only=False)),
        Route("/v1/recovea/receipts/{request_id}", keyed(ledger_api.get_receipt, admin_only=False)),
        Route("/v1/recovea/ledger", keyed(ledger_api.get_ledger, admin_only=False)),
        Route("/v1/recovea/usage", keyed(ledger_api.get_usage, admin_only=False)),
        Route("/.well-known/recovea-receipt-keys", ledger_api.receipt_keys),
        Route("/admin/v1/workspace", admin(admin_api.get_workspace), methods=["GET"]),
        Route("/admin/v1/workspaces", admin(admin_api.create_workspace), methods=["POST"]),
        Route("/admin/v1/keys", admin(admin_api.list_keys), methods=["GET"]),
        Route("/admin/v1/keys", admin(admin_api.create_key), methods=["POST"]),
        Route("/admin/v1/keys/{key_id}", admin(admin_api.revoke_key), methods=["DELETE"]),
        Route("/admin/v1/provider-keys", admin(admin_api.list_provider_keys), methods=["GET"]),
        Route(
            "/admin/v1/provider-keys/{provider}",
            admin(admin_api.set_provider_key),
            methods=["PUT"],
        ),
    ]


def _shape(table: list[BaseRoute]) -> list[tuple[str, frozenset[str] | None]]:
    return [
        (route.path, frozenset(route.methods or ()) or None)
        for route in table
        if isinstance(route, Route)
    ]


async def test_these_routes_are_the_gateways() -> None:
    """The table the tests below serve is the gateway's own: same paths and methods."""
    assert _shape(routes()) == _shape([*LEDGER_ROUTES, *ADMIN_ROUTES])


def _app(runtime: Runtime) -> Any:
    """The routes, with the runtime as the lifespan's state (what uvicorn hands every
    request)."""
    table = Starlette(routes=routes())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"] = {"runtime": runtime}
        await table(scope, receive, send)

    return app


async def get(
    ledger: Ledger, path: str, who: Tenant | None = None, role: str = "admin"
) -> httpx.Response:
    headers = (who or ledger.mine).auth(role)
    return await ledger.client.get(path, headers=headers)


# --- /v1/recovea/requests --------------------------------------------------------------


async def test_a_request_row_is_returned_with_exactly_the_ledgers_columns(ledger: Ledger) -> None:
    """The stored row of one of the workspace's requests: every column, typed for JSON
    (ids as text, the time as ISO 8601, levers as an object), for any key of it."""
    request_id = ledger.mine.requests[0]
    for role in ("admin", "member"):
        answer = await get(ledger, f"/v1/recovea/requests/{request_id}", role=role)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        row = answer.json()
        assert list(row) == list(COLUMNS)
        assert row["request_id"] == request_id
        assert row["customer_id"] == ledger.mine.id
        assert row["rcv_key_id"] == ledger.mine.admin.id
        assert uuid.UUID(row["route_id"])
        assert row["levers_fired"] == {"cache": "miss"}
        assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (10, 5, 2)
        assert row["reasoning_tokens"] is None
        assert datetime.fromisoformat(row["ts"]).tzinfo is not None
        assert (row["baseline_cost"], row["realized_cost"]) == (None, None)


async def test_another_workspaces_request_is_not_found(ledger: Ledger) -> None:
    """Another workspace's request id, an unknown one and a malformed one: 404, the same
    answer, so a caller cannot tell which exist."""
    for request_id in (ledger.theirs.requests[0], uuid.uuid4().hex, "not-an-id"):
        answer = await get(ledger, f"/v1/recovea/requests/{request_id}")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "error": {
                "message": "No request with that id in this workspace.",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }


# --- /v1/recovea/receipts --------------------------------------------------------------


async def test_a_receipt_is_returned_for_its_workspace_only(ledger: Ledger) -> None:
    """The workspace's receipt: its request id, chain, seq, kid and token; another
    workspace's is 404."""
    request_id = ledger.mine.requests[0]
    answer = await get(ledger, f"/v1/recovea/receipts/{request_id}")
    assert answer.status_code == 200
    receipt = answer.json()
    assert set(receipt) == {"request_id", "chain", "seq", "kid", "token"}
    assert (receipt["request_id"], receipt["chain"], receipt["seq"]) == (
        request_id,
        ledger.mine.chain,
        1,
    )
    assert receipt["kid"].startswith("rk_") and "." in receipt["token"]
    theirs = await get(ledger, f"/v1/recovea/receipts/{ledger.theirs.requests[0]}")
    assert theirs.status_code == 404
    assert theirs.json()["error"]["message"] == "No receipt with that id in this workspace."


# --- /v1/recovea/ledger ----------------------------------------------------------------


async def test_the_ledger_lists_the_workspaces_own_chains(ledger: Ledger) -> None:
    """Without `chain=`: the workspace's chains only, each with its first and last seq,
    its count and its time span."""
    answer = await get(ledger, "/v1/recovea/ledger")
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list"
    [chain] = body["data"]
    assert (chain["chain"], chain["first_seq"], chain["last_seq"], chain["receipts"]) == (
        ledger.mine.chain,
        1,
        4,
        4,
    )
    assert datetime.fromisoformat(chain["first_ts"]) <= datetime.fromisoformat(chain["last_ts"])


async def test_a_chain_is_paged_in_seq_order(ledger: Ledger) -> None:
    """`chain=` pages the chain from `after_seq`, `limit` at a time, with the chain's
    stored first and last seq, `has_more` and where the next page starts."""
    base = f"/v1/recovea/ledger?chain={ledger.mine.chain}"
    first = (await get(ledger, f"{base}&limit=3")).json()
    assert first["object"] == "recovea-chain-v1"
    assert (first["chain"], first["first_seq"], first["last_seq"]) == (ledger.mine.chain, 1, 4)
    assert [r["seq"] for r in first["receipts"]] == [1, 2, 3]
    assert set(first["receipts"][0]) == {"request_id", "seq", "kid", "token"}
    assert (first["has_more"], first["next_after_seq"]) == (True, 3)
    rest = (await get(ledger, f"{base}&after_seq=3")).json()
    assert [r["seq"] for r in rest["receipts"]] == [4]
    assert (rest["has_more"], rest["next_after_seq"]) == (False, None)
    whole = (await get(ledger, base)).json()
    assert [r["seq"] for r in whole["receipts"]] == [1, 2, 3, 4]
    assert whole["has_more"] is False
    one = (await get(ledger, f"{base}&limit=0")).json()
    assert [r["seq"] for r in one["receipts"]] == [1]
    exact = (await get(ledger, f"{base}&limit=4")).json()
    assert (len(exact["receipts"]), exact["has_more"], exact["next_after_seq"]) == (4, False, None)
    far = await get(ledger, f"{base}&after_seq={2**62}")
    assert (far.status_code, far.json()["receipts"]) == (200, [])


async def test_a_chain_page_is_1000_receipts_unless_asked(
    ledger: Ledger, long_chain: Tenant
) -> None:
    """Without `limit`, a page of a chain holds 1000 receipts, and says where the next
    one starts."""
    page = (await get(ledger, f"/v1/recovea/ledger?chain={long_chain.chain}", long_chain)).json()
    assert (page["first_seq"], page["last_seq"]) == (1, 1001)
    assert [r["seq"] for r in page["receipts"]] == list(range(1, 1001))
    assert (page["has_more"], page["next_after_seq"]) == (True, 1000)


async def test_another_workspaces_chain_reads_as_empty(ledger: Ledger) -> None:
    """Asking for another workspace's chain id gives an empty page with no bounds, as
    for a chain that does not exist."""
    answer = await get(ledger, f"/v1/recovea/ledger?chain={ledger.theirs.chain}")
    body = answer.json()
    assert (body["receipts"], body["first_seq"], body["last_seq"], body["has_more"]) == (
        [],
        None,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("chain=bad%20id", "chain must be a chain id."),
        ("chain=abc&after_seq=-1", "after_seq must be an integer from 0 to"),
        (f"chain=abc&after_seq={2**62 + 1}", f"after_seq must be an integer from 0 to {2**62}."),
        ("chain=abc&limit=x", "limit must be an integer from 0 to 10000."),
        ("chain=abc&limit=10001", "limit must be an integer from 0 to 10000."),
    ],
)
async def test_a_bad_ledger_query_is_a_400_that_says_why(
    ledger: Ledger, query: str, message: str
) -> None:
    """A malformed chain id, offset or page size is refused 400 with what is wrong."""
    answer = await get(ledger, f"/v1/recovea/ledger?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"
    assert answer.json()["error"]["message"].startswith(message)


@pytest.mark.parametrize("value", ["%C2%B2", "%C2%B9%C2%B2", "%E2%91%A0"])
async def test_a_page_size_or_offset_in_other_digits_than_0_to_9_is_a_400(
    ledger: Ledger, value: str
) -> None:
    """`limit` and `after_seq` are numbers: a superscript or circled digit (a digit to
    `str.isdigit`, but no number to `int`) is refused 400, not a 500."""
    for name in ("limit", "after_seq"):
        answer = await get(ledger, f"/v1/recovea/ledger?chain=abc&{name}={value}")
        assert answer.status_code == 400, name
        assert answer.json()["error"]["message"].startswith(f"{name} must be an integer")


async def test_the_largest_page_is_allowed(ledger: Ledger) -> None:
    """`limit` up to 10000 is accepted."""
    answer = await get(ledger, f"/v1/recovea/ledger?chain={ledger.mine.chain}&limit=10000")
    assert answer.status_code == 200


# --- /v1/recovea/usage ----------------------------------------------------------------


async def test_usage_is_the_workspaces_own_rollups(ledger: Ledger) -> None:
    """By model (the default): the workspace's requests and tokens per model, largest
    first, and their totals; the other workspace's traffic is not counted."""
    answer = await get(ledger, "/v1/recovea/usage")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["object"], body["group_by"]) == ("usage", "model")
    by_model = {row["key"]: row for row in body["data"]}
    assert [row["key"] for row in body["data"]] == ["gpt-4o", "gpt-4o-mini"]
    assert (by_model["gpt-4o"]["requests"], by_model["gpt-4o"]["input_tokens"]) == (3, 30)
    assert by_model["gpt-4o"]["cache_hits"] == 1
    assert body["totals"]["requests"] == 4
    assert body["totals"]["output_tokens"] == 20
    assert datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"]) == (
        timedelta(days=30)
    )
    assert body["to"].endswith("+00:00")


@pytest.mark.parametrize(
    ("group_by", "key"),
    [("feature", "search"), ("provider", "openai"), ("realized_model", "gpt-4o")],
)
async def test_usage_groups_by_each_dimension(ledger: Ledger, group_by: str, key: str) -> None:
    """Each `group_by` groups the same requests by that dimension."""
    body = (await get(ledger, f"/v1/recovea/usage?group_by={group_by}")).json()
    assert body["group_by"] == group_by
    assert key in {row["key"] for row in body["data"]}
    assert body["totals"]["requests"] == 4


async def test_usage_costs_and_savings_are_decimal_strings(ledger: Ledger) -> None:
    """Baseline and realized cost, and savings (a cache hit costs nothing), are exact
    decimal strings, never in exponent form; the totals add them up."""
    body = (await get(ledger, "/v1/recovea/usage")).json()
    by_model = {row["key"]: row for row in body["data"]}
    for row in [*body["data"], body["totals"]]:
        money = [row["baseline_cost_usd"], row["realized_cost_usd"], row["savings_usd"]]
        assert all(isinstance(value, str) and "E" not in value.upper() for value in money)
        baseline, realized, savings = (Decimal(value) for value in money)
        assert savings == baseline - realized
        assert baseline > 0
    assert Decimal(by_model["gpt-4o"]["savings_usd"]) > 0
    assert by_model["gpt-4o-mini"]["savings_usd"] == "0"
    totals = body["totals"]
    for name in ("baseline_cost_usd", "realized_cost_usd"):
        assert Decimal(totals[name]) == sum(Decimal(row[name]) for row in body["data"])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("group_by=color", "group_by must be one of feature, model,"),
        ("from=2026-02-01&to=2026-01-01", "from must be before to."),
        ("from=2026-01-01&to=2026-01-01", "from must be before to."),
        ("from=yesterday", "from must be an ISO 8601 date or time."),
        ("to=soon", "to must be an ISO 8601 date or time."),
    ],
)
async def test_a_bad_usage_query_is_a_400_that_says_why(
    ledger: Ledger, query: str, message: str
) -> None:
    """An unknown dimension, a window that ends before it starts, or a time that is not
    ISO 8601 is refused 400 with what is wrong."""
    answer = await get(ledger, f"/v1/recovea/usage?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(message)


async def test_usage_of_a_window_without_traffic_is_empty(ledger: Ledger) -> None:
    """A window in the past with no traffic: no groups, zero totals, no costs."""
    body = (await get(ledger, "/v1/recovea/usage?from=2020-01-01&to=2020-01-02")).json()
    assert body["data"] == []
    assert body["totals"]["requests"] == 0
    assert body["totals"]["baseline_cost_usd"] is None
    assert body["from"].startswith("2020-01-01")


async def test_usage_of_a_model_without_a_price_has_no_costs(ledger: Ledger) -> None:
    """A model no price covers is counted (as unpriced) with null costs, not zero and
    not an error, and the totals' costs are the priced models' alone; a cost below a
    millionth of a dollar is still written out in plain decimals."""
    answer = await get(ledger, "/v1/recovea/usage", ledger.odd)
    assert answer.status_code == 200
    body = answer.json()
    by_model = {row["key"]: row for row in body["data"]}
    assert set(by_model) == {"gpt-4o-mini", "no-such-model"}
    unknown = by_model["no-such-model"]
    assert (unknown["requests"], unknown["unpriced"]) == (1, 1)
    assert (unknown["baseline_cost_usd"], unknown["realized_cost_usd"]) == (None, None)
    assert unknown["savings_usd"] is None
    tiny = by_model["gpt-4o-mini"]
    assert (tiny["baseline_cost_usd"], tiny["realized_cost_usd"]) == ("0.00000015", "0.00000015")
    assert tiny["savings_usd"] == "0"
    totals = body["totals"]
    assert (totals["requests"], totals["unpriced"]) == (2, 1)
    assert (totals["baseline_cost_usd"], totals["savings_usd"]) == ("0.00000015", "0")


# --- the admin API's reads ------------------------------------------------------------


async def test_the_workspace_read_is_the_callers_own(ledger: Ledger) -> None:
    """GET /admin/v1/workspace describes the caller's workspace, whichever exists."""
    for tenant in (ledger.mine, ledger.theirs):
        body = (await get(ledger, "/admin/v1/workspace", tenant)).json()
        assert body["id"] == tenant.id
        assert body["plan"] == "free"
        assert datetime.fromisoformat(body["created_at"]) <= datetime.now(UTC)


async def test_the_key_list_is_the_callers_own_without_secrets(ledger: Ledger) -> None:
    """GET /admin/v1/keys lists the workspace's keys (project and team by name, last
    four characters only), none of another workspace."""
    body = (await get(ledger, "/admin/v1/keys")).json()
    ids = {key["id"] for key in body["data"]}
    assert ids == {ledger.mine.admin.id, ledger.mine.member.id}
    member = next(key for key in body["data"] if key["id"] == ledger.mine.member.id)
    assert (member["role"], member["project"], member["team"], member["revoked_at"]) == (
        "member",
        "web",
        None,
        None,
    )
    assert member["last_four"] == ledger.mine.member.secret[-4:]
    assert ledger.mine.member.secret not in str(body)


async def test_the_provider_key_list_is_the_callers_own(ledger: Ledger) -> None:
    """GET /admin/v1/provider-keys lists the workspace's provider keys (last four
    characters only), none of another workspace."""
    body = (await get(ledger, "/admin/v1/provider-keys")).json()
    assert [(k["provider"], k["last_four"]) for k in body["data"]] == [("openai", "6789")]
    assert "sk-mine" not in str(body)


async def test_the_admin_reads_need_an_admin_key(ledger: Ledger) -> None:
    """A member key on an admin route is 403 `forbidden`; no key is 401."""
    member = await get(ledger, "/admin/v1/keys", role="member")
    assert (member.status_code, member.json()["error"]["code"]) == (403, "forbidden")
    assert member.json()["error"]["message"] == "This route needs an admin key."
    assert member.headers["content-type"] == "application/json"
    anonymous = await ledger.client.get("/admin/v1/keys")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "invalid_api_key")
    ledger_anonymous = await ledger.client.get("/v1/recovea/ledger")
    assert ledger_anonymous.status_code == 401


async def test_the_receipt_keys_are_published_without_auth(ledger: Ledger) -> None:
    """The receipt public keys need no key and may be cached for five minutes."""
    answer = await ledger.client.get("/.well-known/recovea-receipt-keys")
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "public, max-age=300"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["keys"]


async def test_revoking_another_workspaces_key_is_not_found(ledger: Ledger) -> None:
    """An admin key cannot revoke a key of another workspace (404), with row-level
    security out of the way; its own member key it can."""
    theirs = await ledger.client.delete(
        f"/admin/v1/keys/{ledger.theirs.member.id}", headers=ledger.mine.auth()
    )
    assert theirs.status_code == 404
    still = await get(ledger, "/v1/recovea/ledger", ledger.theirs, role="member")
    assert still.status_code == 200


async def test_with_row_level_security_on_each_read_is_the_callers_own(
    world: World, secured: httpx.AsyncClient
) -> None:
    """On the gateway's own role, bound by row-level security, every read still answers
    the caller's rows: each one scopes its transaction to the caller's workspace (a read
    left unscoped would find nothing at all)."""
    mine, headers = world.mine, world.mine.auth()
    described = (await secured.get("/admin/v1/workspace", headers=headers)).json()
    assert described["id"] == mine.id
    keys = (await secured.get("/admin/v1/keys", headers=headers)).json()["data"]
    assert {key["id"] for key in keys} == {mine.admin.id, mine.member.id}
    provider_keys = (await secured.get("/admin/v1/provider-keys", headers=headers)).json()
    assert [key["last_four"] for key in provider_keys["data"]] == ["6789"]
    row = await secured.get(f"/v1/recovea/requests/{mine.requests[0]}", headers=headers)
    assert row.json()["customer_id"] == mine.id
    receipt = await secured.get(f"/v1/recovea/receipts/{mine.requests[0]}", headers=headers)
    assert receipt.json()["chain"] == mine.chain
    chains = (await secured.get("/v1/recovea/ledger", headers=headers)).json()["data"]
    assert [chain["chain"] for chain in chains] == [mine.chain]
    page = (await secured.get(f"/v1/recovea/ledger?chain={mine.chain}", headers=headers)).json()
    assert [receipt["seq"] for receipt in page["receipts"]] == [1, 2, 3, 4]
    usage = (await secured.get("/v1/recovea/usage", headers=headers)).json()
    assert usage["totals"]["requests"] == 4
    theirs = await secured.get(f"/v1/recovea/requests/{world.theirs.requests[0]}", headers=headers)
    assert theirs.status_code == 404


async def test_an_unreachable_database_is_a_503_store_unavailable(world: World) -> None:
    """With the database out of reach, every ledger and admin route answers 503
    `store_unavailable` in the OpenAI error shape (never a 500 or a hang), and the
    receipt keys route, whose document was never loaded, 503 `store_unavailable` too."""
    dead = await asyncpg.create_pool(
        f"postgresql://recovea@127.0.0.1:{free_port()}/recovea", min_size=0, max_size=1
    )
    try:
        runtime = replace(world.runtime, pool=dead, published_keys=PublishedKeys(dead))
        transport = httpx.ASGITransport(app=_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            headers = world.mine.auth()
            request_id = world.mine.requests[0]
            for path in (
                f"/v1/recovea/requests/{request_id}",
                f"/v1/recovea/receipts/{request_id}",
                "/v1/recovea/ledger",
                f"/v1/recovea/ledger?chain={world.mine.chain}",
                "/v1/recovea/usage",
                "/admin/v1/workspace",
                "/admin/v1/keys",
                "/admin/v1/provider-keys",
            ):
                answer = await client.get(path, headers=headers)
                assert answer.status_code == 503, path
                assert answer.headers["content-type"] == "application/json"
                assert answer.json() == {
                    "error": {
                        "message": "The database is unreachable.",
                        "type": "api_error",
                        "param": None,
                        "code": "store_unavailable",
                    }
                }
            keys = await client.get("/.well-known/recovea-receipt-keys")
            assert keys.status_code == 503
            assert keys.headers["content-type"] == "application/json"
            assert keys.json() == {
                "error": {"message": "The key store is unreachable.", "code": "store_unavailable"}
            }
    finally:
        await dead.close()


# --- the admin API's writes, through the same wrappers --------------------------------


async def test_an_admin_creates_and_revokes_a_key_of_its_workspace(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """POST /admin/v1/keys shows the new key once (201) with its role, env and last
    four; the key works; DELETE revokes it (and only once)."""
    created = await ledger.client.post(
        "/admin/v1/keys",
        json={"role": "member", "env": "test", "project": "api"},
        headers=scratch,
    )
    assert created.status_code == 201
    key = created.json()
    assert (key["role"], key["env"], key["last_four"]) == ("member", "test", key["key"][-4:])
    assert key["key"].startswith("rcv_test_")
    uses = await ledger.client.get(
        "/v1/recovea/ledger", headers={"authorization": f"Bearer {key['key']}"}
    )
    assert uses.status_code == 200
    revoked = await ledger.client.delete(f"/admin/v1/keys/{key['id']}", headers=scratch)
    assert (revoked.status_code, revoked.json()) == (200, {"id": key["id"], "revoked": True})
    again = await ledger.client.delete(f"/admin/v1/keys/{key['id']}", headers=scratch)
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "No active key with that id in this workspace."
    malformed = await ledger.client.delete("/admin/v1/keys/k1", headers=scratch)
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_request")


async def test_an_admin_stores_a_provider_key_for_its_workspace(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """PUT /admin/v1/provider-keys/{provider} stores the key (last four back, never the
    key), listed for the workspace; an unknown provider is 404."""
    stored = await ledger.client.put(
        "/admin/v1/provider-keys/anthropic",
        json={"key": " sk-ant-admin-api-4321 "},
        headers=scratch,
    )
    assert (stored.status_code, stored.json()) == (
        200,
        {"provider": "anthropic", "last_four": "4321"},
    )
    listed = (await ledger.client.get("/admin/v1/provider-keys", headers=scratch)).json()["data"]
    assert ("anthropic", "4321") in [(k["provider"], k["last_four"]) for k in listed]
    unknown = await ledger.client.put(
        "/admin/v1/provider-keys/azure", json={"key": "k" * 20}, headers=scratch
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    short = await ledger.client.put(
        "/admin/v1/provider-keys/openai", json={"key": "short"}, headers=scratch
    )
    assert short.status_code == 400
    assert short.json()["error"]["message"] == (
        "the provider key must be 8 to 512 printable characters, no spaces"
    )


async def test_a_key_asked_for_with_no_body_is_a_live_member_key(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """POST /admin/v1/keys with no body at all makes a live member key of no project or
    team; each of role, env, project and team, when given, is the key's."""
    plain = await ledger.client.post("/admin/v1/keys", headers=scratch)
    assert plain.status_code == 201
    key = plain.json()
    assert (key["role"], key["env"]) == ("member", "live")
    assert key["key"].startswith("rcv_live_")
    given = await ledger.client.post(
        "/admin/v1/keys",
        json={"role": "admin", "env": "test", "project": "app", "team": "ops"},
        headers=scratch,
    )
    assert given.status_code == 201
    assert (given.json()["role"], given.json()["env"]) == ("admin", "test")
    listed = (await ledger.client.get("/admin/v1/keys", headers=scratch)).json()["data"]
    shown = {k["id"]: (k["role"], k["env"], k["project"], k["team"]) for k in listed}
    assert shown[key["id"]] == ("member", "live", None, None)
    assert shown[given.json()["id"]] == ("admin", "test", "app", "ops")


async def test_revoking_a_key_that_is_not_there_says_so(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """DELETE of an unknown key id is 404 `not_found`; of a malformed one, 400 naming
    the key id."""
    unknown = await ledger.client.delete(f"/admin/v1/keys/{uuid.uuid4()}", headers=scratch)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    malformed = await ledger.client.delete("/admin/v1/keys/k1", headers=scratch)
    assert malformed.json()["error"]["message"] == "key id must be a UUID, not 'k1'"


async def test_a_replaced_provider_key_is_used_from_the_next_request(
    world: World, ledger: Ledger, scratch: dict[str, str]
) -> None:
    """After PUT /admin/v1/provider-keys/openai replaces the workspace's key, this
    gateway sends the new key upstream at once, not the one it had in memory."""
    headers = split_request_headers([(b"authorization", scratch["authorization"].encode())])
    openai = PROVIDERS["openai"]

    async def upstream_key() -> tuple[tuple[str, str], ...]:
        auth = world.runtime.auth
        principal = auth.known_principal(headers, openai)
        principal = principal or await auth.load_principal(headers, openai)
        return principal.upstream_credentials

    for secret in ("sk-first-0123456789", "sk-second-0123456789"):
        stored = await ledger.client.put(
            "/admin/v1/provider-keys/openai", json={"key": secret}, headers=scratch
        )
        assert stored.status_code == 200
        assert await upstream_key() == (("authorization", f"Bearer {secret}"),)


async def test_an_unknown_provider_is_a_404_that_names_the_known_ones(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """PUT for a provider the gateway does not serve is 404 naming the ones it does."""
    answer = await ledger.client.put(
        "/admin/v1/provider-keys/azure", json={"key": "k" * 20}, headers=scratch
    )
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert message.startswith("Unknown provider; use one of")
    assert all(name in message for name in ("openai", "anthropic", "openrouter"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The body must be a JSON object."),
        (b"[1, 2]", "The body must be a JSON object."),
        (b'{"role": "member", "colour": "red", "bogus": 1}', "Unknown field(s): bogus, colour."),
        (b'{"role": 7}', "role must be a string."),
    ],
)
async def test_a_bad_admin_body_is_a_400_that_says_why(
    ledger: Ledger, body: bytes, message: str
) -> None:
    """A body that is not a JSON object, has unknown fields or a non-string value is
    refused 400 with what is wrong; nothing is created."""
    before = len((await get(ledger, "/admin/v1/keys")).json()["data"])
    answer = await ledger.client.post(
        "/admin/v1/keys",
        content=body,
        headers={**ledger.mine.auth(), "content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request",
    }
    assert len((await get(ledger, "/admin/v1/keys")).json()["data"]) == before


async def test_an_admin_body_over_64_kb_is_refused_413(ledger: Ledger) -> None:
    """Over 64 KB, announced or streamed, the body is refused 413 before it is read;
    exactly 64 KB is read (and judged on its content)."""
    big = b'{"role": "' + b"m" * (64 * 1024) + b'"}'

    async def streamed() -> AsyncIterator[bytes]:
        for at in range(0, len(big), 4096):
            yield big[at : at + 4096]

    for content in (big, streamed()):
        answer = await ledger.client.post(
            "/admin/v1/keys", content=content, headers=ledger.mine.auth()
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
    exactly = b'{"project": "' + b"p" * (64 * 1024 - 15) + b'"}'
    assert len(exactly) == 64 * 1024
    answer = await ledger.client.post("/admin/v1/keys", content=exactly, headers=ledger.mine.auth())
    assert answer.status_code == 400  # read, then refused for the project name's length


async def test_a_body_announced_over_64_kb_is_refused_unread(world: World) -> None:
    """A request whose Content-Length is over 64 KB is refused 413 before any of its
    body is read."""
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/admin/v1/keys",
        "raw_path": b"/admin/v1/keys",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"authorization", world.mine.auth()["authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(64 * 1024 + 1).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("gateway", 80),
    }
    await _app(world.runtime)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"] == {
        "message": "Request body is larger than 64 KB.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    assert reads == 0


async def test_unknown_fields_are_named_up_to_200_characters(ledger: Ledger) -> None:
    """However many unknown fields a body has, the 400 names them (sorted) in at most
    200 characters."""
    fields = {f"field_{i:03}": "x" for i in range(40)}
    answer = await ledger.client.post("/admin/v1/keys", json=fields, headers=ledger.mine.auth())
    assert answer.status_code == 400
    named = ", ".join(sorted(fields))
    assert answer.json()["error"]["message"] == f"Unknown field(s): {named[:200]}."


async def test_a_workspace_needs_a_name_and_is_on_the_free_plan_by_default(
    ledger: Ledger,
) -> None:
    """POST /admin/v1/workspaces without a name is 400 and creates nothing; without a
    plan, the new workspace is on `free`. An admin of any other workspace is 403
    `forbidden`."""
    operator = {"authorization": f"Bearer {ledger.operator.secret}"}
    nameless = await ledger.client.post("/admin/v1/workspaces", json={}, headers=operator)
    assert nameless.status_code == 400
    assert nameless.json()["error"]["message"] == (
        "workspace name must be 1 to 100 printable characters"
    )
    name = f"planless-{uuid.uuid4().hex[:8]}"
    created = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name}, headers=operator
    )
    assert created.status_code == 201
    first = {"authorization": f"Bearer {created.json()['admin_key']}"}
    described = (await ledger.client.get("/admin/v1/workspace", headers=first)).json()
    assert (described["name"], described["plan"]) == (name, "free")
    refused = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": f"x-{name}"}, headers=ledger.mine.auth()
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")


async def test_only_the_operator_creates_workspaces(ledger: Ledger) -> None:
    """POST /admin/v1/workspaces: 403 for an admin of any other workspace; the
    operator's (`default`) gets the new workspace and its first admin key, which works."""
    name = f"created-{uuid.uuid4().hex[:8]}"
    refused = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name}, headers=ledger.mine.auth()
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "Only the operator workspace creates workspaces."
    operator = {"authorization": f"Bearer {ledger.operator.secret}"}
    created = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name, "plan": "pro"}, headers=operator
    )
    assert created.status_code == 201
    body = created.json()
    first = {"authorization": f"Bearer {body['admin_key']}"}
    described = (await ledger.client.get("/admin/v1/workspace", headers=first)).json()
    assert (described["id"], described["name"], described["plan"]) == (body["id"], name, "pro")
    keys = (await ledger.client.get("/admin/v1/keys", headers=first)).json()["data"]
    assert [(k["id"], k["role"], k["env"]) for k in keys] == [
        (body["admin_key_id"], "admin", "live")
    ]
    taken = await ledger.client.post("/admin/v1/workspaces", json={"name": name}, headers=operator)
    assert taken.status_code == 400
