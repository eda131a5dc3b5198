"""The workspaces' provider keys in memory: sealed rows and unwrapped data keys.

A provider key is cached sealed (its row, for the rcv_ key cache's TTL) beside its
unwrapped data key (until the data key's own TTL or use count runs out), and
decrypted per request into a bytearray the caller overwrites. The cache is keyed by
the workspace of a resolved key and the provider, so no caller input grows it.
`cached` answers from memory without awaiting (the hot path); `load` also loads
what is missing: the row from Postgres, the data key from its master key.

Fail-closed: a row that cannot be loaded, a data key that cannot be unwrapped and a
ciphertext that does not open under its data key and context are refused with 503
`auth_unavailable`, never served.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovea_proxy.auth.envelope import Sealed, associated_data, context_for
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.errors import GatewayError

_log = structlog.get_logger("recovea.auth")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


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


class ProviderKeys:
    """The workspaces' provider keys, cached sealed beside their unwrapped data keys."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        keyring: Keyring,
        *,
        row_ttl_s: float,
        data_key_ttl_s: float,
        data_key_max_uses: int,
        timeout_s: float,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._row_ttl = row_ttl_s
        self._data_key_ttl = data_key_ttl_s
        self._data_key_uses = data_key_max_uses
        self._timeout = timeout_s
        self._rows: dict[tuple[str, str], tuple[float, _StoredProviderKey | None]] = {}
        self._data_keys: dict[str, _DataKey] = {}

    def forget(self, customer_id: str, provider: str) -> None:
        """Drop the cached row of a provider key (it was replaced in this process)."""
        self._rows.pop((customer_id, provider), None)

    def cached(self, customer_id: str, provider: str) -> bytearray | None:
        """The workspace's plaintext provider key when its row and its unwrapped data key
        are both cached and fresh; None when `load` has something to load."""
        now = time.monotonic()
        cached = self._rows.get((customer_id, provider))
        if cached is None or cached[0] <= now or cached[1] is None:
            return None
        stored = cached[1]
        data_key = self._data_keys.get(stored.id)
        if data_key is None or data_key.expires <= now or data_key.uses_left <= 0:
            return None
        return _decrypt(stored, data_key)

    async def load(self, customer_id: str, provider: str) -> bytearray | None:
        """The workspace's plaintext provider key (a bytearray to overwrite), or None."""
        now = time.monotonic()
        cached = self._rows.get((customer_id, provider))
        if cached is None or cached[0] <= now:
            cached = (now + self._row_ttl, await self._load_row(customer_id, provider))
            self._rows[(customer_id, provider)] = cached
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

    async def _load_row(self, customer_id: str, provider: str) -> _StoredProviderKey | None:
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
