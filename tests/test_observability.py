"""Logs, metrics and the gateway's own endpoints: what an operator reads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from recovea_proxy.observability.redact import redact_text
from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.support import Gateway, metric_value

AUTH = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("key sk-proj-abcdefghijklmnop1234 here", "1234"),
        ("sk-ant-api03-Zx9_yyyyyyyyyyyyyyyyy-QWER", "QWER"),
        ("Authorization: Bearer eyJhbGciOi.JIUzI1NiJ9.abcd", "abcd"),
        ("rcv_live_0123456789abcdefXYZW", "XYZW"),
        ("sk-or-v1-0000000000000000000000000000abcd", "abcd"),
    ],
)
def test_redaction_keeps_only_the_last_four(text: str, kept: str) -> None:
    """Anything shaped like a key is masked to **** and its last four characters."""
    masked = redact_text(text)
    assert "****" + kept in masked
    assert len(masked) < len(text)


def test_redaction_leaves_ordinary_text_alone() -> None:
    """Text without key-shaped tokens is returned unchanged (the same object)."""
    text = "request finished in 3 ms for sk-"
    assert redact_text(text) is text


def test_one_body_free_log_line_per_request(gateway: Gateway) -> None:
    """Each request writes exactly one JSON line that holds neither prompt nor answer."""
    marker = "MARKER-PROMPT-9c1f"
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=orjson.dumps(
            {"model": "gpt-4o", "messages": [{"role": "user", "content": marker}]}
        ),
        headers=AUTH,
    )
    assert marker in response.text, "the mock echoes the prompt into the answer"
    request_id = response.headers["x-request-id"]
    gateway.record(request_id)
    lines = [line for line in gateway.log_lines() if line.get("request_id") == request_id]
    assert len(lines) == 1
    assert marker not in gateway.log_text()


def test_keys_never_reach_the_log(gateway: Gateway) -> None:
    """Full provider keys sent by callers never appear in the gateway's output."""
    for headers in (AUTH, {"x-api-key": FAKE_ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}):
        httpx.post(
            f"{gateway.url}/v1/messages",
            content=b'{"model":"claude","max_tokens":1}',
            headers=headers,
        )
    httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{", headers=AUTH)
    text = gateway.log_text()
    assert FAKE_OPENAI_KEY not in text
    assert FAKE_ANTHROPIC_KEY not in text
    assert FAKE_OPENAI_KEY[-12:] not in text


def test_keys_in_the_body_and_tags_never_reach_the_log(gateway: Gateway) -> None:
    """A key pasted into the body's `model` or into a tag header is masked in the
    request's log line (the line the gateway writes itself, past the log's redaction
    processor), for JSON and streamed answers."""
    pasted = "sk-proj-PastedIntoTheModelField0123456789QRST"
    for stream in (False, True):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            content=orjson.dumps(
                {
                    "model": f"gpt-4o {pasted}",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": stream,
                }
            ),
            headers={**AUTH, "x-recovea-feature": pasted, "x-recovea-customer": pasted},
        )
        assert response.status_code == 200
        line = gateway.record(response.headers["x-request-id"])
        assert line["baseline_model"] == "gpt-4o ****QRST"
        assert line["feature"] == line["end_user_id"] == "****QRST"
    assert pasted not in gateway.log_text()


def test_metrics_count_requests_by_route_template(gateway: Gateway) -> None:
    """/metrics counts requests by provider, route template and status, bounded labels."""
    before = metric_value(
        gateway.metrics(),
        "recovea_requests_total",
        provider="openai",
        route="/v1/chat/completions",
        status="200",
    )
    httpx.post(
        f"{gateway.url}/v1/chat/completions", content=b'{"model":"m","messages":[]}', headers=AUTH
    )
    httpx.get(f"{gateway.url}/v1/some/random/path/abc123", headers=AUTH)
    text = gateway.metrics()
    after = metric_value(
        text,
        "recovea_requests_total",
        provider="openai",
        route="/v1/chat/completions",
        status="200",
    )
    assert after == before + 1
    assert "abc123" not in text
    assert 'route="/v1/other"' in text
    for name in (
        "recovea_request_duration_seconds_bucket",
        "recovea_gateway_overhead_seconds_bucket",
        "recovea_requests_in_flight",
        "# TYPE gateway_fail_open_total counter",
        "# TYPE recovea_upstream_errors_total counter",
    ):
        assert name in text, name


def test_process_and_garbage_collector_metrics(gateway: Gateway) -> None:
    """/metrics carries the process's CPU and memory and the garbage collector's counts,
    and under concurrent load the collector stays nearly idle: the gateway raises the
    young-generation threshold above what requests in flight keep alive (CPython's
    default runs a young collection every few dozen requests here)."""

    def young_collections() -> float:
        return metric_value(gateway.metrics(), "python_gc_collections_total", generation="0")

    before = young_collections()
    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
    with httpx.Client(headers=AUTH) as client, ThreadPoolExecutor(16) as pool:

        def post(_: int) -> int:
            return client.post(f"{gateway.url}/v1/chat/completions", content=body).status_code

        statuses = list(pool.map(post, range(1000)))
    assert statuses == [200] * 1000
    assert young_collections() - before <= 2
    text = gateway.metrics()
    assert metric_value(text, "process_cpu_seconds_total") > 0
    assert metric_value(text, "process_resident_memory_bytes") > 0


def test_health_ready_and_security_txt(gateway: Gateway) -> None:
    """Liveness, readiness and the security contact answer without credentials."""
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200
    assert httpx.get(f"{gateway.url}/readyz").text == "ready\n"
    security = httpx.get(f"{gateway.url}/.well-known/security.txt")
    assert security.status_code == 200
    assert security.text.startswith("Contact: ")
    assert "Expires: " in security.text
