"""Routing rules send a workspace's requests for a model to another (cheaper) model,
then its fallbacks, then the caller's own model, switching only before the first
byte reaches the client; the row tells what was asked for and what answered, and
the rollup prices both, so savings are real numbers.

One gateway and one workspace serve the module; each test chooses the mock's faults
per model (`x-mock-fault-model`), so the same rules serve every case:

| rule | requests for | served on, in order |
| --- | --- | --- |
| R1 | gpt-4o | gpt-4o-mini, gpt-4.1-nano, gpt-4o |
| R1b | gpt-4o with `X-Recovea-Feature: bulk` | gpt-4.1-nano, gpt-4o |
| R2 | claude-sonnet-4-5 | claude-haiku-4-5, claude-sonnet-4-5 |
| R3 | gpt-4.1 | openrouter openai/gpt-4o-mini (upstream refuses connections), gpt-4.1 |
| R4 | o3 | o4-mini, o3 |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SdkClients, upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import (
    Gateway,
    MockServer,
    cli,
    cli_json,
    free_port,
    metric_value,
    set_provider_key,
    wait_until,
)

MESSAGES = [{"role": "user", "content": "route me"}]
OPENROUTER_KEY = "sk-or-v1-routing-test-key-0000"


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    env = {
        **upstream_env(mock),
        **db_env,
        # a port nothing listens on: every OpenRouter target is refused
        "RECOVEA_UPSTREAM_OPENROUTER": f"http://127.0.0.1:{free_port()}/api",
        "RECOVEA_FIRST_BYTE_TIMEOUT_S": "1.5",
    }
    gw = Gateway(env, workdir)
    yield gw
    gw.stop()


def add_rule(env: dict[str, str], tenant: Tenant, *args: str) -> str:
    done = cli("route", "add", "--workspace", tenant.workspace, *args, env=env)
    assert done.returncode == 0, done.stderr
    rule_id = done.stdout.strip()
    assert len(rule_id) == 36
    return rule_id


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    tenant = make_tenant(db_env, "routing")
    set_provider_key(db_env, tenant.workspace, "openrouter", OPENROUTER_KEY)
    add_rule(db_env, tenant, "--match-model", "gpt-4o", "--to", "gpt-4o-mini",
             "--fallback", "gpt-4.1-nano")  # fmt: skip
    add_rule(db_env, tenant, "--match-model", "gpt-4o", "--feature", "bulk", "--to", "gpt-4.1-nano")
    add_rule(db_env, tenant, "--match-model", "claude-sonnet-4-5", "--to", "claude-haiku-4-5")
    add_rule(db_env, tenant, "--match-model", "gpt-4.1", "--provider", "openrouter",
             "--to", "openai/gpt-4o-mini")  # fmt: skip
    add_rule(db_env, tenant, "--match-model", "o3", "--to", "o4-mini", "--shadow", "0.05")
    return tenant


def chat(
    gateway: Gateway,
    tenant: Tenant,
    model: str,
    faults: str = "",
    *,
    stream: bool = False,
    options: dict[str, Any] | None = None,
    **headers: str,
) -> httpx.Response:
    extra = {"x-mock-fault-model": faults} if faults else {}
    body: dict[str, Any] = {"model": model, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    if options is not None:
        body["stream_options"] = options
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=body,
        headers={**tenant.bearer, **extra, **headers},
        timeout=30,
    )


def asked(mock: MockServer) -> list[str]:
    """The models the mock was asked for, in order."""
    return [r["body"]["model"] for r in mock.requests() if isinstance(r.get("body"), dict)]


def row_of(gateway: Gateway, tenant: Tenant, response: httpx.Response) -> dict[str, Any]:
    return stored(gateway, tenant, "requests", response.headers["x-request-id"])


def test_a_rule_serves_a_cheaper_model_and_the_rollup_shows_the_saving(
    gateway: Gateway, tenant: Tenant, mock: MockServer, db_env: dict[str, str]
) -> None:
    """o3 is served on o4-mini: one upstream call, the answer names o4-mini; the row has
    baseline o3, realized o4-mini, routing `hit`; the rollup prices the request at both
    models, and the difference is the saving."""
    mock.clear()
    response = chat(
        gateway, tenant, "o3", **{"x-mock-input-tokens": "1000", "x-mock-output-tokens": "500"}
    )
    assert response.status_code == 200
    assert response.json()["model"] == "o4-mini"
    assert asked(mock) == ["o4-mini"]
    row = row_of(gateway, tenant, response)
    assert (row["baseline_model"], row["realized_model"]) == ("o3", "o4-mini")
    assert row["levers_fired"]["routing"] == "hit"
    assert row["fell_back_to_baseline"] is False and row["provider"] == "openai"

    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    cli_json("rollup", "--since", hour.isoformat(), env=db_env)
    usage = httpx.get(
        f"{gateway.url}/v1/recovea/usage", params={"group_by": "model"}, headers=tenant.bearer
    ).json()["data"]
    o3 = next(item for item in usage if item["key"] == "o3")
    assert Decimal(o3["baseline_cost_usd"]) == Decimal("0.006")  # 1000 * 2.00 + 500 * 8.00
    assert Decimal(o3["realized_cost_usd"]) == Decimal("0.0033")  # 1000 * 1.10 + 500 * 4.40
    assert Decimal(o3["savings_usd"]) == Decimal("0.0027")


def test_the_more_specific_rule_wins_and_no_rule_means_one_attempt(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A feature-specific rule beats the general one for its feature; a model no rule
    names goes upstream once, even when the provider answers 500 (the SDK's retries
    are not multiplied), with routing `miss`."""
    mock.clear()
    bulk = chat(gateway, tenant, "gpt-4o", **{"x-recovea-feature": "bulk"})
    assert bulk.json()["model"] == "gpt-4.1-nano"
    mock.clear()
    plain = chat(gateway, tenant, "gpt-4o-mini", **{"x-mock-fault": "500"})
    assert plain.status_code == 500
    assert asked(mock) == ["gpt-4o-mini"]
    assert row_of(gateway, tenant, plain)["levers_fired"]["routing"] == "miss"


@pytest.mark.parametrize("fault", ["429", "500", "529"])
def test_a_failing_routed_model_falls_through_to_the_next_target_then_the_baseline(
    gateway: Gateway, tenant: Tenant, mock: MockServer, fault: str
) -> None:
    """The routed model answering 429, 500 or 529 moves the request on to the fallback;
    when that fails too, the caller's own model serves, and the row says it fell back
    to the baseline. Each attempt is counted by provider, model and outcome."""
    outcome = "status_5xx" if fault == "500" else f"status_{fault}"
    before = metric_value(
        gateway.metrics(), "recovea_route_attempts_total", model="gpt-4o-mini", outcome=outcome
    )
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", f"gpt-4o-mini={fault}")
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4.1-nano"
    assert asked(mock) == ["gpt-4o-mini", "gpt-4.1-nano"]
    row = row_of(gateway, tenant, response)
    assert (row["realized_model"], row["fell_back_to_baseline"]) == ("gpt-4.1-nano", False)

    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", f"gpt-4o-mini={fault},gpt-4.1-nano={fault}")
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4o"
    assert asked(mock) == ["gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]
    row = row_of(gateway, tenant, response)
    assert (row["baseline_model"], row["realized_model"]) == ("gpt-4o", "gpt-4o")
    assert row["fell_back_to_baseline"] is True
    after = metric_value(
        gateway.metrics(), "recovea_route_attempts_total", model="gpt-4o-mini", outcome=outcome
    )
    assert after == before + 2


def test_the_baseline_failing_too_is_the_callers_answer(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """When every target fails, the last answer (the caller's own model's) is returned as
    it is: one attempt per target, no more."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", "gpt-4o-mini=500,gpt-4.1-nano=500,gpt-4o=429")
    assert response.status_code == 429
    assert response.json()["error"]["type"]
    assert asked(mock) == ["gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]


def test_each_target_gets_its_own_model_when_the_body_is_rebuilt(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A stream whose `stream_options` the gateway must rewrite (usage off) still names
    each target's model, the caller's last; the usage the client did not ask for stays
    hidden."""
    mock.clear()
    response = chat(
        gateway,
        tenant,
        "gpt-4o",
        "gpt-4o-mini=500,gpt-4.1-nano=529",
        stream=True,
        options={"include_usage": False},
    )
    assert response.status_code == 200
    assert asked(mock) == ["gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]
    sent = [r["body"]["stream_options"] for r in mock.requests()]
    assert sent == [{"include_usage": True}] * 3
    assert b'"usage":{' not in response.content
    row = row_of(gateway, tenant, response)
    assert (row["realized_model"], row["input_tokens"]) == ("gpt-4o", 12)


def test_a_first_byte_timeout_moves_on(gateway: Gateway, tenant: Tenant, mock: MockServer) -> None:
    """A routed model that sends no response headers within the first-byte timeout is
    left for the next target."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", "gpt-4o-mini=hang")
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4.1-nano"
    assert (
        metric_value(
            gateway.metrics(),
            "recovea_route_attempts_total",
            model="gpt-4o-mini",
            outcome="timeout",
        )
        >= 1
    )


def test_a_refused_connection_on_another_provider_falls_back_to_the_baseline(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """gpt-4.1 is routed to OpenRouter, whose upstream refuses connections: the caller's
    gpt-4.1 on OpenAI serves, and the row says so."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4.1")
    assert response.status_code == 200
    assert response.json()["model"] == "gpt-4.1"
    assert asked(mock) == ["gpt-4.1"]
    row = row_of(gateway, tenant, response)
    assert (row["provider"], row["realized_model"], row["fell_back_to_baseline"]) == (
        "openai",
        "gpt-4.1",
        True,
    )
    assert (
        metric_value(
            gateway.metrics(),
            "recovea_route_attempts_total",
            provider="openrouter",
            model="other",
            outcome="connect",
        )
        >= 1
    )


def test_a_rule_to_another_provider_is_served_there_on_its_key(
    start_gateway: Callable[..., Gateway], tenant: Tenant, mock: MockServer
) -> None:
    """With OpenRouter reachable, gpt-4.1 asked on OpenAI's surface is served by
    OpenRouter's openai/gpt-4o-mini, on the workspace's OpenRouter key; streamed, the
    client still gets only the usage it asked for (none) while the row has it."""
    gateway = start_gateway()
    mock.clear()
    response = chat(gateway, tenant, "gpt-4.1")
    assert response.status_code == 200
    assert response.json()["model"] == "openai/gpt-4o-mini"
    (sent,) = mock.requests()
    assert sent["path"] == "/api/v1/chat/completions"
    assert sent["body"]["model"] == "openai/gpt-4o-mini"
    assert sent["headers"]["authorization"] == f"Bearer {OPENROUTER_KEY}"
    row = row_of(gateway, tenant, response)
    assert (row["provider"], row["baseline_model"], row["realized_model"]) == (
        "openrouter",
        "gpt-4.1",
        "openai/gpt-4o-mini",
    )
    assert row["fell_back_to_baseline"] is False

    streamed = chat(gateway, tenant, "gpt-4.1", stream=True)
    assert streamed.status_code == 200 and b"data: [DONE]" in streamed.content
    assert b'"usage":{' not in streamed.content
    assert row_of(gateway, tenant, streamed)["input_tokens"] == 12


def test_a_400_is_returned_as_it_is(gateway: Gateway, tenant: Tenant, mock: MockServer) -> None:
    """A 400 from the routed model says the request is wrong: it is the answer, and no
    other model is tried."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", "gpt-4o-mini=400")
    assert response.status_code == 400
    assert asked(mock) == ["gpt-4o-mini"]


def test_a_stream_cut_after_its_first_chunk_is_not_switched(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Once content has reached the client the gateway never switches: a stream cut
    after its first chunks ends with the provider-shaped error event."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", "gpt-4o-mini=reset-mid-stream", stream=True)
    assert response.status_code == 200
    assert b'"content"' in response.content
    assert b'"error"' in response.content
    assert asked(mock) == ["gpt-4o-mini"]


def test_an_error_event_before_any_content_switches(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A stream whose first event is the provider's error (HTTP 200 already) is held back
    and the next target serves; the client sees one clean stream."""
    mock.clear()
    response = chat(gateway, tenant, "gpt-4o", "gpt-4o-mini=error-event-first", stream=True)
    assert response.status_code == 200
    assert b'"error"' not in response.content
    assert b'"model":"gpt-4.1-nano"' in response.content
    assert b"data: [DONE]" in response.content
    assert asked(mock) == ["gpt-4o-mini", "gpt-4.1-nano"]
    row = row_of(gateway, tenant, response)
    assert (row["realized_model"], row["success"]) == ("gpt-4.1-nano", True)
    assert row["input_tokens"] == 12


def test_sdks_see_a_normal_answer_where_a_fallback_served(
    gateway: Gateway, tenant: Tenant, sdk: SdkClients
) -> None:
    """The OpenAI and Anthropic SDKs, streamed and not, get an ordinary answer when the
    routed model failed and another served."""
    client = sdk.openai(f"{gateway.url}/v1", api_key=tenant.key)
    faults = {"x-mock-fault-model": "gpt-4o-mini=500"}
    done = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=faults)
    assert done.model == "gpt-4.1-nano" and done.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=faults
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    claude = sdk.anthropic(gateway.url, api_key=tenant.key)
    overloaded = {"x-mock-fault-model": "claude-haiku-4-5=529"}
    message = claude.messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES, extra_headers=overloaded
    )
    assert message.model == "claude-sonnet-4-5" and message.content
    first = {"x-mock-fault-model": "claude-haiku-4-5=error-event-first"}
    with claude.messages.stream(
        model="claude-sonnet-4-5", max_tokens=64, messages=MESSAGES, extra_headers=first
    ) as stream:
        final = stream.get_final_message()
    assert final.model == "claude-sonnet-4-5" and final.stop_reason == "end_turn"


def test_a_rule_change_reaches_a_running_gateway(
    gateway: Gateway, db_env: dict[str, str], mock: MockServer
) -> None:
    """A rule added or removed while the gateway runs applies within moments: the
    workspace's keys are re-read with the new rules."""
    other = make_tenant(db_env, "routing-live")

    def served(model: str) -> str:
        response = chat(gateway, other, model)
        assert response.status_code == 200
        served_by: str = response.json()["model"]
        return served_by

    assert served("gpt-4o") == "gpt-4o"  # no rule yet; the key is now cached
    rule_id = add_rule(db_env, other, "--match-model", "gpt-4o", "--to", "gpt-4o-mini")
    wait_until(lambda: served("gpt-4o") == "gpt-4o-mini", 5, "the new rule to apply")
    listed = cli_json("route", "list", "--workspace", other.workspace, env=db_env)["data"]
    assert [rule["id"] for rule in listed] == [rule_id]
    cli_json("route", "remove", rule_id, env=db_env)
    wait_until(lambda: served("gpt-4o") == "gpt-4o", 5, "the rule's removal to apply")


def test_rules_are_checked_when_written(
    gateway: Gateway, tenant: Tenant, db_env: dict[str, str]
) -> None:
    """The API and the CLI refuse a malformed rule, an unknown provider, one the
    workspace has no key for, a model with no price, a translation between wire
    formats, and a second rule for the same requests; member keys get 403."""
    admin_key = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )["key"]
    url = f"{gateway.url}/admin/v1/routes"
    as_admin = {"authorization": f"Bearer {admin_key}"}
    good = {"match_model": "gpt-4.1-mini", "to": "gpt-4.1-nano", "fallbacks": ["gpt-4o-mini"]}
    refused = {
        "malformed shadow": {**good, "shadow": 2},
        "unknown field": {**good, "weight": 1},
        "unknown provider": {**good, "provider": "azure"},
        "no price": {**good, "to": "house-model-x"},
        "fallback no price": {**good, "fallbacks": ["house-model-y"]},
        "translation": {**good, "match_surface": "anthropic", "provider": "openai"},
        "duplicate": {"match_model": "gpt-4o", "to": "gpt-4.1-mini"},
        "changes nothing": {"match_model": "gpt-4.1-nano", "to": "gpt-4.1-nano"},
    }
    for why, spec in refused.items():
        answer = httpx.post(url, headers=as_admin, json=spec)
        assert answer.status_code == 400, why
        assert answer.json()["error"]["code"] == "invalid_request", why
    assert httpx.post(url, headers=tenant.bearer, json=good).status_code == 403

    created = httpx.post(url, headers=as_admin, json={**good, "shadow": 0.25})
    assert created.status_code == 201
    rule = created.json()
    assert (rule["to"], rule["fallbacks"]) == ("gpt-4.1-nano", ["gpt-4o-mini"])
    assert rule["shadow"] == 0.25
    assert rule["id"] in [r["id"] for r in httpx.get(url, headers=as_admin).json()["data"]]
    assert httpx.delete(f"{url}/{rule['id']}", headers=as_admin).status_code == 200
    assert httpx.delete(f"{url}/{rule['id']}", headers=as_admin).status_code == 404

    no_price = cli(
        "route", "add", "--workspace", tenant.workspace, "--match-model", "gpt-4o",
        "--to", "house-model-x", env=db_env,
    )  # fmt: skip
    assert no_price.returncode == 1 and "no price" in no_price.stderr
    assert no_price.stderr.strip().count("\n") == 0
    keyless = cli_json("workspace", "create", "routing-keyless", env=db_env)["workspace_id"]
    no_key = cli(
        "route", "add", "--workspace", keyless, "--match-model", "gpt-4o",
        "--to", "openai/gpt-4o-mini", "--provider", "openrouter", env=db_env,
    )  # fmt: skip
    assert no_key.returncode == 1 and "no openrouter key" in no_key.stderr
    bad_rate = cli(
        "route", "add", "--workspace", tenant.workspace, "--match-model", "gpt-4o",
        "--to", "gpt-4o-mini", "--shadow", "lots", env=db_env,
    )  # fmt: skip
    assert bad_rate.returncode == 2 and "--shadow" in bad_rate.stderr
