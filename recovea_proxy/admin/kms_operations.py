"""A workspace's own AWS KMS key: set it, clear it, show it.

Setting a key first uses it as the gateway will — GenerateDataKey, Decrypt naming
the key, Encrypt, under the workspace's encryption context: the three operations the
customer grants — so a key the gateway cannot use is refused before anything
changes, and KMS's answer names the key's ARN, which is stored and used from then on.

Then one transaction, with the workspace's row locked (FOR NO KEY UPDATE: a
provider key being stored for the workspace waits; the drainer's KEY SHARE lock
does not), unwraps each of the workspace's data keys (provider keys and report
keys) with what wraps it now and wraps it under the new key (clearing: under the
deployment's master key), row by row, and records the key. Any failure rolls all
of it back: the old wrapping stays.
The ciphertexts do not change (the data keys are the same), nor does the encryption
context (workspace, provider, key id). The commit notifies every gateway
(`KMS_CHANGES_CHANNEL`), which drops what it cached of the workspace.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import asyncpg

from recovea_proxy.admin.operations import (
    SEALED_TABLES,
    KmsRefusedError,
    OperationError,
    SealedTable,
    describe_workspace,
    parse_id,
    scope,
)
from recovea_proxy.auth.envelope import MasterKey
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.kms_refusals import reason_for
from recovea_proxy.auth.workspace_keys import KMS_CHANGES_CHANNEL

#: a key id, key ARN, alias name or alias ARN (checked by KMS; this only bounds it)
_KEY_ID = re.compile(r"[A-Za-z0-9:/_+=,.@-]{1,2048}")
T = TypeVar("T")


def check_context(workspace_id: str) -> dict[str, str]:
    """The encryption context of `kms set`'s trial use of a key (it carries the
    workspace, so a key policy that requires it admits the trial too)."""
    return {"workspace": workspace_id, "purpose": "recovea-kms-check"}


async def _kms(call: Callable[[], T], *, failure: str, status: int) -> T:
    """A blocking key operation (boto3 set-up included) off the event loop;
    KmsRefusedError when it fails (503 when KMS could not be reached)."""
    try:
        return await asyncio.to_thread(call)
    except Exception as exc:
        reason = reason_for(exc)
        status = 503 if reason == "unreachable" else status
        raise KmsRefusedError(f"{failure} ({reason})", reason, status) from None


async def _locked_kms_arn(conn: asyncpg.Connection, workspace: uuid.UUID) -> str | None:
    row = await conn.fetchrow(
        "SELECT kms_key_arn FROM recovea.workspaces WHERE customer_id = $1 FOR NO KEY UPDATE",
        workspace,
    )
    if row is None:
        raise OperationError(f"no workspace {workspace}")
    arn: str | None = row["kms_key_arn"]
    return arn


async def _rewrap(
    conn: asyncpg.Connection,
    keyring: Keyring,
    workspace: uuid.UUID,
    current_arn: str | None,
    target: Callable[[], MasterKey],
) -> int:
    """Re-wrap every data key of the workspace (its provider keys and its report keys)
    under `target()`, inside the caller's transaction; the number re-wrapped."""
    count = 0
    for table in SEALED_TABLES.values():
        count += await _rewrap_table(conn, keyring, table, workspace, current_arn, target)
    return count


async def _rewrap_table(
    conn: asyncpg.Connection,
    keyring: Keyring,
    table: SealedTable,
    workspace: uuid.UUID,
    current_arn: str | None,
    target: Callable[[], MasterKey],
) -> int:
    rows = await conn.fetch(
        "SELECT id, provider, wrapped_data_key, master_key_id, backend"
        f" FROM recovea.{table.name} WHERE customer_id = $1 ORDER BY provider FOR UPDATE",
        workspace,
    )
    what = "key" if table.name == "provider_keys" else "report key"
    for row in rows:
        context = table.context_of(str(workspace), row["provider"], str(row["id"]))
        current = (
            partial(keyring.workspace_key, current_arn)
            if current_arn is not None
            else partial(keyring.reader, row["backend"], row["master_key_id"])
        )
        data_key = await _kms(
            partial(_unwrap, current, row["wrapped_data_key"], context),
            failure=f"the {row['provider']} {what} could not be unwrapped with its current key;"
            " nothing was changed",
            status=503,
        )
        wrapped = await _kms(
            partial(_wrap, target, data_key, context),
            failure=f"the {row['provider']} {what} could not be wrapped under the new key;"
            " nothing was changed",
            status=503,
        )
        await conn.execute(
            f"UPDATE recovea.{table.name} SET wrapped_data_key = $2, master_key_id = $3,"
            " backend = $4 WHERE id = $1",
            row["id"],
            wrapped,
            target().key_id,
            target().backend,
        )
    return len(rows)


def _unwrap(master: Callable[[], MasterKey], wrapped: bytes, context: dict[str, str]) -> bytes:
    return master().unwrap(wrapped, context)


def _wrap(master: Callable[[], MasterKey], data_key: bytes, context: dict[str, str]) -> bytes:
    return master().wrap(data_key, context)


async def _changed(conn: asyncpg.Connection, workspace: uuid.UUID) -> None:
    """Forget what the gateways saw of the old key, and tell them (at commit)."""
    await conn.execute("DELETE FROM recovea.workspace_kms_status WHERE customer_id = $1", workspace)
    await conn.execute("SELECT pg_notify($1, $2)", KMS_CHANGES_CHANNEL, str(workspace))


async def set_workspace_kms(
    conn: asyncpg.Connection, keyring: Keyring, workspace_id: str, key_id: str
) -> dict[str, Any]:
    """Put the workspace on its own KMS key, re-wrapping its provider keys under it."""
    workspace = parse_id(workspace_id, "workspace id")
    key_id = key_id.strip()
    if _KEY_ID.fullmatch(key_id) is None:
        raise OperationError("the KMS key must be a key id, key ARN or alias (alias/NAME)")
    arn = await _kms(
        lambda: keyring.trial_key(key_id).check(check_context(str(workspace))),
        failure="the KMS key cannot be used by the gateway (it needs Encrypt, Decrypt and"
        " GenerateDataKey); nothing was changed",
        status=400,
    )
    async with conn.transaction():
        await scope(conn, str(workspace))
        current_arn = await _locked_kms_arn(conn, workspace)
        count = await _rewrap(
            conn, keyring, workspace, current_arn, lambda: keyring.workspace_key(arn)
        )
        await conn.execute(
            "UPDATE recovea.workspaces SET kms_key_id = $2, kms_key_arn = $3, kms_set_at = now()"
            " WHERE customer_id = $1",
            workspace,
            key_id,
            arn,
        )
        await _changed(conn, workspace)
    return {
        "workspace_id": str(workspace),
        "kms_key_id": key_id,
        "kms_key_arn": arn,
        "rewrapped": count,
    }


async def clear_workspace_kms(
    conn: asyncpg.Connection,
    keyring: Keyring,
    workspace_id: str,
    *,
    drop_provider_keys: bool = False,
) -> dict[str, Any]:
    """Put the workspace back on the deployment's master key, re-wrapping its provider
    keys under it (which needs the workspace's own key one last time). With
    `drop_provider_keys`, its provider keys (and report keys) are deleted instead — the
    way out when the key is gone for good and they can never be opened again."""
    workspace = parse_id(workspace_id, "workspace id")
    count = dropped = 0
    async with conn.transaction():
        await scope(conn, str(workspace))
        current_arn = await _locked_kms_arn(conn, workspace)
        if current_arn is not None:
            if drop_provider_keys:
                status = await conn.execute(
                    "DELETE FROM recovea.provider_keys WHERE customer_id = $1", workspace
                )
                dropped = int(str(status).rsplit(" ", 1)[-1])
                # report keys can no longer be opened either (they are not counted)
                await conn.execute(
                    "DELETE FROM recovea.report_keys WHERE customer_id = $1", workspace
                )
            else:
                count = await _rewrap(
                    conn, keyring, workspace, current_arn, lambda: keyring.current
                )
            await conn.execute(
                "UPDATE recovea.workspaces SET kms_key_id = NULL, kms_key_arn = NULL,"
                " kms_set_at = NULL WHERE customer_id = $1",
                workspace,
            )
            await _changed(conn, workspace)
    return {
        "workspace_id": str(workspace),
        "kms_key_id": None,
        "kms_key_arn": None,
        "master_key_id": keyring.current.key_id,
        "rewrapped": count,
        "dropped": dropped,
    }


async def workspace_kms(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """The workspace's own key, and what a gateway last saw of it: `status` is
    `available`, `unavailable` (with `reason`), or `unknown` (not used since it was
    set); null fields when the workspace is on the deployment's key."""
    workspace = parse_id(workspace_id, "workspace id")
    row = await conn.fetchrow(
        "SELECT w.kms_key_id, w.kms_key_arn, w.kms_set_at, s.key_arn AS seen, s.reason,"
        " s.since, s.checked_at FROM recovea.workspaces w"
        " LEFT JOIN recovea.workspace_kms_status s ON s.customer_id = w.customer_id"
        " WHERE w.customer_id = $1",
        workspace,
    )
    if row is None:
        raise OperationError(f"no workspace {workspace}")
    if row["kms_key_arn"] is None:
        return {
            "key_id": None,
            "key_arn": None,
            "set_at": None,
            "status": None,
            "reason": None,
            "since": None,
            "checked_at": None,
        }
    seen = row["seen"] == row["kms_key_arn"]
    status = "unknown" if not seen else "available" if row["reason"] is None else "unavailable"
    return {
        "key_id": row["kms_key_id"],
        "key_arn": row["kms_key_arn"],
        "set_at": row["kms_set_at"].isoformat(),
        "status": status,
        "reason": row["reason"] if seen else None,
        "since": row["since"].isoformat() if seen else None,
        "checked_at": row["checked_at"].isoformat() if seen else None,
    }


async def show_workspace(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """The workspace's settings, its own KMS key and its provider keys (last four
    characters, and which key wraps each)."""
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        shown = await describe_workspace(conn, str(workspace))
        shown["kms"] = await workspace_kms(conn, str(workspace))
        rows = await conn.fetch(
            "SELECT p.provider, p.last_four, p.backend, p.master_key_id, p.created_at,"
            " w.kms_key_arn FROM recovea.provider_keys p"
            " JOIN recovea.workspaces w ON w.customer_id = p.customer_id"
            " WHERE p.customer_id = $1 ORDER BY p.provider",
            workspace,
        )
    shown["provider_keys"] = [
        {
            "provider": r["provider"],
            "last_four": r["last_four"],
            "wrapped_by": "workspace"
            if r["kms_key_arn"] is not None and r["master_key_id"] == r["kms_key_arn"]
            else "deployment",
            "backend": r["backend"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]
    return shown
