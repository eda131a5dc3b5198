"""The admin operations tests' connections: the migrated session database as its owner
and as the app role, an empty database of a test's own, and a local keyring."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.store.database import APP_ROLE, connect
from recovea_proxy.store.migrate import apply_migrations
from tests.support import Postgres


@pytest.fixture(scope="module")
def migrated(postgres: Postgres) -> str:
    async def migrate() -> None:
        conn = await connect(postgres.url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    return postgres.url


@pytest.fixture
async def owner(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(migrated)
    yield conn
    await conn.close()


@pytest.fixture
async def app(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the gateway's pool has it: the app role, bound by row-level
    security (the admin API runs the operations on it)."""
    conn = await connect(migrated.replace("postgres:@", f"{APP_ROLE}@", 1))
    yield conn
    await conn.close()


@pytest.fixture
async def empty(postgres: Postgres, migrated: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner connection to a database of the test's own, migrated and empty (`init`
    and `provider-key rotate` see the whole database)."""
    database = f"ops_{uuid.uuid4().hex[:12]}"
    admin = await connect(migrated)
    await admin.execute(f"CREATE DATABASE {database}")
    conn = await connect(postgres.url.replace("/postgres?", f"/{database}?", 1))
    try:
        await apply_migrations(conn)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {database}")
        await admin.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}"), {})
