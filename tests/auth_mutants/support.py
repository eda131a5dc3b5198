"""What the auth mutation tests share: the session's key store (a workspace's keys made
as the CLI makes them), one process's auth on a real asyncpg pool of the app role, the
refusals' shape, moto's KMS behind the refusing front, the database gate's helpers and
the lock and wait helpers for lookups under load."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest

from recovea_proxy.admin import kms_operations as kms_ops
from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.auth.resolver import KeyResolver
from recovea_proxy.auth.workspace_keys import WorkspaceKeys
from recovea_proxy.errors import GatewayError
from recovea_proxy.store.database import connect, open_pool
from recovea_proxy.store.migrate import apply_migrations
from tests.db_gate import SOCKET, Gate
from tests.drain_support import app_url_of
from tests.kms_front import Call, KmsFront, Refusal
from tests.support import Postgres, short_tmpdir

OPENAI_SECRET = "sk-resolver-test-0123456789abcdefABCD"


ANTHROPIC_SECRET = "sk-ant-resolver-test-0123456789abcdWXYZ"


@dataclass
class Store:
    """The session's key store: its URLs, the master key, and one workspace's keys."""

    owner: str
    app: str
    master_file: Path
    workspace: str
    other_workspace: str
    admin: ops.CreatedKey
    member: ops.CreatedKey
    revoked: ops.CreatedKey


async def _prepare(owner: str, master_file: Path) -> Store:
    conn = await connect(owner)
    try:
        await apply_migrations(conn)
        keyring = Keyring(LocalMasterKey.load_or_create(master_file), {})
        tag = uuid.uuid4().hex[:8]
        workspace = await ops.create_workspace(conn, f"resolver-{tag}")
        other = await ops.create_workspace(conn, f"resolver-other-{tag}")
        admin = await ops.create_key(conn, workspace, role="admin", env="test")
        member = await ops.create_key(conn, workspace, project="apps", team="core")
        revoked = await ops.create_key(conn, workspace)
        await ops.revoke_key(conn, revoked.id)
        await ops.set_provider_key(conn, keyring, workspace, "openai", OPENAI_SECRET)
        await ops.set_provider_key(conn, keyring, other, "anthropic", ANTHROPIC_SECRET)
    finally:
        await conn.close()
    return Store(owner, app_url_of(owner), master_file, workspace, other, admin, member, revoked)


@dataclass
class Gateway:
    """One process's auth: its pool and resolver (listening for revocations)."""

    pool: asyncpg.Pool
    resolver: KeyResolver
    workspace_keys: WorkspaceKeys


async def open_auth(
    store: Store,
    *,
    keyring: Keyring | None = None,
    listen: bool = True,
    ttl_s: float = 60.0,
    negative_ttl_s: float = 60.0,
    data_key_ttl_s: float = 60.0,
    data_key_max_uses: int = 1000,
    max_keys: int = 100_000,
    workspace_data_key_ttl_s: float = 60.0,
    url: str | None = None,
    pool_size: int = 4,
    timeout_s: float = 2.0,
) -> Gateway:
    pool = await open_pool(url or store.app, size=pool_size)
    keyring = keyring or Keyring(LocalMasterKey.load(store.master_file), {})
    workspace_keys = WorkspaceKeys(keyring, pool, timeout_s=2.0)
    resolver = KeyResolver(
        pool,
        keyring,
        ttl_s=ttl_s,
        negative_ttl_s=negative_ttl_s,
        data_key_ttl_s=data_key_ttl_s,
        data_key_max_uses=data_key_max_uses,
        workspace_keys=workspace_keys,
        workspace_data_key_ttl_s=workspace_data_key_ttl_s,
        timeout_s=timeout_s,
        max_keys=max_keys,
    )
    if listen:
        await resolver.start(store.app)
    return Gateway(pool, resolver, workspace_keys)


async def close_auth(gateway: Gateway) -> None:
    await gateway.resolver.close()
    await gateway.workspace_keys.close()
    await gateway.pool.close()


def refused(exc: pytest.ExceptionInfo[GatewayError]) -> tuple[int, str]:
    """The refusal's status and code; the messages a client shows are checked too."""
    if exc.value.status == 401:
        assert exc.value.message == "Invalid API key."
    if exc.value.code == "auth_unavailable":
        assert exc.value.message == "The key store is unreachable; try again."
    return exc.value.status, exc.value.code


async def until(predicate: Callable[[], bool], deadline_s: float = 10.0) -> None:
    """Poll `predicate` until it is true, without blocking the event loop."""
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


def _not_refused(resolver: KeyResolver, token: str) -> bool:
    try:
        return resolver.cached(token) is None
    except GatewayError:
        return False


@dataclass
class Kms:
    """moto's KMS server behind the refusing front (tests/kms_front.py), which every
    boto3 client of this process reaches (AWS_ENDPOINT_URL_KMS), and a client straight
    to moto that makes keys."""

    front: KmsFront
    moto: Any

    def new_key(self) -> str:
        """A fresh customer key's id."""
        key_id: str = self.moto.create_key(Description="resolver-mutants")["KeyMetadata"]["KeyId"]
        return key_id

    def decrypts_since(self, mark: int) -> list[Call]:
        return [call for call in self.front.calls_since(mark) if call.operation == "Decrypt"]

    def take_away(self, key_id: str) -> None:
        """The customer disables the key: KMS refuses its Decrypt."""
        self.front.refuse(Refusal(key_id, "DisabledException", operation="Decrypt"))


def admin_keyring(store: Store) -> Keyring:
    """The keyring the admin commands use: the deployment's local master key."""
    return Keyring(LocalMasterKey.load(store.master_file), {})


async def new_workspace(store: Store, secrets: dict[str, str]) -> tuple[str, dict[str, str]]:
    """A workspace with these provider keys (under the deployment's master key), and
    the stored key id of each."""
    conn = await connect(store.owner)
    try:
        workspace = await ops.create_workspace(conn, f"own-key-{uuid.uuid4().hex[:8]}")
        ids = {
            provider: await ops.set_provider_key(
                conn, admin_keyring(store), workspace, provider, secret
            )
            for provider, secret in secrets.items()
        }
    finally:
        await conn.close()
    return workspace, ids


async def put_on_own_key(store: Store, workspace: str, key_id: str) -> str:
    """`recovea workspace kms set`: the workspace's keys re-wrapped under `key_id`; its ARN."""
    conn = await connect(store.owner)
    try:
        result = await kms_ops.set_workspace_kms(conn, admin_keyring(store), workspace, key_id)
    finally:
        await conn.close()
    arn: str = result["kms_key_arn"]
    return arn


async def put_back(store: Store, workspace: str) -> None:
    """`recovea workspace kms clear`: back on the deployment's master key."""
    conn = await connect(store.owner)
    try:
        await kms_ops.clear_workspace_kms(conn, admin_keyring(store), workspace)
    finally:
        await conn.close()


def gate_to(postgres: Postgres) -> Gate:
    """A gate (tests/db_gate.py) in front of the session's Postgres, shut."""
    return Gate(Path(postgres.data_dir) / "pg")


async def listeners(store: Store, name: str) -> int:
    """The connections the server holds under the application name `name`."""
    conn = await connect(store.owner)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
        )
    finally:
        await conn.close()
    return count


async def until_async(count: Callable[[], Awaitable[int]], expected: int) -> None:
    """Poll the awaitable `count` until it is `expected`."""
    end = time.monotonic() + 10.0
    while await count() != expected:
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


#: the key lookups waiting on a lock in the key store
WAITING_LOOKUPS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE '%resolve_rcv_key%' AND pid <> pg_backend_pid()"
)


#: the test's own lockers waiting for the keys table
WAITING_LOCKERS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE 'LOCK TABLE recovea.rcv_keys%'"
)


LOCK_KEYS = "LOCK TABLE recovea.rcv_keys IN ACCESS EXCLUSIVE MODE"


async def waiting(conn: asyncpg.Connection, query: str, expected: int) -> None:
    """Poll `query` (a count) on `conn` until it is `expected`."""
    end = time.monotonic() + 10.0
    while await conn.fetchval(query) != expected:
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {expected}: {query}")
        await asyncio.sleep(0.01)


def made_up_key(n: int) -> str:
    return f"rcv_live_{n:043d}"


async def lock(transaction: Any, conn: asyncpg.Connection) -> None:
    await transaction.start()
    await conn.execute(LOCK_KEYS)


async def kms_row(store: Store, kms: Kms) -> str:
    """A workspace whose OpenAI key was stored while the deployment ran on an AWS KMS
    key: every unwrap of its data key is a Decrypt the front sees."""
    workspace, _ = await new_workspace(store, {})
    conn = await connect(store.owner)
    try:
        on_kms = Keyring(KmsMasterKey(kms.new_key()), {})
        await ops.set_provider_key(conn, on_kms, workspace, "openai", OPENAI_SECRET)
    finally:
        await conn.close()
    return workspace


#: provider-key row loads waiting on a lock in the key store
WAITING_ROW_LOADS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE '%FROM recovea.provider_keys p%' AND pid <> pg_backend_pid()"
)


class Refuser:
    """A unix socket where Postgres would be (in `where`, a shut gate's directory, or
    a directory of its own), that hangs up on every connection and notes when each
    came."""

    def __init__(self, where: Path | None = None) -> None:
        self.dir = where or short_tmpdir()
        self.attempts: list[float] = []
        self._server: asyncio.AbstractServer | None = None

    def url(self, app_url: str) -> str:
        return f"{app_url.split('?', 1)[0]}?host={quote(str(self.dir), safe='/')}"

    async def __aenter__(self) -> Refuser:
        self._server = await asyncio.start_unix_server(self._hang_up, path=self.dir / SOCKET)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        (self.dir / SOCKET).unlink(missing_ok=True)

    async def _hang_up(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        writer.transport.abort()


class FailingKms:
    """An AWS KMS endpoint that answers every call 500 (KMSInternalException) and notes
    the operations it was asked."""

    def __init__(self) -> None:
        calls = self.calls = []  # type: list[str]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                calls.append(self.headers.get("X-Amz-Target", "").split(".")[-1])
                body = b'{"__type": "KMSInternalException", "message": "down"}'
                self.send_response(500)
                self.send_header("content-type", "application/x-amz-json-1.1")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
