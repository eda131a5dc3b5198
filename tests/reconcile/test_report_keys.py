"""Report keys as the API and the CLI keep them (shown by their last four only), the
bad input both refuse, and the quickstart flow against the mock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson

from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.reconcile.support import (
    ANTHROPIC_REPORT_KEY,
    OPENAI_REPORT_KEY,
    TODAY,
    reconcile,
    switch,
)
from tests.support import Gateway, MockServer, cli, cli_json, wait_until


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
