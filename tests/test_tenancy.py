"""Row-level security is the backstop: a mis-scoped query returns nothing."""

from __future__ import annotations

import asyncio

import asyncpg

from recovea_proxy.store.database import APP_ROLE
from tests.support import Postgres, cli_json, set_provider_key

TABLES = ("workspaces", "projects", "teams", "rcv_keys", "provider_keys")


def app_url(postgres: Postgres) -> str:
    return postgres.url.replace("postgres:@", f"{APP_ROLE}@", 1)


def test_unscoped_select_sees_only_the_scoped_workspace(
    postgres: Postgres, db_env: dict[str, str]
) -> None:
    """As the app role, SELECT * returns workspace A's rows in A's scope, none unscoped."""
    ids = []
    for name in ("rls-a", "rls-b"):
        workspace = cli_json("workspace", "create", name, env=db_env)["workspace_id"]
        cli_json(
            "key",
            "create",
            "--workspace",
            workspace,
            "--project",
            "p",
            "--team",
            "t",
            env=db_env,
        )
        set_provider_key(db_env, workspace, "openai", "sk-test-rls-key-0000")
        ids.append(workspace)
    a, b = ids

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
            # Writing into another workspace from A's scope is refused.
            async with conn.transaction():
                await conn.execute("SELECT set_config('recovea.customer_id', $1, true)", a)
                try:
                    await conn.execute(
                        "UPDATE recovea.workspaces SET plan = 'pro' WHERE customer_id = $1::uuid", b
                    )
                    changed = await conn.fetchval(
                        "SELECT count(*) FROM recovea.workspaces WHERE plan = 'pro'"
                    )
                    assert changed == 0
                except asyncpg.InsufficientPrivilegeError:
                    pass
        finally:
            await conn.close()

    asyncio.run(check())


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
