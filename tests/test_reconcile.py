"""Reconciliation against the mock's admin usage reports: a workspace sets report keys,
sends traffic through the gateway, runs `recovea reconcile`, and reads — per day,
provider and model — what the provider reported against what the ledger holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.support import Gateway, MockServer, cli, cli_json, metric_value, wait_until

OPENAI_REPORT_KEY = "sk-admin-Rp7Qw2Lx9Vb4Nc8Mz1Kd5Hs3Tf6Gy0Ju"
ANTHROPIC_REPORT_KEY = "sk-ant-admin01-Wq4Er7Ty1Ui9Op3As6Df2Gh8Jk5Lz0Xc"
NOT_AN_ADMIN_KEY = "sk-proj-NotAnAdminKey7Hd2Ks9Lq4Wz1Xc"
TODAY = datetime.now(UTC).date().isoformat()


@pytest.fixture(scope="module")
def report_mock() -> Iterator[MockServer]:
    """A mock of this module's own: its reports are made of what it served."""
    server = MockServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def env(report_mock: MockServer, db_env: dict[str, str]) -> dict[str, str]:
    return {
        **upstream_env(report_mock),
        **db_env,
        "RECOVEA_RECONCILE_RETRY_BASE_S": "0.05",
        "RECOVEA_RECONCILE_ATTEMPTS": "3",
    }


@pytest.fixture(scope="module")
def gateway(env: dict[str, str], workdir: Path) -> Iterator[Gateway]:
    gw = Gateway({**env, "RECOVEA_RECONCILE_INTERVAL_S": "0"}, workdir)
    yield gw
    gw.stop()


@pytest.fixture
def mock_reports(report_mock: MockServer) -> Iterator[MockServer]:
    """The mock's report book emptied and its switches off, before and after."""
    httpx.delete(f"{report_mock.url}/_mock/usage-reports")
    yield report_mock
    httpx.delete(f"{report_mock.url}/_mock/usage-reports")


def switch(mock: MockServer, **switches: Any) -> None:
    response = httpx.put(f"{mock.url}/_mock/usage-reports", content=orjson.dumps(switches))
    assert response.status_code == 200


def set_report_key(env: dict[str, str], tenant: Tenant, provider: str, key: str) -> Any:
    return cli_json(
        "report-key",
        "set",
        "--workspace",
        tenant.workspace,
        "--provider",
        provider,
        env=env,
        stdin=key + "\n",
    )


def send_traffic(gateway: Gateway, tenant: Tenant, env: dict[str, str]) -> int:
    """Three OpenAI and two Anthropic requests (with cache reads and writes); waits for
    their rows. How many requests were sent."""
    sent = 0
    for cached in ("0", "4", "8"):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cached}]},
            headers={**tenant.bearer, "x-mock-cached-tokens": cached},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        sent += 1
    for write in ("0", "10"):
        response = httpx.post(
            f"{gateway.url}/v1/messages",
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": write}],
            },
            headers={
                **tenant.bearer,
                "anthropic-version": "2023-06-01",
                "x-mock-input-tokens": "40",
                "x-mock-cached-tokens": "20",
                "x-mock-cache-write-5m-tokens": write,
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        sent += 1
    wait_until(
        lambda: (
            owner_query(
                env["RECOVEA_DATABASE_URL"],
                "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id = $1::uuid",
                tenant.workspace,
            )[0]["n"]
            == sent
        ),
        15,
        "the rows to be written",
    )
    return sent


def reconcile(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    done = cli("reconcile", *args, "--json", env=env)
    return done.returncode, orjson.loads(done.stdout), done.stderr


def rows_of(result: dict[str, Any], workspace: str) -> dict[tuple[str, str], dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    return {(row["provider"], row["model"]): row for row in found["data"]}


def rows_list(result: dict[str, Any], workspace: str) -> list[dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    data: list[dict[str, Any]] = found["data"]
    return data


def provider_usage(env: dict[str, str], workspace: str) -> list[tuple[Any, ...]]:
    records = owner_query(
        env["RECOVEA_DATABASE_URL"],
        "SELECT provider, day, model, api_key_id, project_id, requests, input_tokens,"
        " cached_tokens, output_tokens, cost_usd FROM recovea.provider_usage"
        " WHERE customer_id = $1::uuid ORDER BY 1, 2, 3, 4, 5",
        workspace,
    )
    return [tuple(r) for r in records]


@pytest.fixture
def tenant(env: dict[str, str], gateway: Gateway, mock_reports: MockServer) -> Tenant:
    """A workspace with both report keys and five requests through the gateway."""
    tenant = make_tenant(env, f"reconcile-{time.monotonic_ns()}")
    set_report_key(env, tenant, "openai", OPENAI_REPORT_KEY)
    set_report_key(env, tenant, "anthropic", ANTHROPIC_REPORT_KEY)
    send_traffic(gateway, tenant, env)
    return tenant


def test_traffic_through_the_gateway_matches_the_providers_reports(
    env: dict[str, str], gateway: Gateway, tenant: Tenant
) -> None:
    """Every request went through the gateway: both providers' figures match the
    ledger's — tokens counted alike (cache reads and writes in the input), requests
    (OpenAI), and cost against the rollup — and the API says the same as the CLI."""
    code, result, stderr = reconcile(env, "--workspace", tenant.workspace)
    assert code == 0, stderr
    assert {(p["provider"], p["outcome"]) for p in result["polled"]} >= {
        ("openai", "ok"),
        ("anthropic", "ok"),
    }
    rows = rows_of(result, tenant.workspace)
    openai_row = rows[("openai", "gpt-4o-mini")]
    anthropic_row = rows[("anthropic", "claude-haiku-4-5")]
    assert openai_row["verdict"] == "match", openai_row
    assert anthropic_row["verdict"] == "match", anthropic_row
    assert openai_row["provider_reported"]["requests"] == openai_row["ledger"]["requests"] == 3
    assert openai_row["provider_reported"]["cached_tokens"] == 12
    assert anthropic_row["provider_reported"]["requests"] is None  # not in Anthropic's report
    assert anthropic_row["ledger"]["requests"] == 2
    assert (
        anthropic_row["provider_reported"]["input_tokens"]
        == 80
        == anthropic_row["ledger"]["input_tokens"]
    )
    assert anthropic_row["provider_reported"]["cost_usd"] == anthropic_row["ledger"]["cost_usd"]
    assert openai_row["difference"]["output_tokens"] == 0

    response = httpx.get(
        f"{gateway.url}/v1/recovea/reconciliation", headers=tenant.bearer, timeout=10
    )
    assert response.status_code == 200, response.text
    served = response.json()
    assert served["data"] == rows_list(result, tenant.workspace)
    assert {p["outcome"] for p in served["polls"]} == {"ok"}

    text = cli("reconcile", "--workspace", tenant.workspace, env=env)
    assert text.returncode == 0, text.stderr
    assert "gpt-4o-mini" in text.stdout and "match" in text.stdout


@pytest.mark.parametrize(
    ("provider", "model", "switches", "expected"),
    [
        (
            "openai",
            "gpt-4o-mini",
            {
                "extra": [
                    {
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "requests": 4,
                        "input_tokens": 48,
                        "output_tokens": 64,
                    }
                ]
            },
            "unmetered traffic",
        ),
        (
            "anthropic",
            "claude-haiku-4-5",
            {
                "extra": [
                    {
                        "provider": "anthropic",
                        "model": "claude-haiku-4-5",
                        "requests": 1,
                        "input_tokens": 40,
                        "output_tokens": 16,
                    }
                ]
            },
            "unmetered traffic",
        ),
        (
            "openai",
            "gpt-4.1-nano",
            {
                "extra": [
                    {
                        "provider": "openai",
                        "model": "gpt-4.1-nano",
                        "requests": 1,
                        "input_tokens": 10,
                        "output_tokens": 10,
                    }
                ]
            },
            "unmetered traffic",
        ),
        ("openai", "gpt-4o-mini", {"skew": {"openai": {"output_tokens": 5}}}, "token mismatch"),
        (
            "anthropic",
            "claude-haiku-4-5",
            {"skew": {"anthropic": {"cached_tokens": -3}}},
            "token mismatch",
        ),
        ("openai", "gpt-4o-mini", {"price_factor": {"openai": 1.5}}, "price drift"),
        ("anthropic", "claude-haiku-4-5", {"price_factor": {"anthropic": 0.5}}, "price drift"),
    ],
)
def test_each_verdict(
    env: dict[str, str],
    tenant: Tenant,
    mock_reports: MockServer,
    provider: str,
    model: str,
    switches: dict[str, Any],
    expected: str,
) -> None:
    """A bypass shows as unmetered traffic, a count the provider disagrees with as a
    token mismatch, a price the provider changed as price drift; the other provider
    still matches."""
    switch(mock_reports, **switches)
    code, result, stderr = reconcile(env, "--workspace", tenant.workspace)
    assert code == 0, stderr
    rows = rows_of(result, tenant.workspace)
    assert rows[(provider, model)]["verdict"] == expected, rows[(provider, model)]
    other = ("anthropic", "claude-haiku-4-5") if provider == "openai" else ("openai", "gpt-4o-mini")
    assert rows[other]["verdict"] == "match"


def test_polling_a_day_again_replaces_it(
    env: dict[str, str], tenant: Tenant, mock_reports: MockServer
) -> None:
    """Idempotent: running twice stores the same table; a bypass reported later replaces
    the day's figures instead of adding to them; removing it restores them."""
    assert reconcile(env, "--workspace", tenant.workspace)[0] == 0
    first = provider_usage(env, tenant.workspace)
    assert first
    assert reconcile(env, "--workspace", tenant.workspace, "--since", TODAY)[0] == 0
    assert provider_usage(env, tenant.workspace) == first
    switch(
        mock_reports,
        extra=[{"provider": "openai", "model": "gpt-4o-mini", "requests": 2, "input_tokens": 1}],
    )
    assert reconcile(env, "--workspace", tenant.workspace)[0] == 0
    bypassed = provider_usage(env, tenant.workspace)
    assert len(bypassed) == len(first) and bypassed != first
    switch(mock_reports)
    assert reconcile(env, "--workspace", tenant.workspace)[0] == 0
    assert provider_usage(env, tenant.workspace) == first
    days = owner_query(
        env["RECOVEA_DATABASE_URL"],
        "SELECT count(*) AS n FROM recovea.reconcile_days WHERE customer_id = $1::uuid",
        tenant.workspace,
    )[0]["n"]
    assert days == 2 * 7  # one status per provider and day of the window, never more


def test_one_broken_report_key_holds_back_no_other_workspace(
    env: dict[str, str], tenant: Tenant
) -> None:
    """A workspace whose report key is not an admin key fails on its own (unauthorized,
    not retried, recorded with its reason); another workspace's figures land in the
    same run; the command says so and exits 1."""
    broken = make_tenant(env, f"reconcile-broken-{time.monotonic_ns()}")
    set_report_key(env, broken, "openai", NOT_AN_ADMIN_KEY)
    code, result, stderr = reconcile(env)
    assert code == 1 and "could not be polled (unauthorized)" in stderr
    mine = [p for p in result["polled"] if p["workspace_id"] == broken.workspace]
    assert mine and {(p["outcome"], p["reason"], p["attempts"]) for p in mine} == {
        ("failed", "unauthorized", 1)
    }
    theirs = [p for p in result["polled"] if p["workspace_id"] == tenant.workspace]
    assert {p["outcome"] for p in theirs} == {"ok"}
    assert provider_usage(env, tenant.workspace)
    assert provider_usage(env, broken.workspace) == []
    polls = rows_of_polls(result, broken.workspace)
    assert {p["reason"] for p in polls} == {"unauthorized"}
    assert NOT_AN_ADMIN_KEY not in stderr + orjson.dumps(result).decode()


def rows_of_polls(result: dict[str, Any], workspace: str) -> list[dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    polls: list[dict[str, Any]] = found["polls"]
    return polls


def test_a_429_is_waited_out_and_5xx_and_malformed_pages_are_set_aside(
    env: dict[str, str], tenant: Tenant, mock_reports: MockServer
) -> None:
    """The provider's retry-after is honoured and the day then lands; a provider that
    keeps failing, or answers a page that is not JSON, is retried up to the bound and
    set aside with its reason, while the other provider's days land."""
    switch(mock_reports, fail={"openai": {"status": 429, "times": 1, "retry_after": "1"}})
    started = time.monotonic()
    code, result, stderr = reconcile(env, "--workspace", tenant.workspace, "--since", TODAY)
    assert code == 0, stderr
    assert time.monotonic() - started >= 1.0
    openai_polls = [p for p in result["polled"] if p["provider"] == "openai"]
    assert [(p["outcome"], p["attempts"]) for p in openai_polls] == [("ok", 2)]

    for switches, reason in (
        ({"fail": {"openai": {"status": 500, "times": 10}}}, "status_5xx"),
        ({"malformed": {"openai": 10}}, "malformed"),
    ):
        switch(mock_reports, **switches)
        code, result, _ = reconcile(env, "--workspace", tenant.workspace, "--since", TODAY)
        assert code == 1
        outcomes = {
            (p["provider"], p["outcome"], p["reason"], p["attempts"]) for p in result["polled"]
        }
        assert outcomes == {("openai", "failed", reason, 3), ("anthropic", "ok", None, 1)}
        # the day's earlier figures stay, the row says why it was not polled
        rows = rows_of(result, tenant.workspace)
        assert rows[("openai", "gpt-4o-mini")]["provider_reported"]["requests"] == 3


def test_the_gateway_polls_on_its_own_and_counts_outcomes(
    env: dict[str, str], workdir: Path, tenant: Tenant, mock_reports: MockServer
) -> None:
    """With RECOVEA_RECONCILE_INTERVAL_S set, the gateway runs the poller itself (one
    replica at a time) and counts each day's outcome in reconcile_runs_total."""
    switch(mock_reports, fail={"anthropic": {"status": 500, "times": 1000}})
    gw = Gateway({**env, "RECOVEA_RECONCILE_INTERVAL_S": "0.5"}, workdir)
    try:
        wait_until(
            lambda: (
                metric_value(
                    gw.metrics(), "recovea_maintenance_runs_total", job="reconcile", outcome="ok"
                )
                > 0
            ),
            60,
            "a round of the poller",
        )
        text = gw.metrics()
        assert metric_value(text, "reconcile_runs_total", outcome="failed") >= 7  # Anthropic
        assert metric_value(text, "reconcile_runs_total", outcome="retried") >= 14
        assert metric_value(text, "reconcile_runs_total", outcome="ok") >= 1  # OpenAI
        assert ANTHROPIC_REPORT_KEY not in gw.log_text()
        assert OPENAI_REPORT_KEY not in gw.log_text()
        assert any(
            line.get("event") == "reconcile_day_failed" and line.get("reason") == "status_5xx"
            for line in gw.log_lines()
        )
    finally:
        gw.stop()


def test_report_keys_are_shown_by_their_last_four_only(
    env: dict[str, str], gateway: Gateway, tenant: Tenant
) -> None:
    """Stored sealed (not in the clear), listed with the last four characters by the CLI
    and the admin API, set and removed over /admin/v1 by admin keys only; the usage API
    answers any key of the workspace."""
    stored = owner_query(
        env["RECOVEA_DATABASE_URL"],
        "SELECT provider, ciphertext, last_four FROM recovea.report_keys"
        " WHERE customer_id = $1::uuid ORDER BY provider",
        tenant.workspace,
    )
    assert [(r["provider"], r["last_four"]) for r in stored] == [
        ("anthropic", ANTHROPIC_REPORT_KEY[-4:]),
        ("openai", OPENAI_REPORT_KEY[-4:]),
    ]
    assert all(OPENAI_REPORT_KEY.encode() not in r["ciphertext"] for r in stored)
    listed = cli_json("report-key", "list", "--workspace", tenant.workspace, env=env)
    assert [k["last_four"] for k in listed["data"]] == [
        ANTHROPIC_REPORT_KEY[-4:],
        OPENAI_REPORT_KEY[-4:],
    ]

    admin = cli_json("key", "create", "--workspace", tenant.workspace, "--role", "admin", env=env)
    bearer = {"authorization": f"Bearer {admin['key']}"}
    url = f"{gateway.url}/admin/v1/report-keys"
    got = httpx.get(url, headers=bearer)
    assert got.status_code == 200
    assert OPENAI_REPORT_KEY not in got.text and ANTHROPIC_REPORT_KEY not in got.text
    assert {k["last_four"] for k in got.json()["data"]} == {
        OPENAI_REPORT_KEY[-4:],
        ANTHROPIC_REPORT_KEY[-4:],
    }
    assert httpx.get(url, headers=tenant.bearer).status_code == 403  # a member key
    new_key = "sk-admin-Replaced0000000000000000zz9Q"
    put = httpx.put(f"{url}/openai", json={"key": new_key}, headers=bearer)
    assert put.status_code == 200 and put.json() == {"provider": "openai", "last_four": "zz9Q"}
    assert new_key not in put.text
    assert (
        httpx.put(f"{url}/openai", json={"key": new_key}, headers=tenant.bearer).status_code == 403
    )
    assert httpx.delete(f"{url}/anthropic", headers=bearer).json() == {
        "provider": "anthropic",
        "deleted": True,
    }
    assert httpx.delete(f"{url}/anthropic", headers=bearer).status_code == 404
    code, result, _ = reconcile(env, "--workspace", tenant.workspace)
    assert code == 0
    assert {p["provider"] for p in result["polled"]} == {"openai"}
    assert OPENAI_REPORT_KEY not in orjson.dumps(result).decode()
    reconciliation = httpx.get(f"{gateway.url}/v1/recovea/reconciliation", headers=tenant.bearer)
    assert reconciliation.status_code == 200
    for key in (OPENAI_REPORT_KEY, ANTHROPIC_REPORT_KEY, new_key):
        assert key not in reconciliation.text
        assert key not in gateway.log_text()


def test_the_api_and_the_cli_refuse_bad_input(
    env: dict[str, str], gateway: Gateway, tenant: Tenant
) -> None:
    """OpenRouter has no usage report to reconcile with; keys, providers, workspaces and
    dates are checked before anything is written or polled."""
    refused = cli(
        "report-key",
        "set",
        "--workspace",
        tenant.workspace,
        "--provider",
        "openrouter",
        env=env,
        stdin="sk-or-v1-Some0penRouterKey1234\n",
    )
    assert refused.returncode == 1 and "openrouter has no usage report" in refused.stderr
    short = cli(
        "report-key",
        "set",
        "--workspace",
        tenant.workspace,
        "--provider",
        "openai",
        env=env,
        stdin="sk-Zq7\n",  # under 8 characters (and nowhere else in any output)
    )
    assert short.returncode == 1 and "report key must be 8 to 512" in short.stderr
    bad_id = cli("reconcile", "--workspace", "nope", env=env)
    assert bad_id.returncode == 1 and "workspace id must be a UUID" in bad_id.stderr
    for since in (
        "yesterday",
        (datetime.now(UTC) + timedelta(days=3)).date().isoformat(),
        (datetime.now(UTC) - timedelta(days=400)).date().isoformat(),
    ):
        done = cli("reconcile", "--workspace", tenant.workspace, "--since", since, env=env)
        assert done.returncode == 1 and "--since" in done.stderr

    admin = cli_json("key", "create", "--workspace", tenant.workspace, "--role", "admin", env=env)
    bearer = {"authorization": f"Bearer {admin['key']}"}
    url = f"{gateway.url}/admin/v1/report-keys"
    assert (
        httpx.put(f"{url}/openrouter", json={"key": "sk-or-v1-x" * 2}, headers=bearer).status_code
        == 400
    )
    assert httpx.put(f"{url}/mistral", json={"key": "k" * 20}, headers=bearer).status_code == 404
    assert httpx.put(f"{url}/openai", json={"secret": "k" * 20}, headers=bearer).status_code == 400
    assert httpx.put(f"{url}/openai", json={"key": 12345678}, headers=bearer).status_code == 400
    api = f"{gateway.url}/v1/recovea/reconciliation"
    assert httpx.get(api).status_code == 401
    assert httpx.get(f"{api}?from=soon", headers=tenant.bearer).status_code == 400
    assert httpx.get(f"{api}?from={TODAY}&to={TODAY}", headers=tenant.bearer).status_code == 400
    assert (
        httpx.get(f"{api}?from=2020-01-01&to=2024-01-01", headers=tenant.bearer).status_code == 400
    )
    ok = httpx.get(f"{api}?from={TODAY}", headers=tenant.bearer)
    assert ok.status_code == 200 and ok.json()["from"] == TODAY


def test_the_quickstart_flow_against_the_mock(
    env: dict[str, str], gateway: Gateway, mock_reports: MockServer
) -> None:
    """docs/quickstart.md's reconciliation step: a report key on stdin, a request with
    the rcv_ key, `recovea reconcile` prints a match; a bypass the mock is told of turns
    it into unmetered traffic, over the API too; the key shows nowhere."""
    tenant = make_tenant(env, f"reconcile-quickstart-{time.monotonic_ns()}")
    report_key = "sk-admin-mock-report-key-0001"
    stored = cli(
        "report-key",
        "set",
        "--workspace",
        tenant.workspace,
        "--provider",
        "openai",
        env=env,
        stdin=report_key + "\n",
    )
    assert stored.returncode == 0 and "****0001" in stored.stdout
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello again"}]},
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    wait_until(
        lambda: (
            owner_query(
                env["RECOVEA_DATABASE_URL"],
                "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id = $1::uuid",
                tenant.workspace,
            )[0]["n"]
            == 1
        ),
        15,
        "the row",
    )
    done = cli("reconcile", "--workspace", tenant.workspace, env=env)
    assert done.returncode == 0, done.stderr
    (line,) = [text for text in done.stdout.splitlines() if "gpt-4o-mini" in text]
    assert " match " in line and "requests 1/1" in line
    switch(
        mock_reports,
        extra=[
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "requests": 5,
                "input_tokens": 60,
                "output_tokens": 80,
            }
        ],
    )
    done = cli("reconcile", "--workspace", tenant.workspace, env=env)
    assert done.returncode == 0 and "unmetered traffic" in done.stdout
    api = httpx.get(f"{gateway.url}/v1/recovea/reconciliation", headers=tenant.bearer)
    (row,) = api.json()["data"]
    assert row["verdict"] == "unmetered traffic" and row["difference"]["requests"] == 5
    for text in (stored.stdout + stored.stderr, done.stdout + done.stderr, api.text):
        assert report_key not in text
