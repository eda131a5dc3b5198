"""A provider key is decrypted only under its own row's context; each unwrapped data key
serves a bounded number of requests for a bounded time; a replaced or forgotten key is
reloaded; whatever cannot be loaded, unwrapped or opened is refused 503, never served; a
cached provider key spares the store and the master key.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.resolver import KeyResolver
from recovea_proxy.errors import GatewayError
from recovea_proxy.store.database import connect
from tests.auth_mutants.support import (
    ANTHROPIC_SECRET,
    LOCK_KEYS,
    OPENAI_SECRET,
    WAITING_ROW_LOADS,
    FailingKms,
    Kms,
    Refuser,
    Store,
    close_auth,
    gate_to,
    kms_row,
    new_workspace,
    open_auth,
    put_on_own_key,
    refused,
    until,
    waiting,
)
from tests.support import Postgres

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


# --- what a cached provider key spares the store and the master key ----------------------


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
        await gate.shut()


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


async def test_a_listener_the_store_refuses_retries_with_a_growing_delay(store: Store) -> None:
    """While the store hangs up on the listener, the gateway tries again after 0.25 s,
    then 0.5 s, doubling: three attempts in its first 1.5 s, not a storm, and it does
    not give up."""
    gateway = await open_auth(store, listen=False)
    try:
        async with Refuser() as refuser:
            await gateway.resolver.start(refuser.url(store.app))
            await until(lambda: len(refuser.attempts) >= 4)
            attempts = refuser.attempts[:4]
    finally:
        await close_auth(gateway)
    # Each delay starts once the attempt before it was refused, after the refuser noted
    # it: a gap is never shorter than its delay (the margin is the clock's rounding).
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert all(gap > delay - 0.001 for gap, delay in zip(gaps, [0.25, 0.5, 1.0], strict=True)), gaps
    assert attempts[2] - attempts[0] < 1.5


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
