"""An admin operation writes all of its rows or none: a workspace created over the API
never exists without its first admin key."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx

from recovea_proxy.store.database import APP_ROLE
from tests.support import Gateway, Postgres, cli, cli_json


def test_a_failure_creating_the_first_key_leaves_no_workspace_behind(
    own_postgres: Postgres, start_gateway: Callable[..., Gateway], tmp_path: Path
) -> None:
    """With the gateway's role unable to insert keys, `POST /admin/v1/workspaces` fails
    after inserting the workspace: the answer is 503, the owner finds no such workspace,
    and once keys can be written again the same name is free to create."""
    env = {
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    operator = cli_json("init", env=env)["key"]
    gateway = start_gateway(**env)

    def create() -> httpx.Response:
        return httpx.post(
            f"{gateway.url}/admin/v1/workspaces",
            headers={"authorization": f"Bearer {operator}"},
            json={"name": "half-made"},
        )

    as_owner(own_postgres, f"REVOKE INSERT ON recovea.rcv_keys FROM {APP_ROLE}")
    failed = create()
    assert failed.status_code == 503, failed.text
    assert failed.json()["error"]["code"] == "store_unavailable"
    assert workspaces_named(own_postgres, "half-made") == 0

    as_owner(own_postgres, f"GRANT INSERT ON recovea.rcv_keys TO {APP_ROLE}")
    created = create()
    assert created.status_code == 201, created.text
    assert workspaces_named(own_postgres, "half-made") == 1


def as_owner(postgres: Postgres, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def workspaces_named(postgres: Postgres, name: str) -> int:
    """How many workspaces have this name, read as the owner (no row-level security)."""

    async def count() -> int:
        conn = await asyncpg.connect(postgres.url)
        try:
            found: int = await conn.fetchval(
                "SELECT count(*) FROM recovea.workspaces WHERE name = $1", name
            )
        finally:
            await conn.close()
        return found

    return asyncio.run(count())


def test_a_failed_init_leaves_nothing_and_can_run_again(
    own_postgres: Postgres, tmp_path: Path
) -> None:
    """`recovea init` writes the `default` workspace and its admin key together: when
    the key cannot be written, no workspace is left behind and init can run again."""
    env = {
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(tmp_path / "master.key"),
    }
    cli_json("migrate", env=env)
    as_owner(
        own_postgres,
        "CREATE FUNCTION public.refuse_keys() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'keys refused by the test'; END $$;"
        " CREATE TRIGGER refuse_keys BEFORE INSERT ON recovea.rcv_keys"
        " FOR EACH ROW EXECUTE FUNCTION public.refuse_keys()",
    )
    failed = cli("init", env=env)
    assert failed.returncode != 0
    assert workspaces_named(own_postgres, "default") == 0
    as_owner(own_postgres, "DROP TRIGGER refuse_keys ON recovea.rcv_keys")
    assert cli_json("init", env=env)["key"].startswith("rcv_live_")
