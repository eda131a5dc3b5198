"""Key resolution and provider keys, in this process, on the real key store: a real
`KeyResolver` (and its `ProviderKeys`) on a real asyncpg pool of the app role against
the session's embedded Postgres, keys created as the CLI creates them.

The promises: a live key resolves to exactly its record and is then answered from
memory for its TTL; a malformed, unknown or revoked key is refused 401 (and the
refusal remembered for its short TTL); a revocation evicts the key at once; a store
that cannot be reached refuses 503 and never serves an unknown key. A provider key is
decrypted only under its own row's context, each unwrapped data key serves a bounded
number of requests for a bounded time, a replaced or forgotten key is reloaded, and
whatever cannot be loaded, unwrapped or opened is refused 503, never served.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import boto3
import pytest
from botocore.exceptions import ClientError

from recovea_proxy.admin import kms_operations as kms_ops
from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring, load_keyring, retire_local_key
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.auth.resolver import KeyRecord, KeyResolver
from recovea_proxy.auth.workspace_keys import WorkspaceKeys
from recovea_proxy.config import Settings
from recovea_proxy.errors import GatewayError
from recovea_proxy.policy import DEFAULT_POLICY, LeverPolicy
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


@pytest.fixture(scope="module")
def store(postgres: Postgres) -> Store:
    master_file = short_tmpdir() / "master.key"
    return asyncio.run(_prepare(postgres.url, master_file))


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


@pytest.fixture
async def auth(store: Store) -> AsyncIterator[KeyResolver]:
    gateway = await open_auth(store)
    yield gateway.resolver
    await close_auth(gateway)


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


# --- rcv_ keys ------------------------------------------------------------------


async def test_a_live_key_resolves_to_exactly_its_record(store: Store, auth: KeyResolver) -> None:
    """The admin key: its id, workspace, role and env, no project or team, the workspace's
    default lever policy. The member key: its project and team, by name and by id."""
    admin = await auth.resolve(store.admin.secret)
    assert admin == KeyRecord(
        id=store.admin.id,
        customer_id=store.workspace,
        role="admin",
        env="test",
        project=None,
        team=None,
        project_id=None,
        team_id=None,
        policy=DEFAULT_POLICY,
    )
    member = await auth.resolve(store.member.secret)
    assert (member.role, member.env, member.project, member.team) == (
        "member",
        "live",
        "apps",
        "core",
    )
    assert member.project_id is not None and member.team_id is not None
    assert str(uuid.UUID(member.project_id)) != str(uuid.UUID(member.team_id))


async def test_a_resolved_key_is_answered_from_memory(store: Store, auth: KeyResolver) -> None:
    """Before its first use a key is not cached; once resolved, `cached` answers it
    without the key store, the same record."""
    assert auth.cached(store.member.secret) is None
    record = await auth.resolve(store.member.secret)
    assert auth.cached(store.member.secret) == record
    assert await auth.resolve(store.member.secret) == record


async def test_the_key_cache_is_bounded(store: Store) -> None:
    """With room for one key, resolving a second evicts the first from memory (it is
    looked up again next time), and both keep resolving."""
    gateway = await open_auth(store, listen=False, max_keys=1)
    resolver = gateway.resolver
    try:
        first = await resolver.resolve(store.admin.secret)
        await resolver.resolve(store.member.secret)
        assert resolver.cached(store.admin.secret) is None
        assert resolver.cached(store.member.secret) is not None
        assert await resolver.resolve(store.admin.secret) == first
        assert resolver.cached(store.member.secret) is None
    finally:
        await close_auth(gateway)


async def test_keys_on_the_default_policy_share_one_policy_object(
    store: Store, auth: KeyResolver
) -> None:
    """Cached keys of workspaces on the default lever policy hold one policy object
    between them (up to 100,000 cached keys), not a copy each."""
    admin = await auth.resolve(store.admin.secret)
    member = await auth.resolve(store.member.secret)
    assert admin.policy is DEFAULT_POLICY
    assert member.policy is DEFAULT_POLICY


async def test_a_workspaces_lever_policy_comes_with_its_key(store: Store) -> None:
    """A workspace that changed its cache policy gets it with every key it resolves."""
    conn = await connect(store.owner)
    try:
        workspace = await ops.create_workspace(conn, f"policy-{uuid.uuid4().hex[:8]}")
        key = await ops.create_key(conn, workspace)
        await conn.execute(
            "UPDATE recovea.workspaces SET cache_policy = 'all', cache_ttl_s = 60,"
            " cache_tool_calls = true WHERE customer_id = $1",
            uuid.UUID(workspace),
        )
    finally:
        await conn.close()
    gateway = await open_auth(store, listen=False)
    try:
        record = await gateway.resolver.resolve(key.secret)
    finally:
        await close_auth(gateway)
    assert record.policy == LeverPolicy(cache="all", cache_ttl_s=60, cache_tool_calls=True)


@pytest.mark.parametrize(
    "token",
    ["", "rcv_live_short", "sk-not-ours-0123456789", "rcv_prod_" + "a" * 43],
)
async def test_a_malformed_key_is_refused_401(auth: KeyResolver, token: str) -> None:
    """Anything not shaped like an rcv_ key is refused 401 `invalid_api_key`."""
    with pytest.raises(GatewayError) as exc:
        await auth.resolve(token)
    assert refused(exc) == (401, "invalid_api_key")


async def test_an_unknown_key_is_refused_and_the_refusal_remembered(auth: KeyResolver) -> None:
    """A well-formed key the store does not know: 401, and `cached` then refuses it 401
    from memory."""
    unknown = "rcv_live_" + "Q" * 43
    assert auth.cached(unknown) is None
    with pytest.raises(GatewayError) as exc:
        await auth.resolve(unknown)
    assert refused(exc) == (401, "invalid_api_key")
    with pytest.raises(GatewayError) as again:
        auth.cached(unknown)
    assert refused(again) == (401, "invalid_api_key")


async def test_a_revoked_key_is_refused(store: Store, auth: KeyResolver) -> None:
    """A key revoked before it was ever used is refused 401."""
    with pytest.raises(GatewayError) as exc:
        await auth.resolve(store.revoked.secret)
    assert refused(exc) == (401, "invalid_api_key")


async def test_the_key_caches_expire(store: Store) -> None:
    """A resolved key is asked again once its TTL passed; a refusal once the negative
    TTL passed."""
    gateway = await open_auth(store, listen=False, ttl_s=0.05, negative_ttl_s=0.05)
    resolver = gateway.resolver
    unknown = "rcv_test_" + "Z" * 43
    try:
        await resolver.resolve(store.admin.secret)
        with pytest.raises(GatewayError):
            await resolver.resolve(unknown)
        await until(lambda: resolver.cached(store.admin.secret) is None)
        await until(lambda: _not_refused(resolver, unknown))
    finally:
        await close_auth(gateway)


def _not_refused(resolver: KeyResolver, token: str) -> bool:
    try:
        return resolver.cached(token) is None
    except GatewayError:
        return False


async def test_a_revocation_evicts_the_key_at_once(store: Store, auth: KeyResolver) -> None:
    """A cached key revoked (by the CLI, in another process) is evicted as soon as the
    notice arrives, long before its TTL; the next use is refused 401. Other keys stay."""
    conn = await connect(store.owner)
    try:
        key = await ops.create_key(conn, store.workspace)
        await auth.resolve(key.secret)
        await auth.resolve(store.admin.secret)
        assert auth.cached(key.secret) is not None
        await ops.revoke_key(conn, key.id)
    finally:
        await conn.close()
    await until(lambda: auth.cached(key.secret) is None)
    with pytest.raises(GatewayError) as exc:
        await auth.resolve(key.secret)
    assert refused(exc) == (401, "invalid_api_key")
    assert auth.cached(store.admin.secret) is not None


async def test_a_store_that_cannot_be_reached_refuses_503_never_serves(
    own_postgres: Postgres,
) -> None:
    """With the key store down: a key already resolved is still answered from memory; a
    key not yet seen is refused 503 `auth_unavailable`, not 401 and never served; the
    provider key of the workspace cannot be loaded either (503)."""
    own = await _prepare(own_postgres.url, short_tmpdir() / "master.key")
    gateway = await open_auth(own, listen=False)
    resolver = gateway.resolver
    try:
        known = await resolver.resolve(own.admin.secret)
        own_postgres.stop()
        assert resolver.cached(own.admin.secret) == known
        assert await resolver.resolve(own.admin.secret) == known
        with pytest.raises(GatewayError) as exc:
            await resolver.resolve(own.member.secret)
        assert refused(exc) == (503, "auth_unavailable")
        with pytest.raises(GatewayError) as load:
            await resolver.provider_keys.load(own.workspace, "openai")
        assert refused(load) == (503, "auth_unavailable")
    finally:
        gateway.pool.terminate()
        await resolver.close()
        await gateway.workspace_keys.close()


# --- provider keys ----------------------------------------------------------------


async def test_a_provider_key_opens_for_its_own_workspace_only(
    store: Store, auth: KeyResolver
) -> None:
    """The workspace's OpenAI key is decrypted for it; the workspace has no Anthropic
    key (None), and another workspace's key is never returned for it."""
    keys = auth.provider_keys
    assert await keys.load(store.workspace, "openai") == bytearray(OPENAI_SECRET.encode())
    assert await keys.load(store.workspace, "anthropic") is None
    assert await keys.load(store.other_workspace, "anthropic") == bytearray(
        ANTHROPIC_SECRET.encode()
    )
    assert await keys.load(store.other_workspace, "openai") is None


async def test_a_loaded_provider_key_is_served_from_memory(store: Store, auth: KeyResolver) -> None:
    """Not cached before its first load; afterwards `cached` decrypts it from memory,
    and a workspace without a key for that provider has nothing cached."""
    keys = auth.provider_keys
    assert keys.cached(store.workspace, "openai") is None
    await keys.load(store.workspace, "openai")
    assert keys.cached(store.workspace, "openai") == bytearray(OPENAI_SECRET.encode())
    await keys.load(store.workspace, "anthropic")
    assert keys.cached(store.workspace, "anthropic") is None


async def test_a_data_key_serves_a_bounded_number_of_requests(store: Store) -> None:
    """With 3 uses per unwrapped data key: three requests are served from memory, the
    fourth must unwrap again (and then is served)."""
    gateway = await open_auth(store, listen=False, data_key_max_uses=3)
    keys = gateway.resolver.provider_keys
    try:
        assert await keys.load(store.workspace, "openai") is not None  # use 1
        assert keys.cached(store.workspace, "openai") is not None  # use 2
        assert keys.cached(store.workspace, "openai") is not None  # use 3
        assert keys.cached(store.workspace, "openai") is None
        assert await keys.load(store.workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert keys.cached(store.workspace, "openai") is not None
    finally:
        await close_auth(gateway)


@pytest.mark.parametrize("expiring", ["data key", "row"])
async def test_a_data_key_and_a_row_serve_for_a_bounded_time(store: Store, expiring: str) -> None:
    """A data key past its TTL is unwrapped again; a row past its TTL is read again."""
    if expiring == "data key":
        gateway = await open_auth(store, listen=False, data_key_ttl_s=0.05)
    else:
        gateway = await open_auth(store, listen=False, ttl_s=0.05)
    keys = gateway.resolver.provider_keys
    try:
        await keys.load(store.workspace, "openai")
        await until(lambda: keys.cached(store.workspace, "openai") is None)
        assert await keys.load(store.workspace, "openai") == bytearray(OPENAI_SECRET.encode())
    finally:
        await close_auth(gateway)


async def test_a_replaced_provider_key_is_served_once_forgotten(store: Store) -> None:
    """A workspace that replaces its key: this process serves the new one once it forgets
    the old row (as the admin API does after a replace)."""
    conn = await connect(store.owner)
    try:
        workspace = await ops.create_workspace(conn, f"replace-{uuid.uuid4().hex[:8]}")
        keyring = Keyring(LocalMasterKey.load(store.master_file), {})
        await ops.set_provider_key(conn, keyring, workspace, "openai", "sk-old-0123456789")
        gateway = await open_auth(store, listen=False)
        keys = gateway.resolver.provider_keys
        try:
            assert await keys.load(workspace, "openai") == bytearray(b"sk-old-0123456789")
            await ops.set_provider_key(conn, keyring, workspace, "openai", "sk-new-0123456789")
            keys.forget(workspace, "openai")
            assert keys.cached(workspace, "openai") is None
            assert await keys.load(workspace, "openai") == bytearray(b"sk-new-0123456789")
        finally:
            await close_auth(gateway)
    finally:
        await conn.close()


async def test_a_workspace_key_change_notice_drops_its_provider_keys(
    store: Store, auth: KeyResolver
) -> None:
    """A NOTIFY that a workspace's own KMS key changed drops that workspace's cached
    provider keys (rows and data keys) at once; other workspaces keep theirs."""
    keys = auth.provider_keys
    await keys.load(store.workspace, "openai")
    await keys.load(store.other_workspace, "anthropic")
    conn = await connect(store.owner)
    try:
        await conn.execute("SELECT pg_notify('recovea_workspace_kms_changed', $1)", store.workspace)
    finally:
        await conn.close()
    await until(lambda: keys.cached(store.workspace, "openai") is None)
    assert keys.cached(store.other_workspace, "anthropic") is not None


async def test_a_ciphertext_copied_from_another_workspace_never_opens(store: Store) -> None:
    """The owner copies workspace A's sealed OpenAI key into workspace B's row: B's key
    is refused 503 (it does not open under B's context), never A's secret served."""
    conn = await connect(store.owner)
    try:
        victim = await ops.create_workspace(conn, f"victim-{uuid.uuid4().hex[:8]}")
        thief = await ops.create_workspace(conn, f"thief-{uuid.uuid4().hex[:8]}")
        keyring = Keyring(LocalMasterKey.load(store.master_file), {})
        await ops.set_provider_key(conn, keyring, victim, "openai", "sk-victim-0123456789")
        await ops.set_provider_key(conn, keyring, thief, "openai", "sk-thief-0123456789")
        await conn.execute(
            "UPDATE recovea.provider_keys t SET ciphertext = v.ciphertext, nonce = v.nonce,"
            " wrapped_data_key = v.wrapped_data_key FROM recovea.provider_keys v"
            " WHERE t.customer_id = $1 AND v.customer_id = $2"
            " AND t.provider = 'openai' AND v.provider = 'openai'",
            uuid.UUID(thief),
            uuid.UUID(victim),
        )
    finally:
        await conn.close()
    gateway = await open_auth(store, listen=False)
    try:
        with pytest.raises(GatewayError) as exc:
            await gateway.resolver.provider_keys.load(thief, "openai")
        assert refused(exc) == (503, "auth_unavailable")
        assert await gateway.resolver.provider_keys.load(victim, "openai") == bytearray(
            b"sk-victim-0123456789"
        )
    finally:
        await close_auth(gateway)


async def test_a_key_wrapped_by_a_master_this_process_lacks_is_refused(store: Store) -> None:
    """A gateway whose keyring lacks the master that wrapped the row refuses 503."""
    stranger = LocalMasterKey(os.urandom(32), "local:stranger")
    gateway = await open_auth(store, keyring=Keyring(stranger, {}), listen=False)
    try:
        with pytest.raises(GatewayError) as exc:
            await gateway.resolver.provider_keys.load(store.workspace, "openai")
        assert refused(exc) == (503, "auth_unavailable")
    finally:
        await close_auth(gateway)


# --- the keyring --------------------------------------------------------------------


def test_the_local_master_key_is_created_once_owner_only(tmp_path: Path) -> None:
    """The first load creates a 32-byte key file readable by its owner only; the next
    load reads the same key."""
    settings = Settings(data_dir=tmp_path / "data")
    first = load_keyring(settings)
    path = tmp_path / "data" / "master.key"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(path.read_bytes()) == 32
    assert load_keyring(settings).current.key_id == first.current.key_id
    assert first.current.key_id.startswith("local:")
    assert first.master_for(None) is first.current


def test_a_retired_local_key_still_reads_its_rows(tmp_path: Path) -> None:
    """After the local key is retired (moved aside, a new one created), the keyring wraps
    with the new key and still unwraps what the old one wrapped; a key id it has never
    held is a KeyError."""
    settings = Settings(data_dir=tmp_path, master_key_file=tmp_path / "keys" / "master.key")
    old = load_keyring(settings).current
    context = {"workspace": "w", "provider": "openai", "key_id": "k"}
    data_key, wrapped = old.generate_data_key(context)
    new = retire_local_key(settings)
    keyring = load_keyring(settings)
    assert keyring.current.key_id == new.key_id != old.key_id
    assert keyring.reader("local", old.key_id).unwrap(wrapped, context) == data_key
    assert keyring.reader("local", new.key_id) is keyring.current
    with pytest.raises(KeyError):
        keyring.reader("local", "local:0000000000000000")


def test_a_stored_kms_row_is_read_with_the_kms_key_it_names(tmp_path: Path) -> None:
    """A row wrapped by an AWS KMS key is read through that key (made once, then reused),
    whatever the deployment's current master; an unknown local key is a KeyError that
    names it."""
    keyring = load_keyring(Settings(data_dir=tmp_path))
    arn = "arn:aws:kms:us-east-1:111122223333:key/0000-test"
    reader = keyring.reader("kms", arn)
    assert (reader.backend, reader.key_id) == ("kms", arn)
    assert keyring.reader("kms", arn) is reader
    with pytest.raises(KeyError, match="master key local:0000000000000000 \\(local\\)"):
        keyring.reader("local", "local:0000000000000000")


def test_with_kms_configured_the_local_key_still_reads_old_rows(tmp_path: Path) -> None:
    """RECOVEA_KMS_KEY_ID set: new keys are wrapped by KMS, and the local key file that
    wrapped the rows stored before keeps reading them."""
    local = load_keyring(Settings(data_dir=tmp_path)).current
    arn = "arn:aws:kms:us-east-1:111122223333:key/0000-current"
    keyring = load_keyring(Settings(data_dir=tmp_path, kms_key_id=arn))
    assert (keyring.current.backend, keyring.current.key_id) == ("kms", arn)
    assert keyring.reader("local", local.key_id).key_id == local.key_id


# --- workspaces on their own KMS key --------------------------------------------------


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


@pytest.fixture(scope="module")
def kms() -> Iterator[Kms]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    front = KmsFront(moto)
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL_KMS", front.url)
            patch.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
            patch.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
            patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            client = boto3.client("kms", endpoint_url=moto, region_name="us-east-1", **creds)
            yield Kms(front, client)
    finally:
        front.stop()
        server.stop()


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


async def test_a_workspace_on_its_own_key_is_served_through_that_key_for_its_short_ttl(
    store: Store, kms: Kms
) -> None:
    """A key stored after the workspace moved to its own KMS key is wrapped by that key;
    the gateway unwraps it with one Decrypt naming the key, under the key's context,
    serves it from memory for RECOVEA_WORKSPACE_DATA_KEY_TTL_S (not the deployment's
    longer data-key TTL), then asks KMS again; and records that the key works (what
    `recovea workspace show` prints)."""
    workspace, _ = await new_workspace(store, {})
    arn = await put_on_own_key(store, workspace, kms.new_key())
    conn = await connect(store.owner)
    try:
        key_id = await ops.set_provider_key(
            conn, admin_keyring(store), workspace, "openai", OPENAI_SECRET
        )
        stored = await conn.fetchrow(
            "SELECT backend, master_key_id FROM recovea.provider_keys WHERE id = $1",
            uuid.UUID(key_id),
        )
        assert (stored["backend"], stored["master_key_id"]) == ("kms", arn)
    finally:
        await conn.close()
    gateway = await open_auth(
        store, listen=False, data_key_ttl_s=60.0, workspace_data_key_ttl_s=2.0
    )
    keys = gateway.resolver.provider_keys
    try:
        mark = kms.front.mark()
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        context = {"workspace": workspace, "provider": "openai", "key_id": key_id}
        assert [(c.key_id, c.context) for c in kms.decrypts_since(mark)] == [(arn, context)]
        assert keys.cached(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert len(kms.decrypts_since(mark)) == 1
        await until(lambda: keys.cached(workspace, "openai") is None)
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert len(kms.decrypts_since(mark)) == 2
    finally:
        await close_auth(gateway)
    conn = await connect(store.owner)
    try:
        seen = await conn.fetchrow(
            "SELECT key_arn, reason FROM recovea.workspace_kms_status WHERE customer_id = $1",
            uuid.UUID(workspace),
        )
    finally:
        await conn.close()
    assert seen is not None and (seen["key_arn"], seen["reason"]) == (arn, None)


async def test_two_provider_keys_of_a_workspace_unwrapped_at_once_each_get_their_own(
    store: Store, kms: Kms
) -> None:
    """Two requests of one workspace, for two providers, whose data keys expired at the
    same moment: each is served its own provider key."""
    workspace, _ = await new_workspace(
        store, {"openai": OPENAI_SECRET, "anthropic": ANTHROPIC_SECRET}
    )
    await put_on_own_key(store, workspace, kms.new_key())
    gateway = await open_auth(store, listen=False, data_key_max_uses=1)
    keys = gateway.resolver.provider_keys
    try:
        await keys.load(workspace, "openai")
        await keys.load(workspace, "anthropic")
        both = await asyncio.gather(
            keys.load(workspace, "openai"), keys.load(workspace, "anthropic")
        )
        assert list(both) == [
            bytearray(OPENAI_SECRET.encode()),
            bytearray(ANTHROPIC_SECRET.encode()),
        ]
    finally:
        await close_auth(gateway)


async def test_a_workspace_key_taken_away_stops_all_its_provider_keys_at_once(
    store: Store, kms: Kms
) -> None:
    """The customer disables the workspace's key: the request that finds out is refused
    503 `provider_key_unavailable`, the workspace's other provider key (still cached,
    uses left) stops being served at once, and the next request is refused the same."""
    workspace, _ = await new_workspace(
        store, {"openai": OPENAI_SECRET, "anthropic": ANTHROPIC_SECRET}
    )
    key = kms.new_key()
    await put_on_own_key(store, workspace, key)
    gateway = await open_auth(store, listen=False, data_key_max_uses=2)
    keys = gateway.resolver.provider_keys
    try:
        await keys.load(workspace, "openai")
        await keys.load(workspace, "anthropic")
        assert keys.cached(workspace, "openai") is not None  # its last use
        kms.take_away(key)
        for _ in range(2):
            with pytest.raises(GatewayError) as exc:
                await keys.load(workspace, "openai")
            assert refused(exc) == (503, "provider_key_unavailable")
            assert keys.cached(workspace, "anthropic") is None
    finally:
        kms.front.allow_all()
        await close_auth(gateway)


async def test_a_workspace_moved_to_a_new_key_is_served_at_once(store: Store, kms: Kms) -> None:
    """The customer disabled the workspace's key (a request was refused), then moves the
    workspace onto a new key: once the change notice arrives, the next request is served
    through the new key, not refused from the memory of the old key's refusal."""
    workspace, _ = await new_workspace(store, {"openai": OPENAI_SECRET})
    old = kms.new_key()
    await put_on_own_key(store, workspace, old)
    gateway = await open_auth(store, listen=False)
    keys = gateway.resolver.provider_keys
    try:
        kms.take_away(old)
        with pytest.raises(GatewayError) as exc:
            await keys.load(workspace, "openai")
        assert refused(exc) == (503, "provider_key_unavailable")
        kms.front.allow_all()  # the old key is readable once more, for the re-wrap
        new_arn = await put_on_own_key(store, workspace, kms.new_key())
        keys.forget_workspace(workspace)  # the change notice
        mark = kms.front.mark()
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert [c.key_id for c in kms.decrypts_since(mark)] == [new_arn]
    finally:
        kms.front.allow_all()
        await close_auth(gateway)


async def test_a_rewrapped_row_is_unwrapped_afresh_once_it_is_read_again(
    store: Store, kms: Kms
) -> None:
    """A gateway that missed the change notices: a workspace moved onto its own key is
    unwrapped through that key once its row is read again (row TTL), never served from
    the data key of its old wrapping — so a key the customer disabled is refused; moved
    back onto the deployment's key, it is served again the same way."""
    workspace, _ = await new_workspace(store, {"openai": OPENAI_SECRET})
    row_ttl_s = 0.2
    gateway = await open_auth(store, listen=False, ttl_s=row_ttl_s, data_key_ttl_s=60.0)
    keys = gateway.resolver.provider_keys
    try:
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        key = kms.new_key()
        await put_on_own_key(store, workspace, key)
        kms.take_away(key)
        await asyncio.sleep(row_ttl_s * 1.5)
        with pytest.raises(GatewayError) as exc:
            await keys.load(workspace, "openai")
        assert refused(exc) == (503, "provider_key_unavailable")
        kms.front.allow_all()  # readable once more, for `kms clear` to re-wrap
        await put_back(store, workspace)
        await asyncio.sleep(row_ttl_s * 1.5)
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
    finally:
        kms.front.allow_all()
        await close_auth(gateway)


async def test_a_row_wrapped_by_a_deployment_kms_key_is_read_through_that_key(
    store: Store, kms: Kms
) -> None:
    """Rows stored while the deployment ran on AWS KMS (RECOVEA_KMS_KEY_ID) keep being
    served by a gateway now on its local key: the row names the KMS key, which unwraps
    it."""
    deployment = kms.new_key()
    workspace, _ = await new_workspace(store, {})
    conn = await connect(store.owner)
    try:
        on_kms = Keyring(KmsMasterKey(deployment), {})
        await ops.set_provider_key(conn, on_kms, workspace, "openai", OPENAI_SECRET)
    finally:
        await conn.close()
    gateway = await open_auth(store, listen=False)
    try:
        mark = kms.front.mark()
        assert await gateway.resolver.provider_keys.load(workspace, "openai") == bytearray(
            OPENAI_SECRET.encode()
        )
        assert [c.key_id for c in kms.decrypts_since(mark)] == [None]
    finally:
        await close_auth(gateway)


# --- the revocation listener ------------------------------------------------------------


def gate_to(postgres: Postgres) -> Gate:
    """A gate (tests/db_gate.py) in front of the session's Postgres, shut."""
    return Gate(Path(postgres.data_dir) / "pg")


async def shut(gate: Gate) -> None:
    """Shut the gate, and let the connections it cut finish closing in this loop."""
    await gate.shut()
    await asyncio.sleep(0.1)


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


async def test_a_listener_that_cannot_connect_at_start_keeps_trying(
    store: Store, postgres: Postgres
) -> None:
    """Started while the store's notices cannot be reached, the gateway serves keys all
    the same and keeps trying in the background. Once it hears again it forgets every
    key and provider key it cached (a revocation sent meanwhile was lost), and from then
    on a revocation evicts at once."""
    gate = gate_to(postgres)
    gateway = await open_auth(store, listen=False)
    resolver = gateway.resolver
    conn = await connect(store.owner)
    try:
        await resolver.start(gate.url(store.app))
        missed = await ops.create_key(conn, store.workspace)
        await resolver.resolve(missed.secret)
        await resolver.provider_keys.load(store.workspace, "openai")
        await ops.revoke_key(conn, missed.id)  # a notice nobody hears
        assert resolver.cached(missed.secret) is not None
        await asyncio.sleep(0.6)  # a retry fails in the background first
        await gate.open()
        await until(lambda: resolver.cached(missed.secret) is None)
        assert resolver.provider_keys.cached(store.workspace, "openai") is None
        heard = await ops.create_key(conn, store.workspace)
        await resolver.resolve(heard.secret)
        await ops.revoke_key(conn, heard.id)
        await until(lambda: resolver.cached(heard.secret) is None)
    finally:
        await conn.close()
        await close_auth(gateway)
        await shut(gate)


async def test_a_lost_listener_reconnects_and_forgets_what_it_may_have_missed(
    store: Store, postgres: Postgres
) -> None:
    """The listener's connection is cut: the gateway connects again, forgets every key
    and provider key it cached meanwhile, and hears revocations again."""
    gate = gate_to(postgres)
    await gate.open()
    gateway = await open_auth(store, listen=False)
    resolver = gateway.resolver
    conn = await connect(store.owner)
    try:
        await resolver.start(gate.url(store.app))
        await resolver.resolve(store.admin.secret)
        await resolver.provider_keys.load(store.workspace, "openai")
        gate.cut()
        await until(lambda: resolver.cached(store.admin.secret) is None)
        assert resolver.provider_keys.cached(store.workspace, "openai") is None
        key = await ops.create_key(conn, store.workspace)
        await resolver.resolve(key.secret)
        await ops.revoke_key(conn, key.id)
        await until(lambda: resolver.cached(key.secret) is None)
    finally:
        await conn.close()
        await close_auth(gateway)
        await shut(gate)


async def test_closing_while_the_store_stops_answering_is_bounded_and_quiet(
    store: Store, postgres: Postgres
) -> None:
    """At shutdown with a store that holds every byte (connected, silent), closing the
    listener takes at most the auth timeout and raises nothing: the rest of the
    shutdown (the meter's flush) still runs."""
    gate = gate_to(postgres)
    await gate.open()
    gateway = await open_auth(store, listen=False, timeout_s=0.5)
    try:
        await gateway.resolver.start(gate.url(store.app))
        gate.stall()
        began = time.monotonic()
        await gateway.resolver.close()
        assert time.monotonic() - began < 3.0
    finally:
        gate.resume()
        await gateway.workspace_keys.close()
        await gateway.pool.close()
        await shut(gate)


@pytest.mark.parametrize("listener", ["connected", "lost", "never connected"])
async def test_a_closed_resolver_leaves_no_listener_behind(
    store: Store, postgres: Postgres, listener: str
) -> None:
    """Closing the gateway's auth, whatever its listener's state, returns cleanly; no
    listening connection stays or comes back afterwards, even once the store is
    reachable again."""
    name = f"listener-{uuid.uuid4().hex[:8]}"
    gate = gate_to(postgres)
    if listener != "never connected":
        await gate.open()
    gateway = await open_auth(store, listen=False)
    try:
        await gateway.resolver.start(gate.url(store.app) + f"&application_name={name}")
        if listener == "connected":
            await until_async(lambda: listeners(store, name), 1)
        if listener == "lost":
            await shut(gate)
            await asyncio.sleep(0.1)
    finally:
        await close_auth(gateway)
    if listener != "connected":
        await gate.open()  # the store reachable again
    try:
        await asyncio.sleep(1.0)  # four times the first reconnect delay
        assert await listeners(store, name) == 0
    finally:
        await shut(gate)


async def until_async(count: Callable[[], Awaitable[int]], expected: int) -> None:
    """Poll the awaitable `count` until it is `expected`."""
    end = time.monotonic() + 10.0
    while await count() != expected:
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


# --- lookups under load and overtaken by notices -----------------------------------------

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


@pytest.mark.parametrize(("pool_size", "at_once"), [(2, 1), (6, 3)])
async def test_key_lookups_take_at_most_half_the_pool(
    store: Store, pool_size: int, at_once: int
) -> None:
    """Callers making up many keys while the key store is slow: at most half the pool's
    connections look keys up at once (the rest stay for provider keys, the ledger and
    the admin API); every made-up key is refused 401 once the store answers."""
    gateway = await open_auth(store, listen=False, pool_size=pool_size, timeout_s=10.0)
    observer = await connect(store.owner)
    try:
        async with observer.transaction():
            await observer.execute(LOCK_KEYS)
            lookups = [
                asyncio.create_task(gateway.resolver.resolve(made_up_key(n)))
                for n in range(2 * pool_size)
            ]
            locked = await connect(store.owner)
            try:
                await waiting(locked, WAITING_LOOKUPS, at_once)
                await asyncio.sleep(0.2)
                assert await locked.fetchval(WAITING_LOOKUPS) == at_once
            finally:
                await locked.close()
        outcomes = await asyncio.gather(*lookups, return_exceptions=True)
        assert {(o.status, o.code) for o in outcomes if isinstance(o, GatewayError)} == {
            (401, "invalid_api_key")
        }
        assert len(outcomes) == 2 * pool_size
    finally:
        await observer.close()
        await close_auth(gateway)


async def test_a_key_store_that_stops_answering_is_refused_within_the_auth_timeout(
    store: Store, postgres: Postgres
) -> None:
    """The key store's connections stay open but nothing answers: a key not yet cached
    and a provider key not yet loaded are each refused 503 `auth_unavailable` within the
    auth timeout (and the connection's release within it again), not left waiting on
    the store."""
    gate = gate_to(postgres)
    await gate.open()
    gateway = await open_auth(store, listen=False, url=gate.url(store.app), timeout_s=0.3)
    resolver = gateway.resolver
    try:
        gate.stall()
        with pytest.raises(GatewayError) as exc:
            await asyncio.wait_for(resolver.resolve(store.member.secret), 3.0)
        assert refused(exc) == (503, "auth_unavailable")
        with pytest.raises(GatewayError) as load:
            await asyncio.wait_for(resolver.provider_keys.load(store.workspace, "openai"), 3.0)
        assert refused(load) == (503, "auth_unavailable")
    finally:
        gate.resume()
        gateway.pool.terminate()
        await resolver.close()
        await gateway.workspace_keys.close()
        await shut(gate)


async def test_a_lookup_overtaken_by_revocation_notices_three_times_is_refused_503(
    store: Store,
) -> None:
    """A key looked up while revocation notices keep arriving: an answer a notice
    overtook may predate that revocation, so it is not trusted and the key is looked up
    again; after three such crossings in a row the key is refused 503
    `auth_unavailable`, and nothing is cached for it."""
    gateway = await open_auth(store, timeout_s=10.0)
    resolver = gateway.resolver
    owner = await connect(store.owner)
    lockers = [await connect(store.owner) for _ in range(3)]
    transactions = [locker.transaction() for locker in lockers]
    try:
        # three cached keys, whose revocation notices the test can see arrive
        witnesses = [await ops.create_key(owner, store.workspace) for _ in lockers]
        for witness in witnesses:
            await resolver.resolve(witness.secret)
        await transactions[0].start()
        await lockers[0].execute(LOCK_KEYS)
        lookup = asyncio.create_task(resolver.resolve(store.member.secret))
        queued: asyncio.Task[None] | None = None
        for crossing, witness in enumerate(witnesses):
            await waiting(owner, WAITING_LOOKUPS, 1)
            await owner.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, witness.id)
            await until(lambda w=witness: resolver.cached(w.secret) is None)  # type: ignore[misc]
            if crossing + 1 < len(lockers):
                # the next lookup will wait behind the next locker, queued behind this one
                queued = asyncio.create_task(
                    lock(transactions[crossing + 1], lockers[crossing + 1])
                )
                await waiting(owner, WAITING_LOCKERS, 1)
            await transactions[crossing].commit()
            if queued is not None:
                await queued
                queued = None
        with pytest.raises(GatewayError) as exc:
            await lookup
        assert refused(exc) == (503, "auth_unavailable")
        assert resolver.cached(store.member.secret) is None
    finally:
        for locker in lockers:
            await locker.close()
        await owner.close()
        await close_auth(gateway)


async def lock(transaction: Any, conn: asyncpg.Connection) -> None:
    await transaction.start()
    await conn.execute(LOCK_KEYS)


async def test_a_store_that_never_answers_the_listener_does_not_hold_up_start(
    store: Store, postgres: Postgres
) -> None:
    """At start the key store accepts the listener's connection but never answers: start
    returns after the listener's connect timeout (5 s), the gateway keeps trying in the
    background, and hears revocations once the store answers."""
    gate = gate_to(postgres)
    await gate.open()
    gateway = await open_auth(store, listen=False)
    resolver = gateway.resolver
    conn = await connect(store.owner)
    try:
        gate.stall()
        await asyncio.wait_for(resolver.start(gate.url(store.app)), 8.0)
        await resolver.resolve(store.admin.secret)
        gate.resume()
        # back: the cache it kept while deaf is forgotten
        await until(lambda: resolver.cached(store.admin.secret) is None)
        key = await ops.create_key(conn, store.workspace)
        await resolver.resolve(key.secret)
        await ops.revoke_key(conn, key.id)
        await until(lambda: resolver.cached(key.secret) is None)
    finally:
        gate.resume()
        await conn.close()
        await close_auth(gateway)
        await shut(gate)


# --- what a cached provider key spares the store and the master key ----------------------


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


async def test_a_data_key_is_unwrapped_once_for_all_its_uses(store: Store, kms: Kms) -> None:
    """With 3 uses per data key, three requests cost one unwrap (one KMS Decrypt), the
    fourth a second one."""
    workspace = await kms_row(store, kms)
    gateway = await open_auth(store, listen=False, data_key_max_uses=3)
    keys = gateway.resolver.provider_keys
    try:
        mark = kms.front.mark()
        for _ in range(3):
            assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert len(kms.decrypts_since(mark)) == 1
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert len(kms.decrypts_since(mark)) == 2
    finally:
        await close_auth(gateway)


async def test_a_ciphertext_that_does_not_open_is_refused_and_its_data_key_unwrapped_afresh(
    store: Store, kms: Kms
) -> None:
    """A stored ciphertext that no longer opens under its data key is refused 503 on
    every request, and each refusal uses the data key up: the next request unwraps it
    afresh (a Decrypt each) instead of trusting it for its remaining uses."""
    workspace = await kms_row(store, kms)
    conn = await connect(store.owner)
    try:
        await conn.execute(
            "UPDATE recovea.provider_keys SET ciphertext = ciphertext || '\\x00'::bytea"
            " WHERE customer_id = $1",
            uuid.UUID(workspace),
        )
    finally:
        await conn.close()
    gateway = await open_auth(store, listen=False)
    keys = gateway.resolver.provider_keys
    try:
        mark = kms.front.mark()
        for attempt in (1, 2):
            with pytest.raises(GatewayError) as exc:
                await keys.load(workspace, "openai")
            assert refused(exc) == (503, "auth_unavailable")
            assert len(kms.decrypts_since(mark)) == attempt
    finally:
        await close_auth(gateway)


async def test_a_loaded_provider_key_is_served_while_the_store_stops_answering(
    store: Store, postgres: Postgres
) -> None:
    """Once loaded, a provider key is served from memory for the row TTL: a key store
    that stops answering does not stop it (one not loaded yet is refused 503)."""
    gate = gate_to(postgres)
    await gate.open()
    gateway = await open_auth(store, listen=False, url=gate.url(store.app), timeout_s=0.3)
    keys = gateway.resolver.provider_keys
    try:
        assert await keys.load(store.workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        gate.stall()
        assert await asyncio.wait_for(keys.load(store.workspace, "openai"), 3.0) == bytearray(
            OPENAI_SECRET.encode()
        )
        with pytest.raises(GatewayError) as exc:
            await asyncio.wait_for(keys.load(store.other_workspace, "anthropic"), 3.0)
        assert refused(exc) == (503, "auth_unavailable")
    finally:
        gate.resume()
        gateway.pool.terminate()
        await gateway.resolver.close()
        await gateway.workspace_keys.close()
        await shut(gate)


async def test_a_workspace_put_on_its_own_key_stops_using_the_old_data_key_once_notified(
    store: Store, kms: Kms
) -> None:
    """A workspace served under the deployment's key is put on its own key, which the
    customer then disables: as soon as the change notice arrives the gateway stops
    serving the data key it unwrapped before, and refuses 503."""
    workspace, _ = await new_workspace(store, {"openai": OPENAI_SECRET})
    gateway = await open_auth(store)
    keys = gateway.resolver.provider_keys
    try:
        await keys.load(workspace, "openai")
        key = kms.new_key()
        await put_on_own_key(store, workspace, key)
        kms.take_away(key)
        await until(lambda: keys.cached(workspace, "openai") is None)
        with pytest.raises(GatewayError) as exc:
            await keys.load(workspace, "openai")
        assert refused(exc) == (503, "provider_key_unavailable")
    finally:
        kms.front.allow_all()
        await close_auth(gateway)


async def test_a_row_read_while_a_change_notice_arrived_is_used_but_not_cached(
    store: Store,
) -> None:
    """A provider key's row read while a notice that the workspace's key changed
    arrives may predate the change: it serves that request, but the next one reads the
    row again. Every notice counts, not only the first."""
    workspace, _ = await new_workspace(store, {"openai": OPENAI_SECRET})
    gateway = await open_auth(store, listen=False)
    keys = gateway.resolver.provider_keys
    owner = await connect(store.owner)
    try:
        keys.forget_workspace(store.other_workspace)  # an earlier notice, of another workspace
        async with owner.transaction():
            await owner.execute("LOCK TABLE recovea.provider_keys IN ACCESS EXCLUSIVE MODE")
            load = asyncio.create_task(keys.load(workspace, "openai"))
            observer = await connect(store.owner)
            try:
                await waiting(observer, WAITING_ROW_LOADS, 1)
            finally:
                await observer.close()
            keys.forget_workspace(workspace)  # the notice
        assert await load == bytearray(OPENAI_SECRET.encode())
        assert keys.cached(workspace, "openai") is None
        assert await keys.load(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
        assert keys.cached(workspace, "openai") == bytearray(OPENAI_SECRET.encode())
    finally:
        await owner.close()
        await close_auth(gateway)


#: provider-key row loads waiting on a lock in the key store
WAITING_ROW_LOADS = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    " AND query LIKE '%FROM recovea.provider_keys p%' AND pid <> pg_backend_pid()"
)


class Refuser:
    """A unix socket where Postgres would be, that hangs up on every connection and
    notes when each came."""

    def __init__(self) -> None:
        self.dir = short_tmpdir()
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

    async def _hang_up(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        writer.transport.abort()


async def test_a_listener_the_store_refuses_retries_with_a_growing_delay(store: Store) -> None:
    """While the store hangs up on the listener, the gateway tries again after 0.25 s,
    then 0.5 s, doubling: three attempts in its first 1.5 s, not a storm, and it does
    not give up."""
    gateway = await open_auth(store, listen=False)
    try:
        async with Refuser() as refuser:
            await gateway.resolver.start(refuser.url(store.app))
            await asyncio.sleep(1.5)
            assert len(refuser.attempts) == 3
    finally:
        await close_auth(gateway)


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


def test_workspace_keys_ask_a_failing_kms_twice_at_most(
    kms: Kms, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workspace keys (and the keys `kms set` tries) share one client with few
    attempts: a KMS that fails is asked twice per operation, so a request is refused
    in about a second rather than after boto3's default retries. Each workspace key
    is made once."""
    failing = FailingKms()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", failing.url)
    try:
        keyring = Keyring(LocalMasterKey.load_or_create(tmp_path / "master.key"), {})
        arn = "arn:aws:kms:us-east-1:111122223333:key/0000-failing"
        key = keyring.workspace_key(arn)
        assert keyring.workspace_key(arn) is key
        context = {"workspace": "w", "provider": "openai", "key_id": "k"}
        with pytest.raises(ClientError):
            key.unwrap(b"wrapped", context)
        assert failing.calls == ["Decrypt", "Decrypt"]
        with pytest.raises(ClientError):
            keyring.trial_key("alias/failing").check(context)
        assert failing.calls[2:] == ["GenerateDataKey", "GenerateDataKey"]
    finally:
        failing.stop()


async def test_a_lookup_held_up_in_the_store_is_refused_within_the_auth_timeout(
    store: Store,
) -> None:
    """The key store answers, but a key lookup (and a provider key's row) waits there
    on a lock: the caller is refused 503 `auth_unavailable` within the auth timeout,
    not after the store's own statement timeout."""
    gateway = await open_auth(store, listen=False, timeout_s=0.3)
    owner = await connect(store.owner)
    try:
        async with owner.transaction():
            await owner.execute(LOCK_KEYS)
            await owner.execute("LOCK TABLE recovea.provider_keys IN ACCESS EXCLUSIVE MODE")
            with pytest.raises(GatewayError) as exc:
                await asyncio.wait_for(gateway.resolver.resolve(store.member.secret), 3.0)
            assert refused(exc) == (503, "auth_unavailable")
            with pytest.raises(GatewayError) as load:
                await asyncio.wait_for(
                    gateway.resolver.provider_keys.load(store.workspace, "openai"), 3.0
                )
            assert refused(load) == (503, "auth_unavailable")
    finally:
        await owner.close()
        await close_auth(gateway)
