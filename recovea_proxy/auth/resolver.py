"""rcv_ key resolution on the hot path, and the listener that keeps it current.

A known key costs a hash and a dict lookup: resolved keys are cached (positive
TTL), refused ones too (short negative TTL), each cache bounded and least recently
used first out (`ExpiringLru`), so made-up keys cannot grow memory. The workspaces'
provider keys are cached beside them (`provider_keys.ProviderKeys`).
`cached` answers from the cache without awaiting (the common case); `resolve` also
looks up what is missing.

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
staleness only while that channel is down. The same listener hears when a
workspace's own KMS key is set or cleared (`workspace_keys.KMS_CHANGES_CHANNEL`) and
drops that workspace's cached provider keys; after a reconnect every cached provider
key is dropped too.

Fail-closed: a key that is not cached while the key store cannot be reached (or
not within the auth timeout) is refused with 503 `auth_unavailable`, never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL, key_hash, looks_like_key
from recovea_proxy.auth.lru import ExpiringLru
from recovea_proxy.auth.provider_keys import ProviderKeys, unavailable
from recovea_proxy.auth.workspace_keys import KMS_CHANGES_CHANNEL, WorkspaceKeys
from recovea_proxy.errors import GatewayError
from recovea_proxy.policy import DEFAULT_POLICY, LeverPolicy
from recovea_proxy.route_table import RouteTable, compile_rules

_log = structlog.get_logger("recovea.auth")
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
# The workspace's routing rules come with the key, in the same round trip.
_LOOKUP = (
    "SELECT k.*, recovea.workspace_routes(k.customer_id) AS routes"
    " FROM recovea.resolve_rcv_key($1) k"
)
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
    #: the workspace's lever policy, read with the key
    policy: LeverPolicy = DEFAULT_POLICY


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
        workspace_keys: WorkspaceKeys,
        workspace_data_key_ttl_s: float,
        timeout_s: float = 2.0,
        max_keys: int = 100_000,
        max_refused: int = 10_000,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._timeout = timeout_s
        self.provider_keys = ProviderKeys(
            pool,
            keyring,
            row_ttl_s=ttl_s,
            data_key_ttl_s=data_key_ttl_s,
            data_key_max_uses=data_key_max_uses,
            timeout_s=timeout_s,
            workspace_keys=workspace_keys,
            workspace_data_key_ttl_s=workspace_data_key_ttl_s,
        )
        # Key lookups may take half the pool; the ledger API, provider-key loads and
        # the admin API keep the rest, whatever keys a caller makes up.
        self._lookups = asyncio.Semaphore(max(1, pool.get_max_size() // 2))
        self._keys: ExpiringLru[bytes, KeyRecord] = ExpiringLru(max_keys)
        self._refused: ExpiringLru[bytes, bool] = ExpiringLru(max_refused)
        self._hash_by_id: dict[str, bytes] = {}
        #: bumped by every revocation notice and listener reconnect (see module doc)
        self._generation = 0
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
        listener = self._listener
        if listener is not None:
            try:
                # bounded like every other wait on the store; asyncpg aborts the
                # connection before it raises, so nothing is left open
                await listener.close(timeout=self._timeout)
            except _STORE_ERRORS as exc:
                _log.warning("revocation_listener_close_failed", error=type(exc).__name__)

    async def _connect_listener(self) -> bool:
        try:
            conn = await asyncpg.connect(self._listen_url, timeout=5)
            await conn.add_listener(REVOCATIONS_CHANNEL, self._on_revoked)
            await conn.add_listener(KMS_CHANGES_CHANNEL, self._on_kms_changed)
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
                # Revocations (and KMS key changes) sent while we were deaf are lost:
                # forget every cached key, and let no lookup that ran meanwhile cache
                # its answer.
                self._generation += 1
                self._keys.clear()
                self._hash_by_id.clear()
                self.provider_keys.clear()
                _log.info("revocation_listener_back")
                return
            delay = min(delay * 2, 10.0)

    def _on_revoked(self, _conn: Any, _pid: int, _channel: str, key_id: str) -> None:
        _log.info("key_revocation_received", key_id=key_id)
        self.forget(key_id)

    def forget(self, key_id: str) -> None:
        """Forget a cached key now, as a revocation notice does (this process sent the
        notice itself and must not wait for it to come back)."""
        self._generation += 1
        digest = self._hash_by_id.pop(key_id, None)
        if digest is not None:
            self._keys.pop(digest)

    def _on_kms_changed(self, _conn: Any, _pid: int, _channel: str, workspace_id: str) -> None:
        _log.info("workspace_kms_changed", workspace_id=workspace_id)
        self.provider_keys.forget_workspace(workspace_id)

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
                # The release is bounded too: a query cut off by the timeout is cancelled
                # on a new connection, which a store that stopped answering never accepts.
                async with self._pool.acquire(timeout=self._timeout) as conn:
                    row: asyncpg.Record | None = await conn.fetchrow(_LOOKUP, digest)
                    return row
        except _STORE_ERRORS:
            raise unavailable() from None

    def _remember(self, digest: bytes, record: KeyRecord, now: float) -> KeyRecord:
        self._hash_by_id[record.id] = digest
        for dropped in self._keys.put(digest, record, now + self._ttl, now):
            self._hash_by_id.pop(dropped.id, None)
        return record


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
        policy=_policy(row),
    )


#: the policies without routing rules, each as its one object (the default first)
_INTERNED: dict[LeverPolicy, LeverPolicy] = {DEFAULT_POLICY: DEFAULT_POLICY}
_INTERNED_MAX = 4096


def _policy(row: asyncpg.Record) -> LeverPolicy:
    """The workspace's lever policy from its key's row (one object per distinct value),
    with its routing rules compiled."""
    routes = _routes(row["routes"])
    policy = LeverPolicy(
        row["cache_policy"],
        row["cache_ttl_s"],
        row["cache_tool_calls"],
        row["cache_generation"],
        routing=routes is not None,
        routes=routes,
        slim=row["slim"],
    )
    if routes is not None:
        return policy  # its rules are its own (they are left out of equality)
    # One object per distinct policy: the chain book finds it by identity, not by
    # hashing and comparing six fields a request (a workspace whose levers are off
    # paid that on each request; the default policy never did).
    interned = _INTERNED.get(policy)
    if interned is not None:
        return interned
    if len(_INTERNED) < _INTERNED_MAX:
        _INTERNED[policy] = policy
    return policy


def _routes(raw: object) -> RouteTable | None:
    """The rules the lookup returned (JSON text, or already decoded), compiled; a set
    that cannot be read is logged and left out (routing fails open: the caller's
    model serves)."""
    try:
        items = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        return compile_rules(items) if isinstance(items, list) else None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        _log.warning("route_rules_unreadable", error=type(exc).__name__)
        return None


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
