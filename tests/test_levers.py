"""The lever chain is fail-open: a lever's fault (an exception, or outlasting its
budget) is recorded as `error`, counted, marks the row `fell_back_to_baseline`, and
whatever the lever changed before it failed is undone, so the request reaches the
provider as the caller sent it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from prometheus_client import generate_latest

from recovea_proxy.app import GatewayApp
from recovea_proxy.asgi import Message, Receive, Scope, Send
from recovea_proxy.config import Settings
from recovea_proxy.headers import split_request_headers
from recovea_proxy.levers import ChainBook, Lever, LeverChain, LeverRequest
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.policy import DEFAULT_POLICY
from recovea_proxy.record import RequestRecord
from recovea_proxy.runtime import Runtime, open_runtime
from recovea_proxy.sources import ReplayPlan, ReplaySource
from recovea_proxy.surfaces import SurfaceMap
from tests.conftest import FAKE_OPENAI_KEY, upstream_env
from tests.support import MockServer, Postgres, metric_value

# Two spaces after the colon: any re-serialization of the body would show.
CLIENT_BODY = b'{"model":  "gpt-4o", "messages": [{"role": "user", "content": "lever-7c1e"}]}'


class _Lever:
    """What every test lever shares: it applies to every request."""

    budget_s: float | None = None

    def applies(self, request: LeverRequest) -> bool:
        return True


class RewritesThenFails(_Lever):
    """A lever that changes everything it may change, then raises."""

    name = "cache"

    async def before(self, request: LeverRequest) -> str:
        request.body = b'{"model":"gpt-4o-mini","messages":[]}'
        assert request.parsed is not None
        request.parsed["model"] = "gpt-4o-mini"
        request.parsed["stream_options"] = {"include_usage": False}
        record = request.record
        record.model = "gpt-4o-mini"
        record.realized_model = "gpt-4o-mini"
        record.cache_hit = True
        record.cache_type = "exact"
        record.dedup_singleflight = True
        record.usage.input_tokens = 12
        request.answer = ReplaySource(
            200, ReplayPlan([(b"content-type", b"application/json")]), [b"{}"]
        )
        request.observers.append(_NoObserver())
        request.cache_key = b"k"
        raise RuntimeError("cache backend exploded")


class Raises(_Lever):
    """A lever that fails at once."""

    name = "cache"

    async def before(self, request: LeverRequest) -> str:
        raise ValueError("broken")


class Hangs(_Lever):
    """A lever that waits past its budget (a network store that never answers)."""

    name = "cache"
    budget_s = 0.05

    async def before(self, request: LeverRequest) -> str:
        request.body = b"{}"
        await asyncio.Event().wait()
        return "miss"


class Working(_Lever):
    name = "slim"

    async def before(self, request: LeverRequest) -> str:
        request.body = request.body.replace(b"  ", b" ")
        return "hit"


class _NoObserver:
    def begin(self, source: object) -> None:
        return None

    def feed(self, chunk: bytes) -> None:
        return None

    def close(self) -> None:
        return None


def lever_request() -> LeverRequest:
    record = RequestRecord(
        request_id="r", trace_id="t", started_ns=time.perf_counter_ns(), ts_epoch_ms=0
    )
    record.model = "gpt-4o"
    surface = SurfaceMap().resolve(b"/v1/chat/completions")
    assert surface is not None
    headers = split_request_headers([(b"content-type", b"application/json")])
    return LeverRequest(
        record, surface, headers, CLIENT_BODY, orjson.loads(CLIENT_BODY), DEFAULT_POLICY
    )


def test_a_faulty_lever_is_recorded_counted_and_undone() -> None:
    """A lever that rewrites the body, the parsed body and the record, answers, attaches
    an observer, then raises, leaves all of them as they were before it ran; `error` is
    marked, the row says it fell back to the baseline, and the fault is counted."""
    request = lever_request()
    metrics = GatewayMetrics()
    asyncio.run(LeverChain((RewritesThenFails(),), metrics).run(request))
    record = request.record
    assert record.levers_fired == {"cache": "error"}
    assert record.fell_back is True
    assert request.body == CLIENT_BODY
    assert request.parsed == orjson.loads(CLIENT_BODY)
    assert (record.model, record.realized_model) == ("gpt-4o", None)
    assert (record.cache_hit, record.cache_type) == (False, None)
    assert record.dedup_singleflight is False
    assert record.usage.input_tokens is None
    assert (request.answer, request.observers, request.cache_key) == (None, [], None)
    assert _faults(metrics, "cache:RuntimeError") == 1


def test_a_lever_past_its_budget_is_a_fault_undone() -> None:
    """A lever that outlasts its budget is stopped there: `error`, counted as a timeout,
    its rewrite undone, the next lever still runs."""
    request = lever_request()
    metrics = GatewayMetrics()
    asyncio.run(LeverChain((Hangs(), Working()), metrics).run(request))
    assert request.record.levers_fired == {"cache": "error", "slim": "hit"}
    assert request.record.fell_back is True
    assert request.body == CLIENT_BODY.replace(b"  ", b" ")
    assert _faults(metrics, "cache:timeout") == 1


def test_a_working_lever_reports_its_outcome() -> None:
    """A lever's own outcome lands on the record; its rewrite is kept."""
    request = lever_request()
    asyncio.run(LeverChain((Working(),), GatewayMetrics()).run(request))
    assert request.record.levers_fired == {"slim": "hit"}
    assert request.record.fell_back is False
    assert request.body == CLIENT_BODY.replace(b"  ", b" ")


class AnswersAtOnce(_Lever):
    """A lever that never waits: `before` returns its word, not a coroutine."""

    name = "dedup"

    def before(self, request: LeverRequest) -> str:
        return "miss"


class ContainedRaises(_Lever):
    """A lever that promises to change nothing before it may fail, and fails."""

    name = "cache"
    contained = True

    def before(self, request: LeverRequest) -> str:
        raise KeyError("store index")


def test_levers_that_answer_at_once_or_fail_contained_are_recorded() -> None:
    """A lever may answer without a coroutine; a `contained` lever's fault (the chain
    takes no snapshot for it) is still `error`, counted, and the next lever runs."""
    request = lever_request()
    metrics = GatewayMetrics()
    asyncio.run(LeverChain((ContainedRaises(), AnswersAtOnce()), metrics).run(request))
    assert request.record.levers_fired == {"cache": "error", "dedup": "miss"}
    assert request.record.fell_back is True
    assert request.body == CLIENT_BODY
    assert _faults(metrics, "cache:KeyError") == 1


class NotForThis(_Lever):
    """A lever with nothing to do for the request."""

    name = "routing"

    def applies(self, request: LeverRequest) -> bool:
        return False

    async def before(self, request: LeverRequest) -> str:
        raise AssertionError("a lever that does not apply is not run")


def test_a_lever_that_does_not_apply_is_skipped_without_running() -> None:
    """A lever with nothing to do is recorded as `skip` and never run."""
    request = lever_request()
    asyncio.run(LeverChain((NotForThis(), Working()), GatewayMetrics()).run(request))
    assert request.record.levers_fired == {"routing": "skip", "slim": "hit"}


def test_chains_are_built_once_per_policy() -> None:
    """The chain of a policy is built the first time it is seen, then reused."""
    built: list[object] = []

    def build(policy: object) -> tuple[Lever, ...]:
        built.append(policy)
        return (Working(),)

    book = ChainBook(build, GatewayMetrics())
    first = book.chain_for(DEFAULT_POLICY)
    assert first is not None and book.chain_for(DEFAULT_POLICY) is first
    assert built == [DEFAULT_POLICY]


@pytest.mark.parametrize(
    "lever", [RewritesThenFails(), Raises(), Hangs()], ids=lambda lever: type(lever).__name__
)
async def test_a_faulty_lever_sends_the_callers_request_upstream(
    mock: MockServer,
    postgres: Postgres,
    db_env: dict[str, str],
    tmp_path: Path,
    lever: Lever,
) -> None:
    """Through the real pipeline (real runtime, database and mock provider): with a lever
    that raises, one that hangs past its budget, or one that corrupts the request and
    then raises, the provider receives the caller's bytes, the caller gets the
    provider's answer, and the ledger row says `error` for the lever, on the caller's
    model, fallen back to the baseline."""
    settings = Settings.from_env(
        {
            **db_env,
            **upstream_env(mock),
            "RECOVEA_DATA_DIR": str(tmp_path),
            "RECOVEA_PASSTHROUGH": "on",
            "RECOVEA_LOG_FORMAT": "json",
            "RECOVEA_METER_FLUSH_INTERVAL_S": "0.05",
        }
    )
    app = GatewayApp()  # the gateway's dispatch, without its lifespan: the runtime is ours
    metrics = GatewayMetrics()
    sent: list[Message] = []
    await asyncio.to_thread(mock.clear)

    async with open_runtime(settings, metrics) as runtime:
        runtime.chains = ChainBook(lambda policy: (lever,), metrics)
        await app(_scope(runtime), _receive_once(CLIENT_BODY), _collect(sent))
    # Leaving the runtime flushed the meter: the row is in the database.

    start, body = sent[0], b"".join(m.get("body", b"") for m in sent[1:])
    assert start["status"] == 200
    assert orjson.loads(body)["object"] == "chat.completion"
    arrived = [r for r in await asyncio.to_thread(mock.requests) if _marked(r)]
    assert len(arrived) == 1
    assert arrived[0]["body"] == orjson.loads(CLIENT_BODY)
    assert arrived[0]["body_bytes"] == len(CLIENT_BODY)
    assert metric_value(_exposition(metrics), "gateway_fail_open_total", layer="lever") == 1

    request_id = dict(start["headers"])[b"x-request-id"].decode()
    conn = await asyncpg.connect(postgres.url)
    try:
        row = await conn.fetchrow(
            "SELECT levers_fired, baseline_model, realized_model, cache_hit, status,"
            " fell_back_to_baseline FROM recovea.request_events WHERE request_id = $1",
            uuid.UUID(request_id),
        )
    finally:
        await conn.close()
    assert row is not None
    assert orjson.loads(row["levers_fired"]) == {"cache": "error"}
    assert (row["baseline_model"], row["realized_model"]) == ("gpt-4o", "gpt-4o")
    assert (row["cache_hit"], row["status"]) == (False, "success")
    assert row["fell_back_to_baseline"] is True


def _faults(metrics: GatewayMetrics, reason: str) -> float:
    return metric_value(_exposition(metrics), "gateway_fail_open_total", reason=reason)


def _scope(runtime: Runtime) -> Scope:
    """What uvicorn hands the app for the caller's request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
        "state": {"runtime": runtime},
        "headers": [
            (b"host", b"gateway"),
            (b"authorization", f"Bearer {FAKE_OPENAI_KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(CLIENT_BODY)).encode()),
        ],
    }


def _receive_once(body: bytes) -> Receive:
    """The request body in one message; afterwards the client stays connected."""
    messages: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # never disconnects
        raise AssertionError("unreachable")

    return receive


def _collect(sent: list[Message]) -> Send:
    async def send(message: Message) -> None:
        sent.append(message)

    return send


def _marked(request: dict[str, Any]) -> bool:
    return b"lever-7c1e" in orjson.dumps(request.get("body"))


def _exposition(metrics: GatewayMetrics) -> str:
    return generate_latest(metrics.registry).decode()


class WaitsThenMisses(_Lever):
    """A lever that must wait (a shared store's lookup), without a budget."""

    name = "cache"

    async def before(self, request: LeverRequest) -> str:
        await asyncio.sleep(0)
        return "miss"


class SharedNames(_Lever):
    """A lever that reports under a second name too, as the cache lever does (`dedup`)."""

    name = "cache"
    also = ("dedup",)
    contained = True

    def __init__(self, *, applies: bool, raises: bool) -> None:
        self._applies = applies
        self._raises = raises

    def applies(self, request: LeverRequest) -> bool:
        return self._applies

    def before(self, request: LeverRequest) -> str:
        if self._raises:
            raise OSError("store gone")
        request.record.levers_fired["dedup"] = "miss"
        return "miss"


def test_a_chain_whose_levers_never_wait_is_run_at_once() -> None:
    """`start` runs levers that answer at once to the end and leaves nothing to await
    (the pipeline then costs no coroutine for the chain)."""
    request = lever_request()
    metrics = GatewayMetrics()
    pending = LeverChain((ContainedRaises(), AnswersAtOnce()), metrics).start(request)
    assert pending is None
    assert request.record.levers_fired == {"cache": "error", "dedup": "miss"}
    assert _faults(metrics, "cache:KeyError") == 1


def test_a_lever_that_waits_hands_the_rest_of_the_chain_back() -> None:
    """`start` stops at a lever that waits: the outcome, and the levers after it, come
    from what it returns, once awaited."""
    request = lever_request()
    pending = LeverChain((WaitsThenMisses(), AnswersAtOnce()), GatewayMetrics()).start(request)
    assert pending is not None
    assert request.record.levers_fired == {}
    asyncio.run(_awaited(pending))
    assert request.record.levers_fired == {"cache": "miss", "dedup": "miss"}


def test_a_lever_past_its_budget_is_undone_when_started_too() -> None:
    """A lever with a budget runs under its timer from `start` as from `run`."""
    request = lever_request()
    metrics = GatewayMetrics()
    pending = LeverChain((Hangs(), Working()), metrics).start(request)
    assert pending is not None
    asyncio.run(_awaited(pending))
    assert request.record.levers_fired == {"cache": "error", "slim": "hit"}
    assert request.body == CLIENT_BODY.replace(b"  ", b" ")
    assert _faults(metrics, "cache:timeout") == 1


@pytest.mark.parametrize(
    ("applies", "raises", "fired"),
    [
        (False, False, {"cache": "skip", "dedup": "skip"}),
        (True, True, {"cache": "error", "dedup": "skip"}),
        (True, False, {"cache": "miss", "dedup": "miss"}),
    ],
)
def test_a_lever_with_a_second_name_reports_under_both(
    applies: bool, raises: bool, fired: dict[str, str]
) -> None:
    """The cache lever is also `dedup`: skipped or failed, both names say so."""
    request = lever_request()
    chain = LeverChain((SharedNames(applies=applies, raises=raises),), GatewayMetrics())
    assert chain.start(request) is None
    assert request.record.levers_fired == fired
    assert request.record.fell_back is raises


async def _awaited(pending: Awaitable[None]) -> None:
    await pending
