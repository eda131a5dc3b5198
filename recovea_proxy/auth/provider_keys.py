"""The workspaces' provider keys in memory: sealed rows and unwrapped data keys.

A provider key is cached sealed (its row, for the rcv_ key cache's TTL) beside its
unwrapped data key (until the data key's own TTL or use count runs out), and
decrypted per request into a bytearray the caller overwrites. The cache is keyed by
the workspace of a resolved key and the provider, so no caller input grows it.
`cached` answers from memory without awaiting (the hot path); `load` also loads
what is missing: the row from Postgres, the data key from its master key.

A workspace on its own KMS key (`workspaces.kms_key_arn`) has its data keys
unwrapped through that key alone (`workspace_keys.WorkspaceKeys`), cached for
RECOVEA_WORKSPACE_DATA_KEY_TTL_S (short) instead of RECOVEA_DATA_KEY_CACHE_TTL_S;
when the key refuses because it was taken away (disabled, access denied, not
found), the workspace's other cached data keys are dropped at once too. Setting or
clearing a workspace's key (a NOTIFY, `forget_workspace`) drops what is cached of
it, and a row reloaded with a different wrapping drops its data key, so no data key
outlives the wrapping it came from by more than the row cache's TTL.

Fail-closed: a row that cannot be loaded, a data key that cannot be unwrapped and a
ciphertext that does not open under its data key and context are refused with 503
`auth_unavailable` (`provider_key_unavailable` when the workspace's own key refuses),
never served.
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
from recovea_proxy.auth.kms_refusals import REVOKED
from recovea_proxy.auth.workspace_keys import ProviderKeyUnavailable, WorkspaceKeys
from recovea_proxy.errors import GatewayError

_log = structlog.get_logger("recovea.auth")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class _StoredProviderKey:
    id: str
    sealed: Sealed
    context: dict[str, str]
    aad: bytes
    #: the workspace's own KMS key, when it has one
    kms_key_arn: str | None = None


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
        workspace_keys: WorkspaceKeys,
        workspace_data_key_ttl_s: float,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._row_ttl = row_ttl_s
        self._data_key_ttl = data_key_ttl_s
        self._data_key_uses = data_key_max_uses
        self._timeout = timeout_s
        self._workspace_keys = workspace_keys
        self._workspace_data_key_ttl = workspace_data_key_ttl_s
        self._rows: dict[tuple[str, str], tuple[float, _StoredProviderKey | None]] = {}
        self._data_keys: dict[str, _DataKey] = {}
        #: bumped whenever cached rows are dropped: a load that saw it move does not cache
        self._generation = 0

    def forget(self, customer_id: str, provider: str) -> None:
        """Drop the cached row of a provider key (it was replaced in this process)."""
        self._rows.pop((customer_id, provider), None)

    def forget_workspace(self, customer_id: str) -> None:
        """Drop every cached row and data key of a workspace (its own key was set or
        cleared, or taken away)."""
        self._generation += 1
        self._drop_data_keys(customer_id)
        for cached in [key for key in self._rows if key[0] == customer_id]:
            del self._rows[cached]
        self._workspace_keys.forget(customer_id)

    def clear(self) -> None:
        """Drop everything cached (changes may have been missed)."""
        self._generation += 1
        self._rows.clear()
        self._data_keys.clear()

    def _drop_data_keys(self, customer_id: str) -> None:
        for (workspace, _), (_, stored) in self._rows.items():
            if workspace == customer_id and stored is not None:
                self._data_keys.pop(stored.id, None)

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
            cached = await self._reload(customer_id, provider, cached, now)
        stored = cached[1]
        if stored is None:
            return None
        data_key = self._data_keys.get(stored.id)
        if data_key is None or data_key.expires <= now or data_key.uses_left <= 0:
            data_key = await self._unwrap(stored, now)
        return _decrypt(stored, data_key)

    async def _reload(
        self,
        customer_id: str,
        provider: str,
        previous: tuple[float, _StoredProviderKey | None] | None,
        now: float,
    ) -> tuple[float, _StoredProviderKey | None]:
        """The row afresh. A data key unwrapped from another wrapping is dropped; a row
        read while a change notice arrived is used for this request but not cached."""
        generation = self._generation
        stored = await self._load_row(customer_id, provider)
        cached = (now + self._row_ttl, stored)
        if generation != self._generation:
            return cached
        old = previous[1] if previous is not None else None
        if old is not None and old != stored:
            self._data_keys.pop(old.id, None)
        self._rows[(customer_id, provider)] = cached
        return cached

    async def _unwrap(self, stored: _StoredProviderKey, now: float) -> _DataKey:
        """Unwrap a data key with the master that wrapped it (off the event loop), or
        through the workspace's own key when it has one."""
        sealed = stored.sealed
        if stored.kms_key_arn is not None:
            customer_id = stored.context["workspace"]
            try:
                key = await self._workspace_keys.unwrap(
                    customer_id,
                    stored.kms_key_arn,
                    stored.id,
                    sealed.wrapped_data_key,
                    stored.context,
                )
            except ProviderKeyUnavailable as exc:
                if exc.reason in REVOKED:
                    self._drop_data_keys(customer_id)
                raise
            data_key = _DataKey(key, now + self._workspace_data_key_ttl, self._data_key_uses)
            self._data_keys[stored.id] = data_key
            return data_key
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
            # acquire's timeout bounds the release too (see resolver.KeyResolver._lookup)
            async with (
                asyncio.timeout(self._timeout),
                self._pool.acquire(timeout=self._timeout) as conn,
            ):
                async with conn.transaction():
                    await conn.execute(
                        "SELECT set_config('recovea.customer_id', $1, true)", customer_id
                    )
                    row = await conn.fetchrow(
                        "SELECT p.id, p.ciphertext, p.nonce, p.wrapped_data_key, p.master_key_id,"
                        " p.backend, w.kms_key_arn FROM recovea.provider_keys p"
                        " JOIN recovea.workspaces w ON w.customer_id = p.customer_id"
                        " WHERE p.customer_id = $1 AND p.provider = $2",
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
            row["kms_key_arn"],
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
