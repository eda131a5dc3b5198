"""The fixtures of the ledger and admin API mutation tests: the world of tenants on the
owner connection (RLS out of the way), the in-process runtime, a scratch workspace per
test, the app role's runtime (RLS on) and a long receipt chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest_asyncio

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.config import Settings
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.meter.rollup import run_rollup
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.providers.usage import Usage
from recovea_proxy.runtime import open_runtime
from recovea_proxy.store.database import connect
from recovea_proxy.store.migrate import apply_migrations
from tests.ledger_api_mutants.support import (
    _ODD_REQUESTS,
    Ledger,
    Tenant,
    World,
    _app,
    _checkpointed,
    _operator_key,
    _signing_key,
    _tenant,
    _two_hours,
)
from tests.support import Postgres, short_tmpdir


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


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def checkpointed(postgres: Postgres) -> Tenant:
    """A workspace with checkpoints at seq 2 and 4 and receipts 1 to 3 stored."""
    conn = await connect(postgres.url)
    try:
        return await _checkpointed(postgres.url, conn)
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def two_hours(postgres: Postgres) -> Tenant:
    """A workspace with usage in two hours, rolled up: see `_two_hours`."""
    conn = await connect(postgres.url)
    try:
        tenant = await _two_hours(postgres.url, conn)
        await run_rollup(conn, timeout_s=30, max_tags=100)
        return tenant
    finally:
        await conn.close()
