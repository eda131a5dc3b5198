"""A workspace on its own KMS key is unwrapped through that key alone, for its short TTL;
taking the key away stops every provider key of the workspace at once; a moved or re-
wrapped row is unwrapped afresh.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.errors import GatewayError
from recovea_proxy.store.database import connect
from tests.auth_mutants.support import (
    ANTHROPIC_SECRET,
    OPENAI_SECRET,
    Kms,
    Store,
    admin_keyring,
    close_auth,
    new_workspace,
    open_auth,
    put_back,
    put_on_own_key,
    refused,
    until,
)

# --- workspaces on their own KMS key --------------------------------------------------


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
