"""rcv_ key resolution on the hot path, and the workspace's provider key.

A known key costs a hash and a dict lookup: resolved keys are cached (positive
TTL), refused ones too (short negative TTL), each cache bounded and least recently
used first out (`ExpiringLru`), so made-up keys cannot grow memory. Provider keys
are cached sealed with their unwrapped data key and decrypted per request; that
cache is keyed by the workspace of a resolved key and the provider, so no caller
input grows it.
`cached` and `cached_provider_key` answer from the caches without awaiting (the
common case); `resolve` and `provider_key` also load what is missing.

What a caller can make the gateway do, and its bound:

| caller sends                      | costs                                        |
| malformed rcv_ key                | a hash: 401 without a query                  |
| well-formed key, unknown          | one lookup, then a negative entry (bounded)  |
| many distinct well-formed keys    | lookups, at most half the pool's connections |
|                                   | at once, each waiting at most the auth       |
|                                   | timeout (slot + connection + query) → 503    |

Revocations arrive over LISTEN/NOTIFY and evict at once. A notice that arrives
while a lookup runs may concern the key being looked up, whose answer may predate
it: every notice (and every reconnect of the listener) bumps a generation counter,
and a lookup that saw it move neither caches nor trusts a valid answer but looks
again (503 after `_LOOKUP_ATTEMPTS` such crossings in a row). The TTL bounds
staleness only while that channel is down.

Fail-closed: a key that is not cached while the key store cannot be reached (or
not within the auth timeout) is refused with 503 `auth_unavailable`, never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovea_proxy.auth.envelope import Sealed, associated_data, context_for
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL, key_hash, looks_like_key
from recovea_proxy.auth.lru import ExpiringLru
from recovea_proxy.errors import GatewayError

_log = structlog.get_logger("recovea.auth")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_LOOKUP = "SELECT * FROM recovea.resolve_rcv_key($1)"
#: lookups of one key that may each be overtaken by a revocation notice before the
#: key is refused with 503 (notices are rare; three in a row means a burst)
_LOOKUP_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the key store says about one rcv_ key."""

    id: str
    customer_id: str
    role: str
    env: str
    project: str | None
    team: str | None
    project_id: str | None = None
    team_id: str | None = None


@dataclass(frozen=True, slots=True)
class _StoredProviderKey:
    id: str
    sealed: Sealed
    context: dict[str, str]
    aad: bytes


class _DataKey:
    """An unwrapped data key (as a ready AEAD), usable until it expires or runs out
    of uses."""

    __slots__ = ("aead", "expires", "uses_left")

    def __init__(self, key: bytes, expires: float, uses: int) -> None:
        self.aead = AESGCM(key)
        self.expires = expires
        self.uses_left = uses


def unavailable() -> GatewayError:
    return GatewayError(503, "auth_unavailable", "The key store is unreachable; try again.")


def invalid() -> GatewayError:
    return GatewayError(401, "invalid_api_key", "Invalid API key.")


class KeyResolver:
    """Resolves rcv_ keys and provider keys through caches in front of Postgres."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: Keyring,
        *,
        ttl_s: float,
        negative_ttl_s: float,
        data_key_ttl_s: float,
        data_key_max_uses: int,
        timeout_s: float = 2.0,
        max_keys: int = 100_000,
        max_refused: int = 10_000,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._data_key_ttl = data_key_ttl_s
        self._data_key_uses = data_key_max_uses
        self._timeout = timeout_s
        # Key lookups may take half the pool; the ledger API, provider-key loads and
        # the admin API keep the rest, whatever keys a caller makes up.
        self._lookups = asyncio.Semaphore(max(1, pool.get_max_size() // 2))
        self._keys: ExpiringLru[bytes, KeyRecord] = ExpiringLru(max_keys)
        self._refused: ExpiringLru[bytes, bool] = ExpiringLru(max_refused)
        self._hash_by_id: dict[str, bytes] = {}
        #: bumped by every revocation notice and listener reconnect (see module doc)
        self._generation = 0
        self._provider: dict[tuple[str, str], tuple[float, _StoredProviderKey | None]] = {}
        self._data_keys: dict[str, _DataKey] = {}
        self._listener: asyncpg.Connection | None = None
        self._listen_url = ""
        self._reconnect: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self, listen_url: str) -> None:
        """Listen for revocations; if the listener cannot connect (now or later), keep
        retrying in the background, the TTL bounding staleness meanwhile."""
        self._listen_url = listen_url
        if not await self._connect_listener():
            self._reconnect_later()

    async def close(self) -> None:
        self._closing = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self._listener is not None:
            await self._listener.close(timeout=5)

    async def _connect_listener(self) -> bool:
        try:
            conn = await asyncpg.connect(self._listen_url, timeout=5)
            await conn.add_listener(REVOCATIONS_CHANNEL, self._on_revoked)
        except _STORE_ERRORS as exc:
            _log.warning("revocation_listener_unavailable", error=type(exc).__name__)
            return False
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        return True

    def _on_listener_lost(self, _conn: Any) -> None:
        self._listener = None
        if not self._closing:
            _log.warning("revocation_listener_lost")
            self._reconnect_later()

    def _reconnect_later(self) -> None:
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.25
        while not self._closing:
            await asyncio.sleep(delay)
            if await self._connect_listener():
                # Revocations sent while we were deaf are lost: forget every cached key,
                # and let no lookup that ran meanwhile cache its answer.
                self._generation += 1
                self._keys.clear()
                self._hash_by_id.clear()
                _log.info("revocation_listener_back")
                return
            delay = min(delay * 2, 10.0)

    def _on_revoked(self, _conn: Any, _pid: int, _channel: str, key_id: str) -> None:
        self._generation += 1
        _log.info("key_revocation_received", key_id=key_id)
        digest = self._hash_by_id.pop(key_id, None)
        if digest is not None:
            self._keys.pop(digest)

    def cached(self, token: str) -> KeyRecord | None:
        """The key's record while the cache holds it (GatewayError 401 for a cached
        refusal); None when the key store must be asked (`resolve`)."""
        return self._cached(key_hash(token), time.monotonic())

    def _cached(self, digest: bytes, now: float) -> KeyRecord | None:
        record = self._keys.get(digest, now)
        if record is not None:
            return record
        if self._refused.get(digest, now):
            raise invalid()
        return None

    async def resolve(self, token: str) -> KeyRecord:
        """The key's record; GatewayError 401 (malformed/unknown/revoked) or 503 (store
        down or slower than the auth timeout)."""
        digest = key_hash(token)
        known = self._cached(digest, time.monotonic())
        if known is not None:
            return known
        if not looks_like_key(token):
            raise invalid()
        for _ in range(_LOOKUP_ATTEMPTS):
            generation = self._generation
            row = await self._lookup(digest)
            now = time.monotonic()
            if row is None or row["revoked"]:
                # A refusal is never made stale by a revocation.
                self._refused.put(digest, True, now + self._negative_ttl, now)
                raise invalid()
            if generation == self._generation:
                return self._remember(digest, _record(row), now)
            # A revocation notice arrived while the query ran: its answer may predate
            # that revocation, so it is not trusted; the next query sees it.
        raise unavailable()

    async def _lookup(self, digest: bytes) -> asyncpg.Record | None:
        """One key-store lookup within the auth timeout: a slot among the lookups, a
        pooled connection and the query. 503 beyond it or when the store is down."""
        try:
            async with asyncio.timeout(self._timeout), self._lookups:
                async with self._pool.acquire() as conn:
                    row: asyncpg.Record | None = await conn.fetchrow(_LOOKUP, digest)
                    return row
        except _STORE_ERRORS:
            raise unavailable() from None

    def _remember(self, digest: bytes, record: KeyRecord, now: float) -> KeyRecord:
        self._hash_by_id[record.id] = digest
        for dropped in self._keys.put(digest, record, now + self._ttl, now):
            self._hash_by_id.pop(dropped.id, None)
        return record

    def forget_provider_key(self, customer_id: str, provider: str) -> None:
        """Drop the cached row of a provider key (it was replaced in this process)."""
        self._provider.pop((customer_id, provider), None)

    def cached_provider_key(self, customer_id: str, provider: str) -> bytearray | None:
        """The workspace's plaintext provider key when its row and its unwrapped data key
        are both cached and fresh; None when `provider_key` has something to load."""
        now = time.monotonic()
        cached = self._provider.get((customer_id, provider))
        if cached is None or cached[0] <= now or cached[1] is None:
            return None
        stored = cached[1]
        data_key = self._data_keys.get(stored.id)
        if data_key is None or data_key.expires <= now or data_key.uses_left <= 0:
            return None
        return _decrypt(stored, data_key)

    async def provider_key(self, customer_id: str, provider: str) -> bytearray | None:
        """The workspace's plaintext provider key (a bytearray to overwrite), or None."""
        now = time.monotonic()
        cached = self._provider.get((customer_id, provider))
        if cached is None or cached[0] <= now:
            cached = (now + self._ttl, await self._load_provider_key(customer_id, provider))
            self._provider[(customer_id, provider)] = cached
        stored = cached[1]
        if stored is None:
            return None
        data_key = self._data_keys.get(stored.id)
        if data_key is None or data_key.expires <= now or data_key.uses_left <= 0:
            data_key = await self._unwrap(stored, now)
        return _decrypt(stored, data_key)

    async def _unwrap(self, stored: _StoredProviderKey, now: float) -> _DataKey:
        """Unwrap a data key with the master that wrapped it (off the event loop)."""
        sealed = stored.sealed
        try:
            master = self._keyring.reader(sealed.backend, sealed.master_key_id)
            key = await asyncio.to_thread(master.unwrap, sealed.wrapped_data_key, stored.context)
        except Exception as exc:  # KMS down, wrong context, missing key file: fail closed
            _log.error("provider_key_unwrap_failed", error=type(exc).__name__)
            raise unavailable() from None
        data_key = _DataKey(key, now + self._data_key_ttl, self._data_key_uses)
        self._data_keys[stored.id] = data_key
        return data_key

    async def _load_provider_key(
        self, customer_id: str, provider: str
    ) -> _StoredProviderKey | None:
        try:
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('recovea.customer_id', $1, true)", customer_id
                    )
                    row = await conn.fetchrow(
                        "SELECT id, ciphertext, nonce, wrapped_data_key, master_key_id, backend"
                        " FROM recovea.provider_keys WHERE customer_id = $1 AND provider = $2",
                        uuid.UUID(customer_id),
                        provider,
                    )
        except _STORE_ERRORS:
            raise unavailable() from None
        if row is None:
            return None
        key_id = str(row["id"])
        context = context_for(customer_id, provider, key_id)
        return _StoredProviderKey(
            key_id,
            Sealed(
                row["ciphertext"],
                row["nonce"],
                row["wrapped_data_key"],
                row["master_key_id"],
                row["backend"],
            ),
            context,
            associated_data(context),
        )


def _record(row: asyncpg.Record) -> KeyRecord:
    return KeyRecord(
        id=str(row["id"]),
        customer_id=str(row["customer_id"]),
        role=row["role"],
        env=row["env"],
        project=row["project"],
        team=row["team"],
        project_id=_str_or_none(row["project_id"]),
        team_id=_str_or_none(row["team_id"]),
    )


def _decrypt(stored: _StoredProviderKey, data_key: _DataKey) -> bytearray:
    """One use of the data key: the provider key in plaintext. A ciphertext that does
    not open under it and its context (a row changed under a cached data key, or
    copied from another workspace) is refused 503, fail-closed, and the data key is
    used up so the next request unwraps afresh."""
    data_key.uses_left -= 1
    sealed = stored.sealed
    try:
        return bytearray(data_key.aead.decrypt(sealed.nonce, sealed.ciphertext, stored.aad))
    except InvalidTag:
        data_key.uses_left = 0
        _log.error("provider_key_decrypt_failed", provider_key_id=stored.id)
        raise unavailable() from None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
