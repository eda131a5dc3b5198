"""Opening a report key: the one place a report key is decrypted, called by the poller
only (never by request handling, the admin API or the usage API).

The data key is unwrapped through what wrapped it — the workspace's own KMS key when
the workspace has one, else the deployment master key named on the row — off the
event loop, and the key is returned as a bytearray the caller overwrites once the
report calls are made. A key that cannot be opened is a `KeyUnavailable` carrying a
reason, never the key or its ciphertext.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from recovea_proxy.auth.envelope import Sealed, open_sealed, report_context_for
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.kms_refusals import reason_for


class KeyUnavailable(Exception):
    """The report key is gone or cannot be opened; `reason` says why (bounded)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def open_report_key(
    conn: asyncpg.Connection, keyring: Keyring, workspace: uuid.UUID, provider: str
) -> bytearray:
    """The workspace's report key for `provider`, in plaintext, to overwrite after use."""
    row = await conn.fetchrow(
        "SELECT r.id, r.ciphertext, r.nonce, r.wrapped_data_key, r.master_key_id, r.backend,"
        " w.kms_key_arn FROM recovea.report_keys r"
        " JOIN recovea.workspaces w ON w.customer_id = r.customer_id"
        " WHERE r.customer_id = $1 AND r.provider = $2",
        workspace,
        provider,
    )
    if row is None:
        raise KeyUnavailable("no_report_key")
    context = report_context_for(str(workspace), provider, str(row["id"]))
    sealed = Sealed(
        row["ciphertext"],
        row["nonce"],
        row["wrapped_data_key"],
        row["master_key_id"],
        row["backend"],
    )
    arn = row["kms_key_arn"]

    def unwrap() -> bytes:
        master = (
            keyring.workspace_key(arn)
            if arn is not None
            else keyring.reader(sealed.backend, sealed.master_key_id)
        )
        return master.unwrap(sealed.wrapped_data_key, context)

    try:
        data_key = await asyncio.to_thread(unwrap)
    except Exception as exc:  # KMS refused or unreachable, a missing key file
        raise KeyUnavailable("kms_" + reason_for(exc) if arn else "master_key") from None
    try:
        return open_sealed(data_key, sealed, context)
    except Exception:  # a ciphertext that does not open under its context
        raise KeyUnavailable("undecryptable") from None
