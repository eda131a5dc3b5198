"""Row-level security is the backstop: a mis-scoped query returns nothing, and a write
in one workspace's scope can neither create nor change another workspace's rows."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from recovea_proxy.store.database import APP_ROLE
from tests.support import Postgres, cli_json, set_provider_key

TABLES = ("workspaces", "projects", "teams", "rcv_keys", "provider_keys")


def app_url(postgres: Postgres) -> str:
    return postgres.url.replace("postgres:@", f"{APP_ROLE}@", 1)


def tenant(env: dict[str, str], name: str) -> str:
    """A workspace with a key (in a project and a team) and an OpenAI key; its id."""
    workspace: str = cli_json("workspace", "create", name, env=env)["workspace_id"]
    cli_json(
        "key", "create", "--workspace", workspace, "--project", "p", "--team", "t", env=env
    )
    set_provider_key(env, workspace, "openai", "sk-test-rls-key-0000")
    return workspace


def test_unscoped_select_sees_only_the_scoped_workspace(
    postgres: Postgres, db_env: dict[str, str]
) -> None:
    """As the app role, SELECT * returns workspace A's rows in A's scope, none unscoped."""
    a, b = tenant(db_env, "rls-a"), tenant(db_env, "rls-b")

    async def check() -> None:
        conn = await asyncpg.connect(app_url(postgres))
        try:
            assert await conn.fetchval("SELECT current_user") == APP_ROLE
            for table in TABLES:
                unscoped = await conn.fetch(f"SELECT * FROM recovea.{table}")
                assert unscoped == [], table
                async with conn.transaction():
                    await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", a)
                    rows = await conn.fetch(f"SELECT * FROM recovea.{table}")
                assert rows, table
                assert {str(r["customer_id"]) for r in rows} == {a}, table
                assert b not in {str(r["customer_id"]) for r in rows}
        finally:
            await conn.close()

    asyncio.run(check())


def test_a_write_in_one_scope_cannot_create_or_change_another_workspaces_rows(
    postgres: Postgres, db_env: dict[str, str]
) -> None:
    """As the app role in workspace A's scope: inserting rows for B (or for a new
    workspace) and moving A's rows to B are refused; updating or deleting B's rows
    touches nothing. Read back as the owner (no RLS), B's rows are exactly as before
    and no row was planted."""
    suffix = uuid.uuid4().hex[:8]
    a, b = tenant(db_env, f"rls-wa-{suffix}"), tenant(db_env, f"rls-wb-{suffix}")
    asyncio.run(assert_writes_stay_in_scope(postgres, a, b))


def test_the_write_check_fails_when_the_policy_lets_writes_out(
    own_postgres: Postgres, tmp_path: Path
) -> None:
    """The write-isolation check is not vacuous: in a database of the test's own whose
    policies check nothing on write (`WITH CHECK (true)`), it fails."""
    env = {
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    a, b = tenant(env, "rls-wa"), tenant(env, "rls-wb")

    async def open_up() -> None:
        conn = await asyncpg.connect(own_postgres.url)
        try:
            for table in TABLES:
                await conn.execute(
                    f"ALTER POLICY tenant_isolation ON recovea.{table} WITH CHECK (true)"
                )
        finally:
            await conn.close()

    asyncio.run(open_up())
    with pytest.raises(AssertionError, match="workspace B's rows changed"):
        asyncio.run(assert_writes_stay_in_scope(own_postgres, a, b))


async def assert_writes_stay_in_scope(postgres: Postgres, a: str, b: str) -> None:
    """Every cross-workspace write from A's scope is refused or touches nothing, as the
    owner sees it."""
    before = await owner_view(postgres, b)
    other = uuid.UUID(b)
    refused: list[tuple[str, tuple[Any, ...]]] = [
        (
            "INSERT INTO recovea.projects (id, customer_id, name) VALUES ($1, $2, 'planted')",
            (uuid.uuid4(), other),
        ),
        (
            "INSERT INTO recovea.workspaces (customer_id, name) VALUES ($1, 'rls-planted')",
            (uuid.uuid4(),),
        ),
        ("UPDATE recovea.teams SET customer_id = $1, name = 'moved'", (other,)),
        ("UPDATE recovea.rcv_keys SET customer_id = $1", (other,)),
    ]
    touched_nothing = (
        "UPDATE recovea.workspaces SET plan = 'pro' WHERE customer_id = $1",
        "UPDATE recovea.provider_keys SET last_four = 'XXXX' WHERE customer_id = $1",
        "DELETE FROM recovea.rcv_keys WHERE customer_id = $1",
    )
    let_through: list[str] = []
    statuses: list[str] = []
    conn = await asyncpg.connect(app_url(postgres))
    try:
        for statement, args in refused:
            try:
                await in_scope(conn, a, statement, *args)
            except asyncpg.InsufficientPrivilegeError:
                continue
            let_through.append(statement)
        for statement in touched_nothing:
            statuses.append(await in_scope(conn, a, statement, other))
    finally:
        await conn.close()
    assert await owner_view(postgres, b) == before, "workspace B's rows changed"
    assert await planted(postgres) == 0, "a row was planted outside A's scope"
    assert let_through == [], "writes outside A's scope were not refused"
    assert statuses == ["UPDATE 0", "UPDATE 0", "DELETE 0"]


async def in_scope(conn: asyncpg.Connection, workspace: str, statement: str, *args: Any) -> str:
    """Run one statement in its own transaction, scoped to `workspace`; its status."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", workspace)
        status: str = await conn.execute(statement, *args)
    return status


async def owner_view(postgres: Postgres, workspace: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of the workspace in each tenant table, read as the owner (no RLS)."""
    conn = await asyncpg.connect(postgres.url)
    try:
        return {
            table: [
                dict(r)
                for r in await conn.fetch(
                    f"SELECT * FROM recovea.{table} WHERE customer_id = $1 ORDER BY 1",
                    uuid.UUID(workspace),
                )
            ]
            for table in TABLES
        }
    finally:
        await conn.close()


async def planted(postgres: Postgres) -> int:
    """Rows named by the writes above that no workspace asked for, read as the owner."""
    conn = await asyncpg.connect(postgres.url)
    try:
        count: int = await conn.fetchval(
            "SELECT (SELECT count(*) FROM recovea.projects WHERE name = 'planted')"
            " + (SELECT count(*) FROM recovea.workspaces WHERE name = 'rls-planted')"
        )
    finally:
        await conn.close()
    return count


def test_app_role_owns_nothing_and_cannot_bypass_rls(postgres: Postgres) -> None:
    """The gateway's role is not a superuser, has no BYPASSRLS and owns no table."""

    async def check() -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            role = await conn.fetchrow(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1", APP_ROLE
            )
            assert role is not None and not role["rolsuper"] and not role["rolbypassrls"]
            owned = await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'recovea' AND tableowner = $1",
                APP_ROLE,
            )
            assert owned == 0
            forced = await conn.fetch(
                "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'recovea' AND c.relkind = 'r'"
                " AND c.relrowsecurity AND c.relforcerowsecurity"
            )
            assert {r["relname"] for r in forced} >= set(TABLES)
        finally:
            await conn.close()

    asyncio.run(check())


def test_migrations_are_idempotent_and_concurrent_safe(db_env: dict[str, str]) -> None:
    """Running migrate again (even several at once) applies nothing twice."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: cli_json("migrate", env=db_env), range(3)))
    assert all(r["applied"] == [] for r in results)
