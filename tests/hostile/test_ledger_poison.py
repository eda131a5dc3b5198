"""One request from anyone must never stop the ledger for everyone: strings from the
caller and the provider are cleaned and bounded where the record is built, counts
clamped, refused requests leave no row, and the next normal request always gets its
row."""

from __future__ import annotations

import base64

import httpx
import orjson

from recovea_proxy.clean import FINISH_REASON_MAX, MODEL_MAX
from recovea_proxy.providers.usage import COUNT_MAX
from tests.hostile.conftest import assert_unharmed, normal_request
from tests.ledger_support import Tenant, owner_query, stored
from tests.support import Gateway, Postgres, metric_value

SECRET = "sk-proj-HostileKeyInTheModelName0123456789WXYZ"


def meter(gateway: Gateway, outcome: str) -> float:
    return metric_value(gateway.metrics(), "meter_events_total", outcome=outcome)


def receipt_fields(token: str) -> dict[str, object]:
    payload = token.split(".")[0]
    fields: dict[str, object] = orjson.loads(base64.urlsafe_b64decode(payload + "==="))
    return fields


def test_a_nul_model_without_a_key_leaves_no_row_and_stops_nothing(
    target: Gateway, victim: Tenant, postgres: Postgres
) -> None:
    """The reproduction: `{"model":"\\u0000"}` with no key at all. It is refused (401),
    leaves no row (a refused request has no workspace), and the ledger keeps writing
    every workspace's rows."""
    before = owner_query(
        postgres.url, "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id IS NULL"
    )[0]["n"]
    for _ in range(3):
        response = httpx.post(
            f"{target.url}/v1/chat/completions",
            content=b'{"model":"\\u0000","messages":[]}',
            headers={"x-recovea-feature": "refused"},
        )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    normal_request(target, victim)
    after = owner_query(
        postgres.url, "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id IS NULL"
    )[0]["n"]
    assert after == before
    assert meter(target, "retried") == 0
    assert meter(target, "spooled") == 0
    assert_unharmed(target, victim)


def test_a_hostile_model_name_is_cleaned_in_the_row_the_receipt_and_the_log(
    target: Gateway, victim: Tenant
) -> None:
    """A model name holding NUL, other control characters, a key and a megabyte of
    text is stored, signed and logged cleaned: no control character, the key masked,
    at most 256 characters."""
    model = "gpt\x00-4o\x07 " + SECRET + " " + "m" * 1_000_000
    response = httpx.post(
        f"{target.url}/v1/chat/completions",
        content=orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]}),
        headers={**victim.bearer, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    row = stored(target, victim, "requests", request_id)
    stored_model = row["baseline_model"]
    assert stored_model.startswith("gpt-4o ****WXYZ mmm")
    assert len(stored_model) == MODEL_MAX
    assert SECRET not in target.log_text()
    assert receipt_fields(response.headers["recovea-receipt"])["baseline_model"] == stored_model
    assert target.record(request_id)["baseline_model"] == stored_model
    assert_unharmed(target, victim)


def test_a_provider_finish_reason_with_nul_and_kilobytes_is_cleaned(
    target: Gateway, victim: Tenant
) -> None:
    """A provider that reports a finish reason with NUL and kilobytes of text, in a
    JSON answer and in a stream: the row holds it cleaned and cut, and rows go on."""
    hostile = orjson.dumps("st\x00op" + "z" * 5000).decode()
    for stream in (False, True):
        response = httpx.post(
            f"{target.url}/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "x"}],
                "stream": stream,
            },
            headers={**victim.bearer, "x-mock-finish-reason": hostile},
            timeout=30,
        )
        assert response.status_code == 200
        row = stored(target, victim, "requests", response.headers["x-request-id"])
        assert row["finish_reason"] == "stop" + "z" * (FINISH_REASON_MAX - 4)
    assert_unharmed(target, victim)


def test_token_counts_that_do_not_fit_are_clamped(target: Gateway, victim: Tenant) -> None:
    """A provider reporting 2^40 input tokens: the row (an integer column) holds the
    clamp, 2^31 - 1, instead of a value Postgres would refuse."""
    response = httpx.post(
        f"{target.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        headers={**victim.bearer, "x-mock-input-tokens": str(2**40)},
        timeout=30,
    )
    assert response.status_code == 200
    row = stored(target, victim, "requests", response.headers["x-request-id"])
    assert row["input_tokens"] == COUNT_MAX
    assert row["output_tokens"] == 16
    assert_unharmed(target, victim)


def test_after_every_attack_nothing_was_refused_by_the_database(
    target: Gateway, victim: Tenant
) -> None:
    """Cleaning where the record is built means the database never has to refuse a
    row: nothing was set aside, nothing spooled, nothing dropped."""
    normal_request(target, victim)
    for outcome in ("rejected", "spooled", "dropped", "retried"):
        assert meter(target, outcome) == 0, outcome
    assert meter(target, "written") > 0
