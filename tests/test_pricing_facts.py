"""The facts pricing needs that the request row has no column for — input written to
the prompt cache for 5 minutes or 1 hour, the service tier that served — travel in
the staging row and land in `pricing_facts`, keyed like the event and written in the
same transaction; only requests that have one get a row. They are pruned and deleted
with their workspace's events. A real drainer writes into the session's Postgres."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from recovea_proxy.meter.event import COLUMNS, PRICING_COLUMNS, STAGING_COLUMNS
from recovea_proxy.meter.queue import Item
from tests.drain_support import COLUMN, app_url_of, good_event, prepare, running_drain, stored_ids
from tests.ledger_support import make_tenant, owner_query
from tests.support import Postgres, cli_json


@pytest.fixture(scope="module")
def workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["pricing-facts"]))[0]


def request_id(event: Item) -> str:
    return str(event[COLUMN["request_id"]])


async def stored_facts(owner: str, events: list[Item]) -> dict[str, tuple[Any, ...]]:
    """request id → (5 m writes, 1 h writes, tier, same workspace and time as the event)."""
    conn: asyncpg.Connection = await asyncpg.connect(owner)
    try:
        rows = await conn.fetch(
            "SELECT f.request_id, f.cache_write_5m_tokens, f.cache_write_1h_tokens,"
            " f.service_tier, f.customer_id = e.customer_id AND f.ts = e.ts AS same"
            " FROM recovea.pricing_facts f JOIN recovea.request_events e USING (request_id)"
            " WHERE f.request_id = ANY($1::uuid[])",
            [str(uuid.UUID(request_id(event))) for event in events],
        )
    finally:
        await conn.close()
    return {
        row["request_id"].hex: (
            row["cache_write_5m_tokens"],
            row["cache_write_1h_tokens"],
            row["service_tier"],
            row["same"],
        )
        for row in rows
    }


def test_the_staging_row_ends_with_the_pricing_facts() -> None:
    """The facts are the staging row's last columns (after the row, the receipt and the
    route), so a row spooled before they existed is a prefix of today's."""
    assert STAGING_COLUMNS[: len(COLUMNS)] == COLUMNS
    assert STAGING_COLUMNS[-len(PRICING_COLUMNS) :] == PRICING_COLUMNS
    assert not set(PRICING_COLUMNS) & set(COLUMNS)


async def test_events_with_writes_or_a_tier_get_a_facts_row(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """Writes and a tier are stored beside the event; an event with no writes (0 or
    not reported) and the standard tier has no facts row; every event is written."""
    written = good_event(workspace, cache_write_5m_tokens=1500, cache_write_1h_tokens=2000)
    tiered = good_event(workspace, service_tier="flex")
    plain = good_event(workspace, cache_write_5m_tokens=0, cache_write_1h_tokens=0)
    unreported = good_event(workspace)
    events = [written, tiered, plain, unreported]
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        for event in events:
            drain.queue.put(event)
        await drain.settled(len(events))
        assert (drain.count("written"), drain.count("rejected")) == (4, 0)
    assert await stored_ids(postgres.url, [request_id(e) for e in events]) == {
        request_id(e) for e in events
    }
    assert await stored_facts(postgres.url, events) == {
        request_id(written): (1500, 2000, None, True),
        request_id(tiered): (None, None, "flex", True),
    }


async def test_a_row_spooled_before_the_facts_existed_is_replayed(
    postgres: Postgres, workspace: str, tmp_path: Path
) -> None:
    """A spool file left by the previous version (rows without the pricing columns) is
    adopted and written, not refused: the missing facts are NULL."""
    event = good_event(workspace)
    old = list(event[: len(STAGING_COLUMNS) - len(PRICING_COLUMNS)])
    spool = tmp_path / "spool"
    spool.mkdir(mode=0o700)
    (spool / "meter-1-00000000.jsonl").write_bytes(orjson.dumps([old]) + b"\n")
    async with running_drain(app_url_of(postgres.url), tmp_path) as drain:
        await drain.settled(1)
        assert (drain.count("written"), drain.count("rejected")) == (1, 0)
    assert await stored_ids(postgres.url, [request_id(event)]) == {request_id(event)}


def old_event_with_facts(url: str, workspace: str, days_ago: float) -> uuid.UUID:
    """An event `days_ago` days old with its pricing facts (as the drainer wrote them)."""
    request_id = uuid.uuid4()
    ts = datetime.now(UTC) - timedelta(days=days_ago)
    owner_query(
        url,
        "INSERT INTO recovea.request_events (request_id, trace_id, customer_id, status,"
        " latency_total_ms, gateway_overhead_ms, provider, ts)"
        " VALUES ($1, 't', $2::uuid, 'success', 1, 1, 'anthropic', $3)",
        request_id,
        workspace,
        ts,
    )
    owner_query(
        url,
        "INSERT INTO recovea.pricing_facts (request_id, ts, customer_id, cache_write_5m_tokens)"
        " VALUES ($1, $2, $3::uuid, 100)",
        request_id,
        ts,
        workspace,
    )
    return request_id


def facts_of(url: str, workspace: str) -> set[uuid.UUID]:
    rows = owner_query(
        url, "SELECT request_id FROM recovea.pricing_facts WHERE customer_id = $1::uuid", workspace
    )
    return {row["request_id"] for row in rows}


def test_facts_are_pruned_and_deleted_with_the_events(
    db_env: dict[str, str], postgres: Postgres
) -> None:
    """A free workspace's facts older than 30 days go at the next prune, the recent ones
    stay; deleting the workspace takes the rest."""
    tenant = make_tenant(db_env, "pricing-facts-retention")
    old = old_event_with_facts(postgres.url, tenant.workspace, 31)
    recent = old_event_with_facts(postgres.url, tenant.workspace, 29)
    cli_json("prune", env=db_env)
    assert facts_of(postgres.url, tenant.workspace) == {recent}
    assert old not in facts_of(postgres.url, tenant.workspace)
    deleted = cli_json("workspace", "delete", tenant.workspace, "--yes", env=db_env)
    assert deleted["deleted"]["pricing_facts"] == 1
    assert facts_of(postgres.url, tenant.workspace) == set()
