"""Workspaces on their own KMS key, as the gateway serves them: data keys unwrapped
through that key alone, and a workspace that fails closed — and says so once — when
the customer takes the key away.

What happens, per workspace on its own key:

| situation                         | the gateway                                      |
| data key cached and fresh         | serves from memory (no KMS call, no await)       |
| data key expired (its TTL is      | one Decrypt naming the workspace's key, shared   |
| RECOVEA_WORKSPACE_DATA_KEY_TTL_S) | by every request that needs it meanwhile         |
| KMS refuses or cannot be reached  | 503 `provider_key_unavailable` in the provider's |
|                                   | shape (upstream never called); the reason is     |
|                                   | counted per request, logged and recorded once    |
| … within `REFUSAL_HOLD_S` of that | the same 503 from memory, no KMS call            |
| the key works again               | serves; logged and recorded once                 |

The refusal is held for `REFUSAL_HOLD_S`, so a revoked workspace costs KMS at most
one call per provider key a second in each process, and service returns within
that second of the key coming back. KMS calls of workspace keys run on a small pool
of threads of their own (`_THREADS`), so a customer's key that hangs cannot hold up
the deployment key's unwraps or anything else the event loop hands to threads.

What a gateway saw last is written to `recovea.workspace_kms_status` (for `recovea
workspace show`) when it changes: by one writer task, latest state per workspace;
losing such a write (database down) loses only what `show` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import structlog

from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import last_four
from recovea_proxy.auth.kms_refusals import KmsKeyRefused, reason_for
from recovea_proxy.errors import GatewayError

#: Postgres NOTIFY channel carrying the id of a workspace whose own key was set or
#: cleared: every gateway forgets that workspace's cached provider keys at once
KMS_CHANGES_CHANNEL = "recovea_workspace_kms_changed"
#: how long a refusal is answered from memory before KMS is asked again (seconds)
REFUSAL_HOLD_S = 1.0
_THREADS = 4
_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_log = structlog.get_logger("recovea.auth")
_RECORD = (
    "INSERT INTO recovea.workspace_kms_status AS s (customer_id, key_arn, reason, since,"
    " checked_at) VALUES ($1, $2, $3, $4, $4) ON CONFLICT (customer_id) DO UPDATE SET"
    " since = CASE WHEN s.reason IS NOT DISTINCT FROM EXCLUDED.reason"
    " AND s.key_arn = EXCLUDED.key_arn THEN s.since ELSE EXCLUDED.since END,"
    " key_arn = EXCLUDED.key_arn, reason = EXCLUDED.reason, checked_at = EXCLUDED.checked_at"
)


class ProviderKeyUnavailable(GatewayError):
    """503 `provider_key_unavailable`: the workspace's own KMS key refused or could not
    be reached (`reason`, one of kms_refusals.REASONS)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            503,
            "provider_key_unavailable",
            "This workspace's own KMS key refused or could not be reached; its provider "
            "keys cannot be used until the key is available again.",
        )
        self.reason = reason


@dataclass(slots=True)
class _Failing:
    reason: str
    #: monotonic time before which the refusal is answered from memory
    retry_at: float


class WorkspaceKeys:
    """Unwraps the data keys of workspaces on their own KMS key, and keeps track of
    which of those keys are failing, and why."""

    def __init__(
        self,
        keyring: Keyring,
        pool: asyncpg.Pool,
        *,
        timeout_s: float,
        on_refused: Callable[[str], None] = lambda _reason: None,
    ) -> None:
        self._keyring = keyring
        self._pool = pool
        self._timeout = timeout_s
        self._on_refused = on_refused
        self._executor = ThreadPoolExecutor(_THREADS, thread_name_prefix="recovea-kms")
        self._failing: dict[str, _Failing] = {}
        #: workspaces whose key this process has seen work (and recorded so)
        self._working: set[str] = set()
        #: provider key id → the unwrap in progress, shared by every request needing it
        self._unwrapping: dict[str, asyncio.Task[bytes]] = {}
        #: workspace → (key ARN, reason or None, when): states not yet recorded
        self._unrecorded: dict[str, tuple[str, str | None, datetime]] = {}
        self._recorder: asyncio.Task[None] | None = None

    def failing(self, reason: str) -> int:
        """Workspaces whose key is failing in this process for `reason` (a gauge)."""
        return sum(1 for failing in self._failing.values() if failing.reason == reason)

    def forget(self, customer_id: str) -> None:
        """The workspace's key was set or cleared: what was seen of the old one is moot."""
        self._failing.pop(customer_id, None)
        self._working.discard(customer_id)
        self._unrecorded.pop(customer_id, None)

    async def unwrap(
        self,
        customer_id: str,
        key_arn: str,
        provider_key_id: str,
        wrapped: bytes,
        context: dict[str, str],
    ) -> bytes:
        """The plaintext data key, unwrapped through the workspace's own key (named in
        the Decrypt); ProviderKeyUnavailable when that key refuses or cannot be reached."""
        failing = self._failing.get(customer_id)
        if failing is not None and time.monotonic() < failing.retry_at:
            self._on_refused(failing.reason)
            raise ProviderKeyUnavailable(failing.reason)
        task = self._unwrapping.get(provider_key_id)
        if task is None:
            loop = asyncio.get_running_loop()
            task = loop.create_task(
                self._call(loop, key_arn, wrapped, context), name=f"unwrap-{provider_key_id}"
            )
            self._unwrapping[provider_key_id] = task
            task.add_done_callback(lambda done: self._unwrapped(provider_key_id, done))
        try:
            # shielded: a caller that goes away does not cancel the others' unwrap
            key = await asyncio.shield(task)
        except KmsKeyRefused as exc:
            self._failed(customer_id, key_arn, exc.reason)
            raise ProviderKeyUnavailable(exc.reason) from None
        self._worked(customer_id, key_arn)
        return key

    async def _call(
        self,
        loop: asyncio.AbstractEventLoop,
        key_arn: str,
        wrapped: bytes,
        context: dict[str, str],
    ) -> bytes:
        try:
            return await loop.run_in_executor(
                self._executor, _unwrap, self._keyring, key_arn, wrapped, context
            )
        except KmsKeyRefused:
            raise
        except Exception:  # the threads are shutting down: refuse, never serve
            raise KmsKeyRefused("refused") from None

    def _unwrapped(self, provider_key_id: str, task: asyncio.Task[bytes]) -> None:
        if self._unwrapping.get(provider_key_id) is task:
            del self._unwrapping[provider_key_id]
        if not task.cancelled():
            task.exception()  # retrieved here too: every waiter may have gone away

    def _failed(self, customer_id: str, key_arn: str, reason: str) -> None:
        self._on_refused(reason)
        previous = self._failing.get(customer_id)
        self._failing[customer_id] = _Failing(reason, time.monotonic() + REFUSAL_HOLD_S)
        if previous is not None and previous.reason == reason:
            return
        self._working.discard(customer_id)
        _log.error(
            "workspace_kms_key_unavailable",
            workspace_id=customer_id,
            reason=reason,
            kms_key_last_four=last_four(key_arn),
        )
        self._record(customer_id, key_arn, reason)

    def _worked(self, customer_id: str, key_arn: str) -> None:
        previous = self._failing.pop(customer_id, None)
        if previous is not None:
            _log.info(
                "workspace_kms_key_available",
                workspace_id=customer_id,
                after=previous.reason,
                kms_key_last_four=last_four(key_arn),
            )
        elif customer_id in self._working:
            return
        self._working.add(customer_id)
        self._record(customer_id, key_arn, None)

    def _record(self, customer_id: str, key_arn: str, reason: str | None) -> None:
        self._unrecorded[customer_id] = (key_arn, reason, datetime.now(UTC))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.get_running_loop().create_task(
                self._record_all(), name="workspace-kms-status"
            )

    async def _record_all(self) -> None:
        while self._unrecorded:
            customer_id, (key_arn, reason, at) = self._unrecorded.popitem()
            try:
                async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT set_config('recovea.customer_id', $1, true)", customer_id
                        )
                        await conn.execute(_RECORD, uuid.UUID(customer_id), key_arn, reason, at)
            except _STORE_ERRORS as exc:
                _log.warning(
                    "workspace_kms_status_not_recorded",
                    workspace_id=customer_id,
                    error=type(exc).__name__,
                )

    async def close(self) -> None:
        """Finish recording what was seen (briefly), stop the unwraps and their threads."""
        if self._recorder is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._recorder, self._timeout)
        for task in list(self._unwrapping.values()):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)


def _unwrap(keyring: Keyring, key_arn: str, wrapped: bytes, context: dict[str, str]) -> bytes:
    """Blocking: one Decrypt naming the workspace's key; KmsKeyRefused on any failure."""
    try:
        return keyring.workspace_key(key_arn).unwrap(wrapped, context)
    except Exception as exc:
        raise KmsKeyRefused(reason_for(exc)) from None
