"""Report keys: per workspace and provider, the provider's admin key that can read its
usage and cost reports (an OpenAI organization admin key, an Anthropic
`sk-ant-admin…` key). Called report keys everywhere, never admin keys, so they are not
confused with admin-role rcv_ keys.

Stored exactly like provider keys (`admin.operations.store_sealed_key`: a fresh data
key, wrapped by the workspace's own KMS key or the deployment's master key, re-wrapped
with them), with `purpose=report` in the encryption context; listed by their last four
characters only. Nothing here decrypts: only the poller does (`opening`).

OpenRouter is not supported: its key endpoint reports a key's running credit total,
not usage per day and model, so there is nothing to compare a day's ledger with.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from recovea_proxy.admin.operations import (
    PROVIDERS,
    SEALED_TABLES,
    OperationError,
    parse_id,
    scope,
    store_sealed_key,
)
from recovea_proxy.auth.keyring import Keyring

#: the providers whose usage reports the poller can read
REPORT_PROVIDERS = ("openai", "anthropic")


def check_provider(provider: str) -> str:
    """A provider that has a usage report, or a clear error."""
    if provider == "openrouter":
        raise OperationError(
            "openrouter has no usage report per day and model to reconcile with;"
            " report keys are for openai and anthropic"
        )
    if provider not in REPORT_PROVIDERS:
        raise OperationError(f"provider must be one of {', '.join(REPORT_PROVIDERS)}")
    return provider


async def set_report_key(
    conn: asyncpg.Connection, keyring: Keyring, workspace_id: str, provider: str, secret: str
) -> dict[str, Any]:
    """Store (or replace) the workspace's report key for a provider; its id and last
    four characters."""
    check_provider(provider)
    key_id = await store_sealed_key(
        conn, keyring, SEALED_TABLES["report"], workspace_id, provider, secret, "report key"
    )
    return {
        "workspace_id": str(parse_id(workspace_id, "workspace id")),
        "report_key_id": key_id,
        "provider": provider,
        "last_four": secret.strip()[-4:],
    }


async def delete_report_key(conn: asyncpg.Connection, workspace_id: str, provider: str) -> bool:
    """Remove the workspace's report key for a provider (its stored figures stay);
    whether there was one."""
    if provider not in PROVIDERS:
        raise OperationError(f"provider must be one of {', '.join(REPORT_PROVIDERS)}")
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        status = await conn.execute(
            "DELETE FROM recovea.report_keys WHERE customer_id = $1 AND provider = $2",
            workspace,
            provider,
        )
    return str(status).endswith(" 1")


async def list_report_keys(conn: asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's report keys (last four characters only)."""
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        rows = await conn.fetch(
            "SELECT provider, last_four, backend, created_at FROM recovea.report_keys"
            " WHERE customer_id = $1 ORDER BY provider",
            workspace,
        )
    return [
        {
            "provider": r["provider"],
            "last_four": r["last_four"],
            "backend": r["backend"],
            "created_at": r["created_at"].isoformat(),
        }
        for r in rows
    ]


async def workspaces_with_report_keys(
    conn: asyncpg.Connection, workspace: uuid.UUID | None = None
) -> list[tuple[uuid.UUID, str]]:
    """(workspace, provider) of every report key (of one workspace, when given), on the
    owner connection; oldest workspace first."""
    rows = await conn.fetch(
        "SELECT customer_id, provider FROM recovea.report_keys"
        " WHERE ($1::uuid IS NULL OR customer_id = $1::uuid) AND provider = ANY($2::text[])"
        " ORDER BY created_at, provider",
        workspace,
        list(REPORT_PROVIDERS),
    )
    return [(row["customer_id"], row["provider"]) for row in rows]
