"""Hard spend caps: a request is admitted only when every cap that applies has room for
its estimated cost; leases keep the database off the hot path and the bound holds
across processes; the caps settle with the real usage (failing closed, and a killed
process's lease: `test_caps_faults.py`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.caps_support import (
    FAST,
    body,
    burst,
    estimated_usd,
    post,
    set_cap,
    usd6,
)
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, MockServer, cli, cli_json, wait_until


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway({**upstream_env(mock), **db_env, **FAST}, workdir)
    yield gw
    gw.stop()


def show(env: dict[str, str], tenant: Tenant) -> dict[str, Any]:
    return cli_json("cap", "show", "--workspace", tenant.workspace, env=env)


def test_fifty_concurrent_requests_admit_no_more_than_the_cap_covers(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A cap worth 5.5 estimated requests, 50 requests at once (each held 300 ms by
    the provider): at most 5 are admitted, the rest are 402 `budget_exceeded`."""
    tenant = make_tenant(db_env, "caps-burst")
    each = estimated_usd(body("burst 10"))
    cap = usd6(each * Decimal("5.5"))
    set_cap(db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", cap)
    statuses = asyncio.run(burst([gateway.url], tenant, 50, 300))
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 402}
    assert 1 <= admitted <= 5, statuses
    print(f"one gateway: admitted {admitted} of 50, {admitted * each} USD of {cap} estimated")


def test_two_gateways_sharing_one_cap_admit_no_more_than_it_covers(
    gateway: Gateway, mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """Two processes, one cap worth 5.5 estimated requests, 25 requests at once on
    each: at most 5 admitted in all."""
    second = Gateway({**upstream_env(mock), **db_env, **FAST}, workdir)
    try:
        tenant = make_tenant(db_env, "caps-two")
        each = estimated_usd(body("burst 10"))
        cap = usd6(each * Decimal("5.5"))
        set_cap(db_env, [gateway, second], "set", "--workspace", tenant.workspace, "--usd", cap)
        statuses = asyncio.run(burst([gateway.url, second.url], tenant, 50, 300))
        admitted = statuses.count(200)
        assert set(statuses) <= {200, 402}
        assert 1 <= admitted <= 5, statuses
        print(f"two gateways: admitted {admitted} of 50")
    finally:
        second.stop()


def test_spend_is_settled_with_the_real_usage_and_shown(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A request reserves its estimate and settles at its real cost (12 input and 16
    output tokens at gpt-4o's list price): `cap show` has that as spent."""
    tenant = make_tenant(db_env, "caps-settle")
    set_cap(db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", "5")
    response = post(gateway, tenant, body("settle"))
    assert response.status_code == 200
    real = Decimal(12) * Decimal("2.50") / 10**6 + Decimal(16) * Decimal("10.00") / 10**6
    shown = wait_until(
        lambda: (s := show(db_env, tenant))["caps"][0]["spent"] != "0" and s, 10, "spent folded"
    )
    cap = shown["caps"][0]
    assert Decimal(cap["spent"]) == real
    assert Decimal(cap["left"]) <= Decimal(5) - real


def test_member_and_admin_keys_are_capped_but_test_keys_never(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A cap of 0: a live key (member or admin) is refused with 402 budget_exceeded in
    OpenAI's shape; a test key of the same workspace is served; GET /v1/models (free)
    is served to the live key."""
    tenant = make_tenant(db_env, "caps-zero")
    set_cap(db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", "0")
    refused = post(gateway, tenant, body("zero"))
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_exceeded"
    admin = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    admin_tenant = Tenant(tenant.workspace, admin["key"], admin["key_id"])
    assert post(gateway, admin_tenant, body("zero admin")).status_code == 402
    test_key = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--env", "test", env=db_env
    )
    assert (
        post(gateway, Tenant(tenant.workspace, test_key["key"], ""), body("t")).status_code == 200
    )
    models = httpx.get(f"{gateway.url}/v1/models", headers=tenant.bearer, timeout=10)
    assert models.status_code != 402


def test_scopes_project_team_and_key(gateway: Gateway, db_env: dict[str, str]) -> None:
    """A cap on a project refuses that project's key and not another's; a key's cap
    refuses that key only."""
    tenant = make_tenant(db_env, "caps-scopes", project="alpha")
    other = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--project", "beta", env=db_env
    )
    other_tenant = Tenant(tenant.workspace, other["key"], other["key_id"])
    set_cap(
        db_env,
        [gateway],
        "set",
        "--workspace",
        tenant.workspace,
        "--project",
        "alpha",
        "--usd",
        "0",
    )
    assert post(gateway, tenant, body("p1")).status_code == 402
    assert post(gateway, other_tenant, body("p2")).status_code == 200
    set_cap(
        db_env,
        [gateway],
        "set",
        "--workspace",
        tenant.workspace,
        "--key",
        other["key_id"],
        "--usd",
        "0",
    )
    assert post(gateway, other_tenant, body("p3")).status_code == 402
    set_cap(db_env, [gateway], "disable", "--workspace", tenant.workspace, "--key", other["key_id"])
    assert post(gateway, other_tenant, body("p4")).status_code == 200


def test_an_unpriced_model_and_an_unmeterable_path(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """Under a cap, a model with no price is refused with 402 budget_unverifiable naming
    it, until the workspace has a fallback price; a POST to a path the gateway cannot
    meter is refused naming the path, until unmetered paths are allowed."""
    tenant = make_tenant(db_env, "caps-unpriced")
    set_cap(db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", "10")
    raw = orjson.dumps({"model": "mystery-model-7", "messages": [{"role": "user", "content": "x"}]})
    refused = post(gateway, tenant, raw)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "budget_unverifiable"
    assert "mystery-model-7" in refused.json()["error"]["message"]
    batch = httpx.post(
        f"{gateway.url}/v1/batches", json={"input_file_id": "f"}, headers=tenant.bearer, timeout=10
    )
    assert batch.status_code == 402
    assert batch.json()["error"]["code"] == "budget_unverifiable"
    assert "/v1/batches" in batch.json()["error"]["message"]

    set_cap(
        db_env, [gateway], "options", "--workspace", tenant.workspace,
        "--fallback-price", "1,2", "--unmetered-reserve", "0.01",
    )  # fmt: skip
    assert post(gateway, tenant, raw).status_code == 200
    batch = httpx.post(
        f"{gateway.url}/v1/batches", json={"input_file_id": "f"}, headers=tenant.bearer, timeout=10
    )
    assert batch.status_code != 402


def test_a_client_that_leaves_mid_stream_releases_the_unused_reservation(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A stream reserved for 4000 output tokens is abandoned after its first chunks:
    it settles at the input estimate plus the output counted so far, far below the
    reservation, and nothing stays reserved."""
    tenant = make_tenant(db_env, "caps-abort")
    set_cap(db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", "5")
    raw = body("abort", max_tokens=4000, stream=True)
    reserved = estimated_usd(raw, 4000)
    with httpx.stream(
        "POST",
        f"{gateway.url}/v1/chat/completions",
        content=raw,
        headers={
            **tenant.bearer,
            "content-type": "application/json",
            "x-mock-chunks": "200",
            "x-mock-chunk-delay-ms": "20",
        },
        timeout=30,
    ) as response:
        for index, _ in enumerate(response.iter_raw()):
            if index >= 2:
                break

    def settled() -> dict[str, Any] | None:
        cap = show(db_env, tenant)["caps"][0]
        return cap if Decimal(cap["spent"]) > 0 and cap["in_flight"] == "0" else None

    cap = wait_until(settled, 15, "the aborted stream settled")
    assert Decimal(cap["spent"]) < reserved / 10, (cap, reserved)


def test_overrun_cut_ends_the_stream_and_finish_lets_it_complete(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A stream that sets no max_tokens is reserved for the default output (2 tokens
    here) and produces 16, under a cap with room for its reservation only: `cut`
    ends it with the provider-shaped error event `budget_exceeded`; `finish` lets it
    complete and counts the overrun."""
    for action in ("cut", "finish"):
        tenant = make_tenant(db_env, f"caps-overrun-{action}")
        raw = body(f"overrun {action}", max_tokens=None, stream=True)
        cap = usd6(estimated_usd(raw, 2), ROUND_CEILING)
        set_cap(
            db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", cap,
            "--on-overrun", action,
        )  # fmt: skip
        response = post(gateway, tenant, raw, **{"x-mock-chunks": "16"})
        assert response.status_code == 200
        text = response.text
        if action == "cut":
            assert '"code":"budget_exceeded"' in text
            assert "data: [DONE]" not in text
        else:
            assert "data: [DONE]" in text
    metrics = gateway.metrics()
    for action in ("cut", "finish"):
        prefix = f'recovea_cap_overruns_total{{action="{action}"}} '
        counted = [line for line in metrics.splitlines() if line.startswith(prefix)]
        assert counted and float(counted[0].split()[-1]) >= 1, action
    assert any(line.get("event") == "cap_overrun" for line in gateway.log_lines())


def fullest(gateway: Gateway) -> float:
    """`recovea_cap_fullest_ratio` from the gateway's /metrics."""
    prefix = "recovea_cap_fullest_ratio "
    found = [line for line in gateway.metrics().splitlines() if line.startswith(prefix)]
    assert len(found) == 1, found
    return float(found[0].removeprefix(prefix))


def test_the_fullest_cap_gauge_follows_the_spend_and_forgets_a_disabled_cap(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """A gateway of its own (so only this cap is synced): the gauge is 0 with no cap;
    8 requests of 0.00019 USD under a 0.0019 USD cap read 0.8 once the lease is idle
    and given back (spent + leased over usd, as `cap show` has it); a disabled cap is
    0 again."""
    gw = Gateway({**upstream_env(mock), **db_env, **FAST}, workdir)
    try:
        assert fullest(gw) == 0.0
        tenant = make_tenant(db_env, "caps-fullest")
        set_cap(db_env, [gw], "set", "--workspace", tenant.workspace, "--usd", "0.0019")
        for i in range(8):
            assert post(gw, tenant, body(f"fill {i}", max_tokens=16)).status_code == 200
        cap = wait_until(
            lambda: (c := show(db_env, tenant)["caps"][0])["reserved"] == "0" and c,
            10,
            "the lease given back",
        )
        expected = float(Decimal(cap["spent"]) / Decimal(cap["usd"]))
        assert 0.75 <= expected < 0.9, cap
        wait_until(lambda: abs(fullest(gw) - expected) < 1e-9, 10, f"the gauge at {expected}")
        set_cap(db_env, [gw], "disable", "--workspace", tenant.workspace)
        wait_until(lambda: fullest(gw) == 0.0, 10, "the gauge back at 0")
    finally:
        gw.stop()


def test_cap_commands_and_admin_api_validate_and_agree(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """The CLI refuses bad input with exit 1 and a clear line; the admin API sets,
    shows and disables caps for admin keys (400 on bad input, 403 for members)."""
    tenant = make_tenant(db_env, "caps-admin")
    bad = cli("cap", "set", "--workspace", tenant.workspace, "--usd", "-1", env=db_env)
    assert bad.returncode == 1 and "usd must be from 0" in bad.stderr
    bad = cli("cap", "set", "--workspace", tenant.workspace, "--usd", "abc", env=db_env)
    assert bad.returncode == 1 and "dollar amount" in bad.stderr
    bad = cli("cap", "disable", "--workspace", tenant.workspace, "--team", "nobody", env=db_env)
    assert bad.returncode == 1 and "no team" in bad.stderr

    admin = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    headers = {"authorization": f"Bearer {admin['key']}"}
    url = f"{gateway.url}/admin/v1/caps"
    member = httpx.get(url, headers=tenant.bearer, timeout=10)
    assert member.status_code == 403
    assert httpx.put(url, json={"usd": "x"}, headers=headers, timeout=10).status_code == 400
    wrong = httpx.put(url, json={"usd": 1, "period": "week"}, headers=headers, timeout=10)
    assert wrong.status_code == 400 and "period" in wrong.json()["error"]["message"]
    both = httpx.put(url, json={"usd": 1, "team": "a", "project": "b"}, headers=headers, timeout=10)
    assert both.status_code == 400
    made = httpx.put(
        url, json={"usd": "12.5", "team": "ops", "period": "day"}, headers=headers, timeout=10
    )
    assert made.status_code == 200, made.text
    assert made.json()["usd"] == "12.500000" and made.json()["name"] == "ops"
    listed = httpx.get(url, headers=headers, timeout=10).json()
    assert [(c["scope"], c["name"], c["left"]) for c in listed["caps"]] == [("team", "ops", "12.5")]
    gone = httpx.post(f"{url}/disable", json={"team": "ops"}, headers=headers, timeout=10)
    assert gone.status_code == 200 and gone.json()["enabled"] is False
    shown = show(db_env, tenant)
    assert shown["caps"][0]["enabled"] is False


async def test_a_websocket_session_is_refused_or_charged_at_the_handshake(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """Under a cap, a Realtime handshake is refused with 402 budget_unverifiable (its
    cost cannot be bounded up front); with unmetered paths allowed it is accepted and
    charged the reserve."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    tenant = make_tenant(db_env, "caps-ws")
    await asyncio.to_thread(
        set_cap, db_env, [gateway], "set", "--workspace", tenant.workspace, "--usd", "1"
    )
    url = gateway.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-4o-realtime-preview"
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, additional_headers=tenant.bearer)
    assert refused.value.response.status_code == 402
    error = orjson.loads(refused.value.response.body)["error"]
    assert error["code"] == "budget_unverifiable" and "/v1/realtime" in error["message"]

    await asyncio.to_thread(
        set_cap, db_env, [gateway], "options", "--workspace", tenant.workspace,
        "--unmetered-reserve", "0.25",
    )  # fmt: skip
    async with connect(url, additional_headers=tenant.bearer):
        pass
    shown = await asyncio.to_thread(show, db_env, tenant)
    assert Decimal(shown["caps"][0]["spent"]) + Decimal(shown["caps"][0]["reserved"]) >= Decimal(
        "0.25"
    )
