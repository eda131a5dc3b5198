"""Reconciliation against the mock's admin usage reports: a workspace sets report keys,
sends traffic through the gateway, runs `recovea reconcile`, and reads — per day,
provider and model — what the provider reported against what the ledger holds; a
day polled again, a broken key, retries, and the gateway's own polling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.reconcile.support import (
    ANTHROPIC_REPORT_KEY,
    NOT_AN_ADMIN_KEY,
    OPENAI_REPORT_KEY,
    TODAY,
    provider_usage,
    reconcile,
    rows_list,
    rows_of,
    rows_of_polls,
    set_report_key,
    switch,
)
from tests.support import Gateway, MockServer, cli, metric_value, wait_until


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
