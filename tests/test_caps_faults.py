"""Spend caps under faults: with the database stopped a capped workspace is refused
(402 `budget_unverifiable`, fail-closed) while an uncapped one is served; a gateway
killed while holding a lease gives the budget back once the lease expires."""

from __future__ import annotations

import os
import signal
from decimal import Decimal
from pathlib import Path

from tests.caps_support import (
    FAST,
    body,
    estimated_usd,
    post,
    set_cap,
    usd6,
)
from tests.conftest import upstream_env
from tests.ledger_support import make_tenant
from tests.support import Gateway, MockServer, Postgres, wait_until


def test_database_stopped_capped_refused_uncapped_served(
    own_postgres: Postgres, mock: MockServer, workdir: Path
) -> None:
    """With the database stopped: a workspace with a cap whose lease can no longer be
    confirmed gets 402 budget_unverifiable; a workspace without a cap is served."""
    env = {
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "mk2"),
    }
    gw = Gateway({**upstream_env(mock), **env, **FAST}, workdir)
    try:
        capped = make_tenant(env, "caps-db-capped")
        free = make_tenant(env, "caps-db-free")
        set_cap(env, [gw], "set", "--workspace", capped.workspace, "--usd", "5")
        # both keys resolved and cached while the database is up
        assert post(gw, capped, body("warm 1")).status_code == 200
        assert post(gw, free, body("warm 2")).status_code == 200
        own_postgres.stop()
        refused = wait_until(
            lambda: (r := post(gw, capped, body("down"))).status_code == 402 and r, 20, "402"
        )
        assert refused.json()["error"]["code"] == "budget_unverifiable"
        assert post(gw, free, body("down free")).status_code == 200
    finally:
        gw.stop(timeout=15)


def test_a_killed_process_lease_expires_and_the_budget_comes_back(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """Gateway A leases the whole cap (lease fraction 1) and is killed with SIGKILL:
    gateway B is refused while A's lease holds the budget, and served once it has
    expired (a 3 s lease).

    A syncs only to carve its lease (its periodic sync is a minute away): a sync that
    found A's request in flight would record its reservation as held, and reclaiming
    the expired lease counts that in full as spent (`guards/leases.py`), so B would be
    refused for good however long it waited."""
    whole = {**FAST, "RECOVEA_CAP_LEASE_FRACTION": "1"}
    first = Gateway(
        {**upstream_env(mock), **db_env, **whole, "RECOVEA_CAP_SYNC_INTERVAL_S": "60"}, workdir
    )
    second = Gateway({**upstream_env(mock), **db_env, **whole}, workdir)
    try:
        tenant = make_tenant(db_env, "caps-crash")
        raw = body("crash")
        cap = usd6(estimated_usd(raw) * Decimal("1.5"))
        set_cap(db_env, [first, second], "set", "--workspace", tenant.workspace, "--usd", cap)
        assert post(first, tenant, raw).status_code == 200
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        assert post(second, tenant, body("crash")).status_code == 402
        wait_until(lambda: post(second, tenant, body("crash")).status_code == 200, 15, "expiry")
    finally:
        first.stop(timeout=5)
        second.stop()
