"""Workspaces, rcv_ keys and provider keys: create, revoke, store.

Run on the owner connection (the CLI talks to the database directly). Secrets are
returned once, to the caller, and never stored or logged in full.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from recovea_proxy.auth.envelope import context_for, report_context_for, seal
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import REVOCATIONS_CHANNEL, key_hash, last_four, new_key
from recovea_proxy.auth.kms_refusals import reason_for

PROVIDERS = ("openai", "anthropic", "openrouter")


class OperationError(ValueError):
    """The operation's input is not acceptable; the message says why."""


class KmsRefusedError(OperationError):
    """A workspace's own KMS key (or, re-wrapping, the key before it) refused or could
    not be reached; `reason` as in auth.kms_refusals, `status` the HTTP answer (400:
    the key given cannot be used; 503 `provider_key_unavailable`: the key in use)."""

    def __init__(self, message: str, reason: str, status: int = 503) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new rcv_ key: `secret` is shown once and never again."""

    id: str
    workspace_id: str
    role: str
    env: str
    secret: str

    @property
    def last_four(self) -> str:
        return last_four(self.secret)


def parse_id(raw: str, what: str) -> uuid.UUID:
    """A UUID from user input, or a clear error."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise OperationError(f"{what} must be a UUID, not {raw[:40]!r}") from None


def check_name(name: str, what: str = "name") -> str:
    """A name: 1-100 printable characters."""
    name = name.strip()
    if not 1 <= len(name) <= 100 or not name.isprintable():
        raise OperationError(f"{what} must be 1 to 100 printable characters")
    return name


async def create_workspace(conn: asyncpg.Connection, name: str, plan: str = "free") -> str:
    """A new workspace; its id."""
    if plan not in ("free", "pro"):
        raise OperationError("plan must be free or pro")
    name = check_name(name, "workspace name")
    workspace_id = uuid.uuid4()
    try:
        async with conn.transaction():
            await scope(conn, str(workspace_id))
            await conn.execute(
                "INSERT INTO recovea.workspaces (customer_id, name, plan) VALUES ($1, $2, $3)",
                workspace_id,
                name,
                plan,
            )
    except asyncpg.UniqueViolationError:
        raise OperationError(f"a workspace named {name!r} already exists") from None
    return str(workspace_id)


async def scope(conn: asyncpg.Connection, workspace_id: str) -> None:
    """Limit the current transaction to one workspace (row-level security)."""
    await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", workspace_id)


async def _require_workspace(conn: asyncpg.Connection, workspace: uuid.UUID) -> None:
    """Fail with a clear message when the workspace does not exist (or is out of scope)."""
    if not await conn.fetchval(
        "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1", workspace
    ):
        raise OperationError(f"no workspace {workspace}")


async def _named(
    conn: asyncpg.Connection, table: str, workspace: uuid.UUID, name: str
) -> uuid.UUID:
    row_id = await conn.fetchval(
        f"SELECT id FROM recovea.{table} WHERE customer_id = $1 AND name = $2", workspace, name
    )
    if row_id is None:
        row_id = uuid.uuid4()
        await conn.execute(
            f"INSERT INTO recovea.{table} (id, customer_id, name) VALUES ($1, $2, $3)",
            row_id,
            workspace,
            name,
        )
    return row_id  # type: ignore[no-any-return]


async def create_key(
    conn: asyncpg.Connection,
    workspace_id: str,
    *,
    role: str = "member",
    env: str = "live",
    project: str | None = None,
    team: str | None = None,
) -> CreatedKey:
    """A new rcv_ key for the workspace (project and team created on first use)."""
    if role not in ("admin", "member"):
        raise OperationError("role must be admin or member")
    if env not in ("live", "test"):
        raise OperationError("env must be live or test")
    workspace = parse_id(workspace_id, "workspace id")
    async with conn.transaction():
        await scope(conn, str(workspace))
        await _require_workspace(conn, workspace)
        project_id = (
            await _named(conn, "projects", workspace, check_name(project)) if project else None
        )
        team_id = await _named(conn, "teams", workspace, check_name(team)) if team else None
        secret = new_key(env)
        key_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO recovea.rcv_keys"
            " (id, customer_id, project_id, team_id, role, env, key_sha256, last_four)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            key_id,
            workspace,
            project_id,
            team_id,
            role,
            env,
            key_hash(secret),
            last_four(secret),
        )
    return CreatedKey(str(key_id), str(workspace), role, env, secret)


async def revoke_key(
    conn: asyncpg.Connection, key_id: str, workspace_id: str | None = None
) -> bool:
    """Revoke a key (of `workspace_id` only, when given); every gateway process hears
    of it at once (NOTIFY)."""
    parsed = parse_id(key_id, "key id")
    async with conn.transaction():
        if workspace_id is not None:
            await scope(conn, workspace_id)
        status = await conn.execute(
            "UPDATE recovea.rcv_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL"
            " AND ($2::uuid IS NULL OR customer_id = $2::uuid)",
            parsed,
            workspace_id,
        )
        revoked = str(status).endswith(" 1")
        if revoked:
            await conn.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, str(parsed))
    return revoked


async def set_provider_key(
    conn: asyncpg.Connection, keyring: Keyring, workspace_id: str, provider: str, secret: str
) -> str:
    """Store (or replace) the workspace's key for a provider, envelope-encrypted under
    the workspace's own KMS key when it has one, else the deployment's master key."""
    if provider not in PROVIDERS:
        raise OperationError(f"provider must be one of {', '.join(PROVIDERS)}")
    return await store_sealed_key(
        conn, keyring, SEALED_TABLES["provider"], workspace_id, provider, secret, "provider key"
    )


@dataclass(frozen=True, slots=True)
class SealedTable:
    """A table of envelope-encrypted keys (one per workspace and provider), and the
    encryption context of its rows."""

    name: str
    context_of: Callable[[str, str, str], dict[str, str]]


#: every table of sealed keys: provider keys (the request plane) and report keys (the
#: reconciliation poller's); both are wrapped alike, and re-wrapped together
SEALED_TABLES = {
    "provider": SealedTable("provider_keys", context_for),
    "report": SealedTable("report_keys", report_context_for),
}


async def store_sealed_key(
    conn: asyncpg.Connection,
    keyring: Keyring,
    table: SealedTable,
    workspace_id: str,
    provider: str,
    secret: str,
    what: str,
) -> str:
    """Seal `secret` under the workspace's own KMS key when it has one, else the
    deployment's master key, and store (or replace) it as the workspace's `provider`
    row of `table`; the row's id."""
    secret = secret.strip()
    if not 8 <= len(secret) <= 512 or not secret.isprintable() or " " in secret:
        raise OperationError(f"the {what} must be 8 to 512 printable characters, no spaces")
    workspace = parse_id(workspace_id, "workspace id")
    key_id = uuid.uuid4()
    context = table.context_of(str(workspace), provider, str(key_id))
    async with conn.transaction():
        await scope(conn, str(workspace))
        kms_key_arn = await conn.fetchval(
            "SELECT kms_key_arn FROM recovea.workspaces WHERE customer_id = $1", workspace
        )
    try:
        # KMS is blocking (boto3 set-up too)
        sealed = await asyncio.to_thread(
            lambda: seal(keyring.master_for(kms_key_arn), secret, context)
        )
    except Exception as exc:
        if kms_key_arn is None:
            raise
        raise KmsRefusedError(
            f"the workspace's KMS key refused or could not be reached ({reason_for(exc)});"
            " the key was not stored",
            reason_for(exc),
        ) from None
    async with conn.transaction():
        await scope(conn, str(workspace))
        await _require_workspace(conn, workspace)
        # Locked: a `workspace kms set`/`clear` waits for this row, or ran before it.
        if kms_key_arn != await conn.fetchval(
            "SELECT kms_key_arn FROM recovea.workspaces WHERE customer_id = $1 FOR NO KEY UPDATE",
            workspace,
        ):
            raise OperationError("the workspace's KMS key changed meanwhile; store the key again")
        await conn.execute(
            f"INSERT INTO recovea.{table.name} (id, customer_id, provider, ciphertext, nonce,"
            " wrapped_data_key, master_key_id, backend, last_four)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            " ON CONFLICT (customer_id, provider) DO UPDATE SET id = EXCLUDED.id,"
            " ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce,"
            " wrapped_data_key = EXCLUDED.wrapped_data_key,"
            " master_key_id = EXCLUDED.master_key_id, backend = EXCLUDED.backend,"
            " last_four = EXCLUDED.last_four, created_at = now()",
            key_id,
            workspace,
            provider,
            sealed.ciphertext,
            sealed.nonce,
            sealed.wrapped_data_key,
            sealed.master_key_id,
            sealed.backend,
            last_four(secret),
        )
    return str(key_id)


async def init(conn: asyncpg.Connection) -> tuple[str, CreatedKey]:
    """First run: workspace `default` and an admin key for it, in one transaction (a
    failure leaves neither, so `init` can run again)."""
    async with conn.transaction():
        existing = await conn.fetchval(
            "SELECT customer_id FROM recovea.workspaces WHERE name = 'default'"
        )
        if existing is not None:
            raise OperationError(
                "already initialized: workspace 'default' exists "
                "(create more keys with `recovea key create`)"
            )
        workspace_id = await create_workspace(conn, "default", "free")
        key = await create_key(conn, workspace_id, role="admin", env="live")
    return workspace_id, key


async def rewrap_provider_keys(conn: asyncpg.Connection, keyring: Keyring) -> int:
    """Re-wrap every stored data key (provider keys and report keys) under the current
    master key (no downtime: rows stay readable throughout, each row is rewritten in its
    own transaction). Workspaces on their own KMS key keep it: their rows are left
    alone, and a row re-wrapped or replaced meanwhile (`workspace kms set`) is not
    overwritten."""
    count = 0
    for table in SEALED_TABLES.values():
        count += await _rewrap_table(conn, keyring, table)
    return count


async def _rewrap_table(conn: asyncpg.Connection, keyring: Keyring, table: SealedTable) -> int:
    rows = await conn.fetch(
        "SELECT id, customer_id, provider, wrapped_data_key, master_key_id, backend"
        f" FROM recovea.{table.name} WHERE customer_id NOT IN"
        " (SELECT customer_id FROM recovea.workspaces WHERE kms_key_arn IS NOT NULL)"
    )
    current = keyring.current
    count = 0
    for row in rows:
        context = table.context_of(str(row["customer_id"]), row["provider"], str(row["id"]))
        reader = keyring.reader(row["backend"], row["master_key_id"])
        data_key = await asyncio.to_thread(reader.unwrap, row["wrapped_data_key"], context)
        wrapped = await asyncio.to_thread(current.wrap, data_key, context)
        status = await conn.execute(
            f"UPDATE recovea.{table.name} SET wrapped_data_key = $2, master_key_id = $3,"
            " backend = $4 WHERE id = $1 AND wrapped_data_key = $5",
            row["id"],
            wrapped,
            current.key_id,
            current.backend,
            row["wrapped_data_key"],
        )
        count += str(status).endswith(" 1")
    return count


async def describe_workspace(conn: asyncpg.Connection, workspace_id: str) -> dict[str, Any]:
    """The workspace's settings."""
    row = await conn.fetchrow(
        "SELECT customer_id, name, plan, retention_days, created_at FROM recovea.workspaces"
        " WHERE customer_id = $1",
        uuid.UUID(workspace_id),
    )
    if row is None:
        raise OperationError(f"no workspace {workspace_id}")
    return {
        "id": str(row["customer_id"]),
        "name": row["name"],
        "plan": row["plan"],
        "retention_days": row["retention_days"],
        "created_at": row["created_at"].isoformat(),
    }


async def list_keys(conn: asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's rcv_ keys (last four characters only)."""
    rows = await conn.fetch(
        "SELECT k.id, k.role, k.env, p.name AS project, t.name AS team, k.last_four,"
        " k.created_at, k.revoked_at FROM recovea.rcv_keys k"
        " LEFT JOIN recovea.projects p ON p.id = k.project_id"
        " LEFT JOIN recovea.teams t ON t.id = k.team_id"
        " WHERE k.customer_id = $1 ORDER BY k.created_at",
        uuid.UUID(workspace_id),
    )
    return [
        {
            "id": str(r["id"]),
            "role": r["role"],
            "env": r["env"],
            "project": r["project"],
            "team": r["team"],
            "last_four": r["last_four"],
            "created_at": r["created_at"].isoformat(),
            "revoked_at": r["revoked_at"].isoformat() if r["revoked_at"] else None,
        }
        for r in rows
    ]


async def list_provider_keys(conn: asyncpg.Connection, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's provider keys (last four characters only)."""
    rows = await conn.fetch(
        "SELECT provider, last_four, backend, created_at FROM recovea.provider_keys"
        " WHERE customer_id = $1 ORDER BY provider",
        uuid.UUID(workspace_id),
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


async def forget_workspace_keys(conn: asyncpg.Connection, workspace: uuid.UUID) -> None:
    """Send every key of the workspace the revocation notice (it is not revoked): every
    gateway forgets them and reads them again, with the workspace's lever policy and
    rules as they now are, on their next request."""
    keys = await conn.fetch("SELECT id FROM recovea.rcv_keys WHERE customer_id = $1", workspace)
    for key in keys:
        await conn.execute("SELECT pg_notify($1, $2)", REVOCATIONS_CHANNEL, str(key["id"]))
