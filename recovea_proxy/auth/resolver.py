"""rcv_ key resolution on the hot path, and the workspace's provider key.

A known key costs a dict lookup: resolved keys are cached (positive TTL, short
negative TTL), provider keys are cached sealed with their unwrapped data key and
decrypted per request. Revocations arrive over LISTEN/NOTIFY and evict at once;
the TTL bounds the damage if that channel is down.

Fail-closed: a key that is not cached while the key store cannot be reached is
refused with 503 `auth_unavailable`, never served.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from recovea_proxy.auth.envelope import MasterKey, Sealed, context_for, open_sealed
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL, key_hash
from recovea_proxy.errors import GatewayError

_log = structlog.get_logger("recovea.auth")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the key store says about one rcv_ key."""

    id: str
    customer_id: str
    role: str
    env: str
    project: str | None
    team: str | None


@dataclass(frozen=True, slots=True)
class _ProviderSecret:
    sealed: Sealed
    data_key: bytes
    context: dict[str, str]


def unavailable() -> GatewayError:
    return GatewayError(503, "auth_unavailable", "The key store is unreachable; try again.")


def invalid() -> GatewayError:
    return GatewayError(401, "invalid_api_key", "Invalid API key.")


class KeyResolver:
    """Resolves rcv_ keys and provider keys through caches in front of Postgres."""

    def __init__(
        self, pool: asyncpg.Pool, master: MasterKey, *, ttl_s: float, negative_ttl_s: float
    ) -> None:
        self._pool = pool
        self._master = master
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._keys: dict[bytes, tuple[float, KeyRecord | None]] = {}
        self._hash_by_id: dict[str, bytes] = {}
        self._provider: dict[tuple[str, str], tuple[float, _ProviderSecret | None]] = {}
        self._listener: asyncpg.Connection | None = None

    async def start(self, listen_url: str) -> None:
        """Listen for revocations (best effort: the TTL still bounds staleness)."""
        try:
            self._listener = await asyncpg.connect(listen_url, timeout=5)
            await self._listener.add_listener(REVOCATIONS_CHANNEL, self._on_revoked)
        except _STORE_ERRORS as exc:
            _log.warning("revocation_listener_unavailable", error=type(exc).__name__)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close(timeout=5)

    def _on_revoked(self, _conn: Any, _pid: int, _channel: str, key_id: str) -> None:
        digest = self._hash_by_id.pop(key_id, None)
        if digest is not None:
            self._keys.pop(digest, None)

    async def resolve(self, token: str) -> KeyRecord:
        """The key's record; GatewayError 401 (unknown/revoked) or 503 (store down)."""
        digest = key_hash(token)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and cached[0] > now:
            if cached[1] is None:
                raise invalid()
            return cached[1]
        try:
            row = await self._pool.fetchrow("SELECT * FROM recovea.resolve_rcv_key($1)", digest)
        except _STORE_ERRORS:
            raise unavailable() from None
        if row is None or row["revoked"]:
            self._keys[digest] = (now + self._negative_ttl, None)
            raise invalid()
        record = KeyRecord(
            id=str(row["id"]),
            customer_id=str(row["customer_id"]),
            role=row["role"],
            env=row["env"],
            project=row["project"],
            team=row["team"],
        )
        self._keys[digest] = (now + self._ttl, record)
        self._hash_by_id[record.id] = digest
        return record

    async def provider_key(self, customer_id: str, provider: str) -> bytearray | None:
        """The workspace's plaintext provider key (a bytearray to overwrite), or None."""
        now = time.monotonic()
        cached = self._provider.get((customer_id, provider))
        if cached is None or cached[0] <= now:
            secret = await self._load_provider_key(customer_id, provider)
            cached = (now + self._ttl, secret)
            self._provider[(customer_id, provider)] = cached
        if cached[1] is None:
            return None
        entry = cached[1]
        return open_sealed(entry.data_key, entry.sealed, entry.context)

    async def _load_provider_key(self, customer_id: str, provider: str) -> _ProviderSecret | None:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
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
        context = context_for(customer_id, provider, str(row["id"]))
        sealed = Sealed(
            row["ciphertext"],
            row["nonce"],
            row["wrapped_data_key"],
            row["master_key_id"],
            row["backend"],
        )
        try:
            data_key = self._master.unwrap(sealed.wrapped_data_key, context)
        except Exception:
            _log.error("provider_key_unwrap_failed", provider=provider, workspace=customer_id)
            raise unavailable() from None
        return _ProviderSecret(sealed, data_key, context)
