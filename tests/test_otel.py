"""OpenTelemetry: with `RECOVEA_OTEL_ENDPOINT` set, each request becomes one span in
the GenAI conventions, sent over OTLP/HTTP (JSON) to a collector — here a small
aiohttp receiver in the test process that decodes what arrives. The span's trace id
is the response's `x-recovea-trace-id`, a caller's `traceparent` makes its span the
parent, no prompt or completion text is ever sent, and a collector that is down or
slow never slows or fails a request: its spans are dropped and counted."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from tests.conftest import FAKE_OPENAI_KEY
from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, free_port, metric_value, wait_until

PROMPT = "the secret plans for the quarterly offsite"


class Receiver:
    """An OTLP/HTTP traces endpoint on its own loop thread; keeps every body."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.bodies: list[bytes] = []
        self.delay_s = delay_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        return runner

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        body = await request.read()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.bodies.append(body)
        return web.json_response({})

    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, with its resource's attributes under
        `_resource`."""
        found = []
        for body in list(self.bodies):
            for resource_spans in orjson.loads(body)["resourceSpans"]:
                resource = _attributes(resource_spans["resource"])
                for scope_spans in resource_spans["scopeSpans"]:
                    for span in scope_spans["spans"]:
                        found.append({**span, "_resource": resource})
        return found

    def span_of(self, request_id: str) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for span in self.spans():
                if _attributes(span)["recovea.request_id"] == request_id:
                    return span
            return None

        found: dict[str, Any] = wait_until(find, 10, f"span of {request_id}")
        return found

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def _attributes(holder: dict[str, Any]) -> dict[str, Any]:
    """OTLP attributes as a plain dict (arrays as lists)."""
    out: dict[str, Any] = {}
    for attribute in holder.get("attributes", []):
        value = attribute["value"]
        if "arrayValue" in value:
            out[attribute["key"]] = [v["stringValue"] for v in value["arrayValue"]["values"]]
        else:
            ((_, plain),) = value.items()
            out[attribute["key"]] = int(plain) if "intValue" in value else plain
    return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "otel")


def _chat(gateway: Gateway, tenant: Tenant, **extra: Any) -> httpx.Response:
    headers = {**tenant.bearer, **extra.pop("headers", {})}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }
    return httpx.post(f"{gateway.url}/v1/chat/completions", headers=headers, json=body)


def test_a_request_becomes_one_genai_span(
    start_gateway: Callable[..., Gateway], receiver: Receiver, tenant: Tenant
) -> None:
    """The span carries the GenAI attributes, the route, the status, the gateway's ids;
    its trace id is the response's x-recovea-trace-id; its times are the request's."""
    gateway = start_gateway(
        RECOVEA_OTEL_ENDPOINT=receiver.url, RECOVEA_OTEL_FLUSH_INTERVAL_S="0.05"
    )
    before_ns = time.time_ns()
    response = _chat(gateway, tenant)
    after_ns = time.time_ns()
    assert response.status_code == 200, response.text
    span = receiver.span_of(response.headers["x-request-id"])
    attributes = _attributes(span)
    assert span["traceId"] == response.headers["x-recovea-trace-id"]
    assert "parentSpanId" not in span
    assert len(span["spanId"]) == 16
    assert span["name"] == "chat gpt-4o-mini"
    assert span["kind"] == 2
    assert span["_resource"]["service.name"] == "recovea"
    usage = response.json()["usage"]
    expected = {
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "gen_ai.response.finish_reasons": [response.json()["choices"][0]["finish_reason"]],
        "http.request.method": "POST",
        "http.route": "/v1/chat/completions",
        "http.response.status_code": 200,
        "recovea.workspace_id": tenant.workspace,
    }
    assert expected == {name: attributes.get(name) for name in expected}
    start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
    assert before_ns - 1_000_000 <= start <= end <= after_ns + 1_000_000


def test_the_callers_traceparent_is_honoured(
    start_gateway: Callable[..., Gateway], receiver: Receiver, tenant: Tenant
) -> None:
    """With a W3C traceparent, the span joins the caller's trace as a child of the
    caller's span; a streamed request's span is there too, with its usage."""
    gateway = start_gateway(
        RECOVEA_OTEL_ENDPOINT=f"{receiver.url}/v1/traces",
        RECOVEA_OTEL_FLUSH_INTERVAL_S="0.05",
    )
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    response = _chat(
        gateway,
        tenant,
        stream=True,
        stream_options={"include_usage": True},
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert response.status_code == 200
    assert response.headers["x-recovea-trace-id"] == trace_id
    span = receiver.span_of(response.headers["x-request-id"])
    assert (span["traceId"], span["parentSpanId"]) == (trace_id, parent)
    assert span["spanId"] != parent
    assert _attributes(span)["gen_ai.usage.output_tokens"] > 0


def test_no_prompt_completion_or_key_is_ever_sent(
    start_gateway: Callable[..., Gateway], receiver: Receiver, tenant: Tenant
) -> None:
    """Whatever the conventions allow, the payload holds no prompt, no completion and
    no key: not the rcv_ key, not the provider key."""
    gateway = start_gateway(
        RECOVEA_OTEL_ENDPOINT=receiver.url, RECOVEA_OTEL_FLUSH_INTERVAL_S="0.05"
    )
    answers = []
    for stream in (False, True):
        response = _chat(gateway, tenant, stream=stream)
        assert response.status_code == 200
        answers.append(response)
        receiver.span_of(response.headers["x-request-id"])
    completion = answers[0].json()["choices"][0]["message"]["content"]
    payload = b"".join(receiver.bodies)
    secrets = (PROMPT, "quarterly offsite", completion, tenant.key, "rcv_live_", "sk-")
    for secret in (*secrets, FAKE_OPENAI_KEY, FAKE_OPENAI_KEY[-12:]):
        assert secret.encode() not in payload, secret


def test_a_collector_that_is_down_or_slow_costs_requests_nothing(
    start_gateway: Callable[..., Gateway], tenant: Tenant
) -> None:
    """Down (nothing listens) or slow (answers after 5 s): every request is answered
    at once and succeeds; the spans that could not go are dropped and counted."""
    slow = Receiver(delay_s=5)
    try:
        for endpoint, reason in (
            (f"http://127.0.0.1:{free_port()}", "export_failed"),
            (slow.url, "queue_full"),
        ):
            gateway = start_gateway(
                RECOVEA_OTEL_ENDPOINT=endpoint,
                RECOVEA_OTEL_FLUSH_INTERVAL_S="0.02",
                RECOVEA_OTEL_QUEUE_MAX="2",
                RECOVEA_OTEL_BATCH_MAX="1",
                RECOVEA_OTEL_TIMEOUT_S="10",
            )
            for _ in range(12):
                started = time.monotonic()
                response = _chat(gateway, tenant)
                assert response.status_code == 200
                assert time.monotonic() - started < 2.0
            wait_until(
                lambda g=gateway, r=reason: (
                    metric_value(g.metrics(), "gateway_fail_open_total", layer="otel", reason=r) > 0
                ),
                10,
                f"otel drops counted ({reason})",
            )
            assert metric_value(gateway.metrics(), "recovea_otel_spans_total", outcome="dropped")
            gateway.stop()
    finally:
        slow.close()
