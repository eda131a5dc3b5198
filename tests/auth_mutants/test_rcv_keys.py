"""A live rcv_ key resolves to exactly its record and is then answered from memory for its
TTL; a malformed, unknown or revoked key is refused 401 (the refusal remembered for its
short TTL); a revocation evicts the key at once; a store that cannot be reached refuses
503 and never serves an unknown key. The keyring reads every row through the master key
it names.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.keyring import load_keyring, retire_local_key
from recovea_proxy.auth.resolver import KeyRecord, KeyResolver
from recovea_proxy.config import Settings
from recovea_proxy.errors import GatewayError
from recovea_proxy.policy import DEFAULT_POLICY, LeverPolicy
from recovea_proxy.store.database import connect
from tests.auth_mutants.support import (
    Store,
    _not_refused,
    _prepare,
    close_auth,
    open_auth,
    refused,
    until,
)
from tests.support import Postgres, short_tmpdir

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
