"""What the ledger and admin API mutation tests share: the tenants and their rows, the
operator's key, the route table wrapped at test time, the in-process app and its
requests."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from recovea_proxy.admin import api as admin_api
from recovea_proxy.admin import operations as ops
from recovea_proxy.admin.api import admin, keyed
from recovea_proxy.asgi import Receive, Scope, Send
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.meter import api as ledger_api
from recovea_proxy.meter import usage_api
from recovea_proxy.meter.checkpoint_api import get_checkpoint
from recovea_proxy.meter.checkpoints import checkpoint_row
from recovea_proxy.meter.event import RouteIds, event_row
from recovea_proxy.meter.receipt_keys import SigningKey, key_id
from recovea_proxy.meter.receipts import CheckpointSigner, ReceiptSigner
from recovea_proxy.meter.writer import EventWriter
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime


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
    return await _signed_and_stored(owner, workspace, admin, member, signer, records)


async def _signed_and_stored(
    owner: str,
    workspace: str,
    admin: ops.CreatedKey,
    member: ops.CreatedKey,
    signer: ReceiptSigner,
    records: list[RequestRecord],
) -> Tenant:
    """Sign `records` in order, write their rows with the real writer, and return the
    workspace as a `Tenant` (its chain: the first receipt's)."""
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


async def _checkpointed(owner: str, conn: Any) -> Tenant:
    """A workspace whose chain of four receipts is signed by checkpoints at seq 2 and 4
    (as the checkpoint task signs them), and whose fourth event the drainer set aside:
    receipts 1 to 3 are stored, both checkpoints too."""
    workspace = await ops.create_workspace(conn, f"checkpointed-{uuid.uuid4().hex[:8]}")
    admin = await ops.create_key(conn, workspace, role="admin")
    member = await ops.create_key(conn, workspace, project="web")
    signer = CheckpointSigner(_signing_key(), every=2)
    now_ms = int(time.time() * 1000)
    routes = RouteIds()
    records = [_record(workspace, admin.id, "gpt-4o", now_ms - i * 1000) for i in range(4)]
    events, checkpoints = [], []
    for seq, rec in enumerate(records, 1):
        signer.sign(rec, hashlib.sha256(b"response").hexdigest())
        events.append(event_row(rec, routes.id_for(rec)))
        if seq % 2 == 0:
            checkpoints += [checkpoint_row(*signed) for signed in signer.checkpoints()]
    writer = EventWriter(owner)
    try:
        await writer.write([*events[:3], *checkpoints])
    finally:
        await writer.close()
    place = records[0].receipt_place
    assert place is not None
    return Tenant(workspace, admin, member, [r.request_id for r in records[:3]], place[0])


async def _two_hours(owner: str, conn: Any) -> Tenant:
    """A workspace with one gpt-4o request two hours ago and two gpt-4o-mini requests
    now: the model used most sorts last by name, and the busier hour is the later."""
    workspace = await ops.create_workspace(conn, f"two-hours-{uuid.uuid4().hex[:8]}")
    admin = await ops.create_key(conn, workspace, role="admin")
    member = await ops.create_key(conn, workspace, project="web")
    signer = ReceiptSigner(_signing_key())
    now_ms = int(time.time() * 1000)
    records = [
        _record(workspace, admin.id, "gpt-4o", now_ms - 2 * 3600 * 1000),
        _record(workspace, admin.id, "gpt-4o-mini", now_ms),
        _record(workspace, admin.id, "gpt-4o-mini", now_ms),
    ]
    return await _signed_and_stored(owner, workspace, admin, member, signer, records)


#: one input token of gpt-4o-mini ($0.15 a million), and a model no price table knows
_ODD_REQUESTS = [
    ("gpt-4o-mini", Usage(1, 0, 0, None, "stop")),
    ("no-such-model", Usage(10, 5, 0, None, "stop")),
]


async def _operator_key(conn: Any) -> ops.CreatedKey:
    """An admin key of the operator's workspace (`default`), made by `init` if need be."""
    default = await conn.fetchval(
        "SELECT customer_id FROM recovea.workspaces WHERE name = 'default'"
    )
    if default is None:
        return (await ops.init(conn))[1]
    return await ops.create_key(conn, str(default), role="admin")


def _signing_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(key_id(public), private)


def routes() -> list[BaseRoute]:
    """The gateway's ledger and admin read routes, wrapped as `meter/api.py` and
    `admin/api.py` wrap them, but now (their wrappers run at import, before a test
    could change them)."""
    return [
        Route("/v1/recovea/requests", keyed(ledger_api.list_requests, admin_only=False)),
        Route("/v1/recovea/requests/{request_id}", keyed(ledger_api.get_request, admin_only=False)),
        Route("/v1/recovea/receipts/{request_id}", keyed(ledger_api.get_receipt, admin_only=False)),
        Route("/v1/recovea/ledger", keyed(ledger_api.get_ledger, admin_only=False)),
        Route("/v1/recovea/checkpoints", keyed(get_checkpoint, admin_only=False)),
        Route("/v1/recovea/usage", keyed(usage_api.get_usage, admin_only=False)),
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
