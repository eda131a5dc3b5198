"""Retention and deletion: old rows go per plan (or override), one workspace at a time
(one that fails holds back no other), old day partitions are dropped, a missing
partition loses nothing, and a deleted workspace leaves nothing."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, Postgres, cli, cli_json, wait_until


def old_event(url: str, tenant: Tenant, days_ago: float) -> uuid.UUID:
    """An event row `days_ago` days old (as the drainer would have written it then)."""
    request_id = uuid.uuid4()
    owner_query(
        url,
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, status,"
        " latency_total_ms, gateway_overhead_ms, provider, ts)"
        " VALUES ($1, 't', $2::uuid, 'success', 1, 1, 'openai', $3)",
        request_id,
        tenant.workspace,
        datetime.now(UTC) - timedelta(days=days_ago),
    )
    owner_query(
        url,
        "INSERT INTO recovea.receipts (chain_id, seq, request_id, customer_id, kid, ts, token)"
        " VALUES ($1, 1, $2, $3::uuid, 'rk_test', $4, 'x.y')",
        uuid.uuid4().hex,
        request_id,
        tenant.workspace,
        datetime.now(UTC) - timedelta(days=days_ago),
    )
    return request_id


def kept(url: str, request_id: uuid.UUID) -> tuple[bool, bool]:
    events = owner_query(
        url, "SELECT 1 FROM recovea.request_events WHERE request_id = $1", request_id
    )
    receipts = owner_query(url, "SELECT 1 FROM recovea.receipts WHERE request_id = $1", request_id)
    return bool(events), bool(receipts)


def test_prune_applies_each_plan_and_override(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    free = make_tenant(db_env, "retention-free")
    pro = make_tenant(db_env, "retention-pro", plan="pro")
    short = make_tenant(db_env, "retention-short", plan="pro")
    admin_key = cli_json(
        "key", "create", "--workspace", short.workspace, "--role", "admin", env=db_env
    )["key"]
    patched = httpx.patch(
        f"{gateway.url}/admin/v1/workspace",
        json={"retention_days": 10},
        headers={"authorization": f"Bearer {admin_key}"},
    )
    assert patched.json() == {"retention_days": 10, "effective_retention_days": 10}
    free_old, free_recent = old_event(postgres.url, free, 31), old_event(postgres.url, free, 29)
    pro_old, pro_recent = old_event(postgres.url, pro, 366), old_event(postgres.url, pro, 40)
    short_old, short_recent = old_event(postgres.url, short, 11), old_event(postgres.url, short, 9)
    result = cli_json("prune", env=db_env)
    assert result["events_deleted"] >= 3 and result["receipts_deleted"] >= 3
    for gone in (free_old, pro_old, short_old):
        assert kept(postgres.url, gone) == (False, False)
    for stays in (free_recent, pro_recent, short_recent):
        assert kept(postgres.url, stays) == (True, True)


def test_day_partitions_past_every_retention_are_dropped(
    db_env: dict[str, str], postgres: Postgres
) -> None:
    day = (datetime.now(UTC) - timedelta(days=4000)).date()
    owner_query(postgres.url, "SELECT recovea.ensure_event_partition($1)", day)
    name = f"request_events_{day:%Y%m%d}"
    assert owner_query(postgres.url, "SELECT to_regclass($1) AS t", f"recovea.{name}")[0]["t"]
    result = cli_json("prune", env=db_env)
    assert name in result["partitions_dropped"]
    assert (
        owner_query(postgres.url, "SELECT to_regclass($1) AS t", f"recovea.{name}")[0]["t"] is None
    )


def test_a_day_without_partition_loses_nothing(db_env: dict[str, str], postgres: Postgres) -> None:
    """Rows for a day with no partition land in the default one, and move when it is made."""
    tenant = make_tenant(db_env, "retention-default")
    far = datetime.now(UTC) + timedelta(days=20)
    request_id = uuid.uuid4()
    owner_query(
        postgres.url,
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, status,"
        " latency_total_ms, gateway_overhead_ms, provider, ts)"
        " VALUES ($1, 't', $2::uuid, 'success', 1, 1, 'openai', $3)",
        request_id,
        tenant.workspace,
        far,
    )

    def partition() -> str:
        rows = owner_query(
            postgres.url,
            "SELECT tableoid::regclass::text AS p FROM recovea.request_events"
            " WHERE request_id = $1",
            request_id,
        )
        return str(rows[0]["p"])

    assert partition() == "recovea.request_events_default"
    owner_query(postgres.url, "SELECT recovea.ensure_event_partition($1)", far.date())
    assert partition() == f"recovea.request_events_{far:%Y%m%d}"


def test_deleting_a_workspace_leaves_nothing_behind(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    doomed = make_tenant(db_env, "retention-doomed", project="p", team="t")
    request_id = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "bye"}]},
        headers=doomed.bearer,
    ).headers["x-request-id"]
    stored(gateway, doomed, "receipts", request_id)
    cli_json("rollup", env=db_env)
    owner_query(
        postgres.url,
        "INSERT INTO recovea.model_prices (customer_id, model, input, cached_input, output)"
        " VALUES ($1::uuid, 'm', 1, 1, 1)",
        doomed.workspace,
    )
    tables = [
        row["table_name"]
        for row in owner_query(
            postgres.url,
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'recovea'"
            " AND column_name = 'customer_id' AND table_name NOT LIKE 'request_events_%'",
        )
    ]
    assert {"request_events", "receipts", "routes", "usage_rollups", "rcv_keys"} <= set(tables)

    def leftovers() -> dict[str, int]:
        counts = {}
        for table in tables:
            n = owner_query(
                postgres.url,
                f"SELECT count(*) AS n FROM recovea.{table} WHERE customer_id = $1::uuid",
                doomed.workspace,
            )[0]["n"]
            counts[table] = int(n)
        return counts

    assert sum(leftovers().values()) >= 8
    refused = cli("workspace", "delete", doomed.workspace, env=db_env)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    deleted = cli_json("workspace", "delete", doomed.workspace, "--yes", env=db_env)
    assert deleted["deleted"]["request_events"] == 1
    assert leftovers() == dict.fromkeys(tables, 0)
    wait_until(
        lambda: (
            httpx.get(f"{gateway.url}/v1/recovea/usage", headers=doomed.bearer).status_code == 401
        ),
        15,
        "the deleted workspace's key is refused",
    )


def test_an_admin_deletes_its_own_workspace_over_the_api(
    gateway: Gateway, db_env: dict[str, str], postgres: Postgres
) -> None:
    tenant = make_tenant(db_env, "retention-self-delete")
    admin = {
        "authorization": "Bearer "
        + cli_json("key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env)[
            "key"
        ]
    }
    unconfirmed = httpx.delete(f"{gateway.url}/admin/v1/workspace", headers=admin)
    assert unconfirmed.status_code == 400
    done = httpx.delete(
        f"{gateway.url}/admin/v1/workspace", params={"confirm": tenant.workspace}, headers=admin
    )
    assert done.status_code == 200, done.text
    assert done.json()["deleted"]["workspaces"] == 1
    assert (
        owner_query(
            postgres.url,
            "SELECT 1 FROM recovea.workspaces WHERE customer_id = $1::uuid",
            tenant.workspace,
        )
        == []
    )


def test_one_workspace_whose_pruning_times_out_does_not_hold_back_another(
    db_env: dict[str, str], postgres: Postgres
) -> None:
    """A workspace whose old rows cannot be deleted within RECOVEA_MAINTENANCE_TIMEOUT_S
    (another session holds a lock on one of its receipts) is reported and keeps its
    rows; another workspace's old rows are deleted in the same prune. The next prune
    deletes the first one's too."""
    import asyncio

    import asyncpg

    stuck, fine = make_tenant(db_env, "retention-stuck"), make_tenant(db_env, "retention-fine")
    stuck_old, fine_old = old_event(postgres.url, stuck, 45), old_event(postgres.url, fine, 45)

    async def hold_receipt(held: asyncio.Event, release: asyncio.Event) -> None:
        conn = await asyncpg.connect(postgres.url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT 1 FROM recovea.receipts WHERE request_id = $1 FOR UPDATE", stuck_old
                )
                held.set()
                await release.wait()
        finally:
            await conn.close()

    loop = asyncio.new_event_loop()
    held, release = asyncio.Event(), asyncio.Event()
    holder = threading.Thread(target=loop.run_until_complete, args=(hold_receipt(held, release),))
    holder.start()
    try:
        wait_until(held.is_set, 10, "the lock on the stuck workspace's receipt")
        done = cli("prune", "--json", env={**db_env, "RECOVEA_MAINTENANCE_TIMEOUT_S": "1"})
        assert kept(postgres.url, fine_old) == (False, False)
        assert kept(postgres.url, stuck_old) == (True, True)
        assert 1 == done.returncode, done.stderr
        assert [{"workspace": stuck.workspace, "error": "QueryCanceledError"}] == orjson.loads(
            done.stdout
        )["failed"]
    finally:
        loop.call_soon_threadsafe(release.set)
        holder.join(10)
        loop.close()
    cli_json("prune", env=db_env)
    assert kept(postgres.url, stuck_old) == (False, False)
