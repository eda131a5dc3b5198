"""The revocation listener keeps trying, reconnects and forgets what it may have missed,
and closes bounded; key lookups take at most half the pool, are bounded by the auth
timeout when the store stalls or is locked, and a lookup overtaken by revocation notices
is refused, never cached.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL
from recovea_proxy.errors import GatewayError
from recovea_proxy.store.database import connect
from tests.auth_mutants.support import (
    LOCK_KEYS,
    WAITING_LOCKERS,
    WAITING_LOOKUPS,
    Refuser,
    Store,
    close_auth,
    gate_to,
    listeners,
    lock,
    made_up_key,
    open_auth,
    refused,
    until,
    until_async,
    waiting,
)
from tests.support import Postgres

# --- the revocation listener ------------------------------------------------------------


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
        async with Refuser(gate.dir) as refuser:  # where the gate will be, hanging up
            await resolver.start(gate.url(store.app))
            missed = await ops.create_key(conn, store.workspace)
            await resolver.resolve(missed.secret)
            await resolver.provider_keys.load(store.workspace, "openai")
            await ops.revoke_key(conn, missed.id)  # a notice nobody hears
            assert resolver.cached(missed.secret) is not None
            # the attempt at start and a retry in the background are refused first
            await until(lambda: len(refuser.attempts) >= 2)
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
        await gate.shut()


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
        await gate.shut()


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
        await gate.shut()


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
            await gate.shut()
            # lost for sure: its first reconnect attempt (0.25 s on) is refused
            async with Refuser(gate.dir) as refuser:
                await until(lambda: len(refuser.attempts) >= 1)
    finally:
        await close_auth(gateway)
    if listener != "connected":
        await gate.open()  # the store reachable again
    try:
        await until_async(lambda: listeners(store, name), 0)
        # Nothing to wait for: the window is the behaviour. A listener left behind
        # would connect within it (its next attempts are due 0.25 s or 0.5 s on; the
        # window is four times the first delay), and the count below would be 1.
        await asyncio.sleep(1.0)
        assert await listeners(store, name) == 0
    finally:
        await gate.shut()


# --- lookups under load and overtaken by notices -----------------------------------------


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
                # Nothing to wait for: the window is the behaviour. Every lookup was
                # started at once; one let past half the pool would reach the lock
                # within it, and the count below would be more than `at_once`.
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
        await gate.shut()


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
        await gate.shut()
