"""Shadow evaluation against the mock: a routing rule with a shadow rate has a share of
its answers compared with the caller's own model off the hot path; the counts feed a
sequential non-inferiority test whose `inferior` verdict disables the rule. The
caller's responses never change, bodies are never written anywhere, and the capture,
the queue and the spend are bounded.

One gateway serves the module (minimum sample 10, a 64 KiB capture bound); each test
has its own workspace and rule, every rule at rate 1.0 so every request is sampled.
The mock answers `mock reply: <prompt>`; a model named in `x-mock-disagree-model`
answers `mock dissent: <prompt reversed>`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import (
    Gateway,
    MockServer,
    Postgres,
    cli,
    cli_json,
    metric_value,
    wait_until,
    without_receipt,
)

MARKER = "quokka-shadow-marker-5521"
SAMPLES = "recovea_shadow_samples_total"


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    env = {
        **upstream_env(mock),
        **db_env,
        "RECOVEA_SHADOW_MIN_SAMPLE": "10",
        "RECOVEA_SHADOW_CAPTURE_MAX_KB": "64",
        "RECOVEA_SHADOW_QUEUE_MAX": "512",
    }
    gw = Gateway(env, workdir)
    yield gw
    gw.stop()


#: an admin key of each workspace (the admin API needs one)
ADMIN_KEYS: dict[str, str] = {}


def tenant_with_rule(env: dict[str, str], name: str, *args: str) -> tuple[Tenant, str]:
    tenant = make_tenant(env, name)
    created = cli_json("key", "create", "--workspace", tenant.workspace, "--role", "admin", env=env)
    ADMIN_KEYS[tenant.workspace] = created["key"]
    done = cli("route", "add", "--workspace", tenant.workspace, *args, env=env)
    assert done.returncode == 0, done.stderr
    return tenant, done.stdout.strip()


def routes(gateway: Gateway, tenant: Tenant) -> dict[str, Any]:
    admin = {"authorization": f"Bearer {ADMIN_KEYS[tenant.workspace]}"}
    response = httpx.get(f"{gateway.url}/admin/v1/routes", headers=admin)
    assert response.status_code == 200, response.text
    listed: dict[str, Any] = response.json()
    return listed


def rule_of(gateway: Gateway, tenant: Tenant, rule_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in routes(gateway, tenant)["data"] if r["id"] == rule_id)
    return found


def chat(
    gateway: Gateway, tenant: Tenant, model: str, prompt: str, **headers: str
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}]},
        headers={**tenant.bearer, **headers},
        timeout=30,
    )


def messages(
    gateway: Gateway, tenant: Tenant, model: str, prompt: str, *, stream: bool, **headers: str
) -> httpx.Response:
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        body["stream"] = True
    return httpx.post(
        f"{gateway.url}/v1/messages",
        json=body,
        headers={**tenant.bearer, "anthropic-version": "2023-06-01", **headers},
        timeout=30,
    )


def samples(gateway: Gateway, outcome: str) -> float:
    return metric_value(gateway.metrics(), SAMPLES, outcome=outcome)


def test_a_cheap_model_that_agrees_is_non_inferior(
    gateway: Gateway, db_env: dict[str, str], mock: MockServer, postgres: Postgres
) -> None:
    """gpt-4o served on gpt-4o-mini, every request shadowed on gpt-4o: the mock answers
    both alike, so the test finds gpt-4o-mini non-inferior — after 114 agreements with
    the default margin — and says so in the admin API with its sample size; the rule
    stays on and the pair is not shadowed any more. The shadow calls cost the
    workspace's shadow spend. No body, nor the marker the replies carry, is in the
    log, the database or any file of the gateway."""
    tenant, rule_id = tenant_with_rule(
        db_env, "shadow-agree", "--match-model", "gpt-4o", "--to", "gpt-4o-mini",
        "--shadow", "1",
    )  # fmt: skip
    mock.clear()
    for i in range(400):
        response = chat(gateway, tenant, "gpt-4o", f"{MARKER} question {i % 7}")
        assert response.status_code == 200
        assert response.json()["model"] == "gpt-4o-mini"
        if i % 20 == 19 and rule_of(gateway, tenant, rule_id)["shadow_results"]:
            if rule_of(gateway, tenant, rule_id)["shadow_results"][0]["verdict"]:
                break
    result = wait_until(
        lambda: [r for r in rule_of(gateway, tenant, rule_id)["shadow_results"] if r["verdict"]],
        15,
        "a verdict",
    )[0]
    assert result["verdict"] == "non_inferior"
    assert (result["routed_model"], result["baseline_model"]) == ("gpt-4o-mini", "gpt-4o")
    assert result["n"] >= 114 and result["disagreements"] == 0
    rule = rule_of(gateway, tenant, rule_id)
    assert rule["disabled_at"] is None
    spend = routes(gateway, tenant)["shadow_spend_today"]
    warnings = [line for line in gateway.log_lines() if "shadow" in str(line.get("event"))]
    # every comparison made one priced call (seen once: one call fewer than n; the
    # warnings say why if it happens again)
    assert float(spend["usd"]) > 0 and spend["calls"] >= result["n"] - 1, (spend, warnings)
    assert metric_value(gateway.metrics(), "recovea_shadow_verdicts_total", verdict="non_inferior")
    assert (
        metric_value(
            gateway.metrics(),
            "recovea_shadow_comparisons_total",
            outcome="agree",
            comparator="short",
        )
        >= 114
    )
    assert metric_value(gateway.metrics(), "recovea_shadow_spend_usd_total", provider="openai") > 0

    # decided: the pair is no longer shadowed (no call to gpt-4o)
    mock.clear()
    decided = samples(gateway, "decided")
    chat(gateway, tenant, "gpt-4o", f"{MARKER} after the verdict")
    wait_until(lambda: samples(gateway, "decided") > decided, 10, "the decided skip")
    assert [r["body"]["model"] for r in mock.requests()] == ["gpt-4o-mini"]

    # never a body: not in the gateway's log, its files, or the database's files
    assert MARKER not in gateway.log_text()
    data_dir = Path(gateway.log_path.parent, f"data-{gateway.port}")
    for directory in (data_dir, postgres.data_dir):
        for path in directory.rglob("*"):
            if path.is_file() and not path.is_socket():
                assert MARKER.encode() not in path.read_bytes(), path
    tables = owner_query(
        postgres.url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'recovea'"
        " AND table_type = 'BASE TABLE'",
    )
    for table in tables:
        dumped = owner_query(postgres.url, f"SELECT t::text AS row FROM recovea.{table[0]} t")
        assert not any(MARKER in row["row"] for row in dumped), table[0]


def test_a_cheap_model_that_disagrees_is_disabled_and_traffic_returns_to_the_baseline(
    gateway: Gateway, db_env: dict[str, str], mock: MockServer
) -> None:
    """claude-sonnet-4-5 served on claude-haiku-4-5, which the mock makes disagree: after
    the minimum sample the test finds it inferior, disables the rule (admin API, log,
    metric), and the next request goes to claude-sonnet-4-5 itself."""
    tenant, rule_id = tenant_with_rule(
        db_env, "shadow-disagree", "--match-model", "claude-sonnet-4-5",
        "--to", "claude-haiku-4-5", "--shadow", "1",
    )  # fmt: skip
    dissent = {"x-mock-disagree-model": "claude-haiku-4-5"}
    verdicts = "recovea_shadow_verdicts_total"
    before = metric_value(gateway.metrics(), verdicts, verdict="inferior")
    for i in range(60):
        response = messages(
            gateway, tenant, "claude-sonnet-4-5", f"tell me {i}", stream=i % 2 == 0, **dissent
        )
        assert response.status_code == 200
        if metric_value(gateway.metrics(), verdicts, verdict="inferior") > before:
            break
    wait_until(
        lambda: metric_value(gateway.metrics(), verdicts, verdict="inferior") > before,
        15,
        "the inferior verdict",
    )
    rule = rule_of(gateway, tenant, rule_id)
    assert rule["disabled_at"] is not None
    assert "inferior" in rule["disabled_reason"]
    result = rule["shadow_results"][0]
    assert result["verdict"] == "inferior" and result["n"] >= 10
    assert result["disagreements"] == result["n"]
    assert any(
        line.get("event") == "shadow_verdict" and line.get("rule_id") == rule_id
        for line in gateway.log_lines()
    )

    mock.clear()
    response = messages(gateway, tenant, "claude-sonnet-4-5", "after the verdict", stream=False)
    assert response.status_code == 200
    assert response.json()["model"] == "claude-sonnet-4-5"
    asked = [
        r["body"]["model"] for r in mock.requests() if "after the verdict" in str(r.get("body"))
    ]
    assert asked == ["claude-sonnet-4-5"]
    row = stored(gateway, tenant, "requests", response.headers["x-request-id"])
    assert row["realized_model"] == "claude-sonnet-4-5"
    assert "routing" not in row["levers_fired"] or row["levers_fired"]["routing"] != "hit"


def test_the_callers_responses_are_byte_identical_with_shadowing_on_and_off(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """The same requests through a rule with shadow 1 and one with shadow 0 get the same
    status, content type and body bytes (streams: up to their receipt line)."""
    on, _ = tenant_with_rule(
        db_env, "shadow-on", "--match-model", "gpt-4.1", "--to", "gpt-4.1-mini", "--shadow", "1"
    )
    off, _ = tenant_with_rule(
        db_env, "shadow-off", "--match-model", "gpt-4.1", "--to", "gpt-4.1-mini"
    )
    queued = samples(gateway, "queued")
    for stream in (False, True):
        answers = []
        for tenant in (on, off):
            response = httpx.post(
                f"{gateway.url}/v1/chat/completions",
                json={
                    "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": "same bytes please"}],
                    "stream": stream,
                },
                headers=tenant.bearer,
                timeout=30,
            )
            body = without_receipt(response.content) if stream else response.content
            answers.append((response.status_code, response.headers["content-type"], body))
        assert answers[0] == answers[1]
    wait_until(lambda: samples(gateway, "queued") >= queued + 2, 10, "both shadowed")


def test_an_enormous_routed_answer_is_dropped_from_shadowing_and_reaches_the_caller_whole(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """A routed stream of ~1 MB outgrows the 64 KiB capture bound: the capture lets go
    of it (counted `too_large`, nothing queued), and the caller gets every event."""
    tenant, _ = tenant_with_rule(
        db_env, "shadow-huge", "--match-model", "o3", "--to", "o4-mini", "--shadow", "1"
    )
    too_large = samples(gateway, "too_large")
    queued = samples(gateway, "queued")
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "o3", "messages": [{"role": "user", "content": "big"}], "stream": True},
        headers={**tenant.bearer, "x-mock-chunks": "4000"},
        timeout=60,
    )
    assert response.status_code == 200
    content = without_receipt(response.content)
    assert len(content) > 640 * 1024
    events = [e for e in content.split(b"\n\n") if e.startswith(b"data: {")]
    assert len(events) == 4000 + 2
    assert content.endswith(b"data: [DONE]\n\n")
    wait_until(lambda: samples(gateway, "too_large") > too_large, 10, "the too_large drop")
    assert samples(gateway, "queued") == queued


def test_the_spend_ceiling_stops_shadow_calls(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """With a ceiling below one shadow call's cost, the first sampled request is
    shadowed and every later one is skipped (`over_ceiling`): the baseline model is
    called once."""
    tenant, _ = tenant_with_rule(
        db_env, "shadow-ceiling", "--match-model", "gpt-4o", "--to", "gpt-4o-mini",
        "--shadow", "1",
    )  # fmt: skip
    env = {
        **upstream_env(mock),
        **db_env,
        "RECOVEA_SHADOW_DAILY_USD": "0.00001",
        "RECOVEA_SHADOW_CONCURRENCY": "1",
    }
    gw = Gateway(env, workdir)
    try:
        mock.clear()
        for i in range(5):
            assert chat(gw, tenant, "gpt-4o", f"ceiling {i}").status_code == 200
            wait_until(
                lambda i=i: samples(gw, "compared") + samples(gw, "over_ceiling") >= i + 1,
                10,
                f"sample {i} handled",
            )
        assert samples(gw, "compared") == 1
        assert samples(gw, "over_ceiling") == 4
        assert [r["body"]["model"] for r in mock.requests()].count("gpt-4o") == 1
        spend = routes(gw, tenant)["shadow_spend_today"]
        assert spend["calls"] == 1 and float(spend["usd"]) > 0.00001
    finally:
        gw.stop()


def test_shutdown_does_not_wait_for_a_hanging_shadow_call(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> None:
    """A shadow call that never answers (the caller's model hangs while the routed one
    answers) is cancelled at shutdown within its 2 s: the gateway exits cleanly and
    promptly, and the caller's response was not held back by it."""
    tenant, _ = tenant_with_rule(
        db_env, "shadow-shutdown", "--match-model", "gpt-4o", "--to", "gpt-4o-mini",
        "--shadow", "1",
    )  # fmt: skip
    gw = Gateway({**upstream_env(mock), **db_env, "RECOVEA_SHUTDOWN_GRACE_S": "5"}, workdir)
    try:
        response = chat(
            gw, tenant, "gpt-4o", "hang the shadow", **{"x-mock-fault-model": "gpt-4o=hang"}
        )
        assert response.status_code == 200 and response.json()["model"] == "gpt-4o-mini"
        wait_until(lambda: samples(gw, "queued") >= 1, 10, "the sample queued")
        wait_until(
            lambda: any(
                r["body"].get("model") == "gpt-4o" and r["body"].get("stream") is False
                for r in mock.requests()
                if isinstance(r.get("body"), dict)
            ),
            10,
            "the hanging shadow call",
        )
        started = time.monotonic()
        assert gw.stop(timeout=30) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 10
        assert error_lines(gw) == []
    finally:
        gw.stop()


def error_lines(gw: Gateway) -> list[dict[str, Any]]:
    """Error-level lines of a gateway's log (a shadow fault would show here)."""
    return [line for line in gw.log_lines() if line.get("level") in ("error", "critical")]
