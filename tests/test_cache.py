"""The exact cache: a deterministic request asked again is answered from the cache —
the same bytes, JSON or stream — without calling the provider, and the ledger says
so; what may not be shared never is."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from recovea_proxy.meter.verify import decode_token, split_response
from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, cli_json, grew, metric_value


@pytest.fixture(scope="module")
def cached(mock: MockServer, workdir: Any, db_env: dict[str, str]) -> Iterator[Gateway]:
    gateway = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "cache-main")


def ask(
    gateway: Gateway, tenant: Tenant, prompt: str, *, stream: bool = False, **fields: Any
) -> httpx.Response:
    headers = {**tenant.bearer, **fields.pop("headers", {})}
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "stream": stream,
        **fields,
    }
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def test_a_deterministic_json_answer_is_served_again_from_the_cache(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The second identical request (temperature 0) is a hit: the same body, one call
    upstream, `x-recovea-cache: hit`, and a row with cache_hit, cache_type exact and
    the original's usage; its receipt says cache_hit and hashes what it received.
    /metrics counts the miss, the kept answer and the hit."""
    before = cached.metrics()
    first = ask(cached, tenant, "cache-json-1")
    second = ask(cached, tenant, "cache-json-1")
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-recovea-cache"] == "miss"
    assert second.headers["x-recovea-cache"] == "hit"
    assert second.content == first.content
    assert mock.calls_holding("cache-json-1") == 1
    row = stored(cached, tenant, "requests", second.headers["x-request-id"])
    original = stored(cached, tenant, "requests", first.headers["x-request-id"])
    assert (row["cache_hit"], row["cache_type"]) == (True, "exact")
    assert row["levers_fired"]["cache"] == "hit"
    assert (row["input_tokens"], row["output_tokens"]) == (
        original["input_tokens"],
        original["output_tokens"],
    )
    receipt = decode_token(second.headers["recovea-receipt"]).payload
    assert receipt["cache_hit"] is True
    after = cached.metrics()
    assert grew(before, after, "recovea_cache_requests_total", outcome="miss") == 1
    assert grew(before, after, "recovea_cache_requests_total", outcome="hit") == 1
    assert grew(before, after, "recovea_cache_answers_total", outcome="kept") == 1
    assert grew(before, after, "recovea_cache_entries") == 1
    assert grew(before, after, "recovea_cache_bytes") > len(first.content)
    assert grew(before, after, "recovea_cache_redis_hits_total") == 0


def test_every_hit_of_a_json_answer_records_the_original_usage_and_headers(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Later hits of one entry copy the usage the first hit read from the stored body
    (and the headers it worked out): each hit's row carries the original's counts and
    finish reason, each response the provider's headers less those never replayed."""
    first = ask(cached, tenant, "cache-json-again")
    hits = [ask(cached, tenant, "cache-json-again") for _ in range(3)]
    assert [r.headers["x-recovea-cache"] for r in hits] == ["hit"] * 3
    assert mock.calls_holding("cache-json-again") == 1
    columns = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
    original = stored(cached, tenant, "requests", first.headers["x-request-id"])
    assert original["output_tokens"] > 0 and original["finish_reason"] == "stop"
    for hit in hits:
        row = stored(cached, tenant, "requests", hit.headers["x-request-id"])
        assert [row[c] for c in (*columns, "finish_reason", "status")] == [
            original[c] for c in (*columns, "finish_reason", "status")
        ]
        assert row["cache_hit"] is True
        assert hit.content == first.content
        assert hit.headers["content-type"] == first.headers["content-type"]
        assert (
            hit.headers["x-recovea-upstream-request-id"]
            == first.headers["x-recovea-upstream-request-id"]
        )
        assert int(hit.headers["age"]) >= 0 and "set-cookie" not in hit.headers
        assert hit.headers["x-request-id"] != first.headers["x-request-id"]


def test_short_and_long_questions_alike_are_served_again(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A request of a few hundred bytes is keyed by its canonical bytes, one past a
    kilobyte by their SHA-256: either is a hit when asked again, with its keys in
    another order, and a miss when one word changes."""
    for prompt in ("cache-size-short", "cache-size-long " + "padding " * 300):
        first = ask(cached, tenant, prompt, max_tokens=64)
        again = httpx.post(
            f"{cached.url}/v1/chat/completions",
            content=orjson.dumps(
                {
                    "max_tokens": 64,
                    "stream": False,
                    "temperature": 0,
                    "messages": [{"content": prompt, "role": "user"}],
                    "model": "gpt-4o-mini",
                }
            ),
            headers={**tenant.bearer, "content-type": "application/json"},
            timeout=30,
        )
        changed = ask(cached, tenant, prompt + " changed", max_tokens=64)
        assert [r.headers["x-recovea-cache"] for r in (first, again, changed)] == [
            "miss",
            "hit",
            "miss",
        ]
        assert again.content == first.content
        assert mock.calls_holding(prompt) == 2  # the first and the changed one


def test_a_stream_is_replayed_as_it_came(cached: Gateway, tenant: Tenant, mock: MockServer) -> None:
    """A streamed answer asked again replays the same events (receipt line aside), with
    the original's usage in the row; the provider is called once."""
    first = ask(cached, tenant, "cache-stream-1", stream=True)
    second = ask(cached, tenant, "cache-stream-1", stream=True)
    assert second.headers["x-recovea-cache"] == "hit"
    assert split_response(second.content)[0] == split_response(first.content)[0]
    assert mock.calls_holding("cache-stream-1") == 1
    row = stored(cached, tenant, "requests", second.headers["x-request-id"])
    assert row["cache_hit"] is True
    assert row["output_tokens"] == 16


def test_requests_that_may_not_be_shared_always_go_upstream(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Not deterministic (temperature 1), `n` > 1, `store: true`, and
    `X-Recovea-Cache: skip` are never answered from the cache: `skip`, every time."""
    cases: list[dict[str, Any]] = [
        {"temperature": 1},
        {"n": 2},
        {"store": True},
        {"headers": {"x-recovea-cache": "skip"}},
    ]
    for index, fields in enumerate(cases):
        prompt = f"cache-never-{index}"
        for _ in range(2):
            response = ask(cached, tenant, prompt, **fields)
            assert response.status_code == 200
            assert response.headers["x-recovea-cache"] == "skip"
        assert mock.calls_holding(prompt) == 2, fields


def test_a_responses_request_is_shared_only_when_it_says_store_false(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """OpenAI's Responses API stores what it answers unless the body says `store:
    false`: a deterministic Responses request without it is never shared (as `store:
    true`); with `store: false` the same request is a hit the second time."""
    for prompt, store, outcomes in (
        ("cache-responses-stored", None, ["skip", "skip"]),
        ("cache-responses-unstored", False, ["miss", "hit"]),
    ):
        body: dict[str, Any] = {"model": "gpt-4o-mini", "input": prompt, "temperature": 0}
        if store is not None:
            body["store"] = store
        seen = []
        for _ in range(2):
            response = httpx.post(
                f"{cached.url}/v1/responses", json=body, headers=tenant.bearer, timeout=30
            )
            assert response.status_code == 200, response.text
            seen.append(response.headers["x-recovea-cache"])
        assert seen == outcomes
        assert mock.calls_holding(prompt) == (2 if store is None else 1)


def test_what_the_provider_reads_beside_the_body_keeps_answers_apart(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The same body with another `anthropic-version`, `anthropic-beta` or `OpenAI-Beta`
    header, or another query string, may get another answer: it is not served the
    first one's. Asked again exactly, it is a hit. Other headers (an SDK's own) do not
    keep answers apart."""
    prompt = "cache-beside-body"
    # OpenAI's own mount: on the bare /v1, `anthropic-version` would pick Anthropic
    url = f"{cached.url}/openai/v1/chat/completions"
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}
    body["temperature"] = 0

    def post(query: str = "", **headers: str) -> str:
        response = httpx.post(
            url + query, json=body, headers={**tenant.bearer, **headers}, timeout=30
        )
        assert response.status_code == 200, response.text
        return str(response.headers["x-recovea-cache"])

    assert post() == "miss"
    assert post(**{"x-stainless-retry-count": "1", "user-agent": "other"}) == "hit"
    variants: list[tuple[str, dict[str, str]]] = [
        ("", {"openai-beta": "feature=1"}),
        ("", {"anthropic-beta": "output-128k-2025-02-19"}),
        ("", {"anthropic-version": "2023-06-01"}),
        ("?variant=1", {}),
    ]
    for query, headers in variants:
        assert post(query, **headers) == "miss", (query, headers)
        assert post(query, **headers) == "hit", (query, headers)
    assert mock.calls_holding(prompt) == 1 + len(variants)


def test_a_body_nested_past_what_the_key_can_spell_goes_upstream_unshared(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A deterministic body nested 600 levels deep (the JSON parser reads it; the key's
    canonical form cannot be written past ~250) is answered by the provider each time,
    marked `skip` rather than counted as a lever fault, and its row is whole."""
    prompt = "cache-nested-deep"
    deep = orjson.loads(b"[" * 600 + b"]" * 600)
    for _ in range(2):
        response = ask(cached, tenant, prompt, response_format={"nested": deep})
        assert response.status_code == 200
        assert response.headers["x-recovea-cache"] == "skip"
        row = stored(cached, tenant, "requests", response.headers["x-request-id"])
        assert row["levers_fired"] == {"cache": "skip", "dedup": "skip"}
        assert row["fell_back_to_baseline"] is False
    assert mock.calls_holding(prompt) == 2
    assert metric_value(cached.metrics(), "gateway_fail_open_total", layer="lever") == 0


def test_answers_that_are_not_complete_are_not_kept(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """An answer cut by `max_tokens` (finish reason `length`) or an error is not stored:
    the next identical request goes upstream again."""
    before = cached.metrics()
    for prompt, fields in (
        ("cache-cut", {"max_tokens": 2}),
        ("cache-error", {"headers": {"x-mock-fault": "500"}}),
    ):
        ask(cached, tenant, prompt, **fields)
        again = ask(cached, tenant, prompt, **fields)
        assert again.headers["x-recovea-cache"] == "miss"
        assert mock.calls_holding(prompt) == 2
    after = cached.metrics()
    assert grew(before, after, "recovea_cache_answers_total", outcome="incomplete") == 4
    assert grew(before, after, "recovea_cache_answers_total", outcome="kept") == 0


def test_a_tool_call_is_kept_only_where_the_workspace_allows_it(
    cached: Gateway, tenant: Tenant, mock: MockServer, db_env: dict[str, str]
) -> None:
    """A forced tool call ends with finish reason `stop` (as OpenAI's does), so the
    answer itself is searched: by default it is not kept. A text answer to a request
    that offered tools is kept, and a workspace that allows tool calls keeps them."""
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    forced = {"tools": tools, "tool_choice": {"type": "function", "function": {"name": "lookup"}}}
    before = cached.metrics()
    first = ask(cached, tenant, "cache-tool-call", **forced)
    choice = first.json()["choices"][0]
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "lookup"
    assert choice["finish_reason"] == "stop"
    assert ask(cached, tenant, "cache-tool-call", **forced).headers["x-recovea-cache"] == "miss"
    assert mock.calls_holding("cache-tool-call") == 2
    tool_calls = grew(before, cached.metrics(), "recovea_cache_answers_total", outcome="tool_call")
    assert tool_calls == 2

    ask(cached, tenant, "cache-tool-text", tools=tools)
    assert ask(cached, tenant, "cache-tool-text", tools=tools).headers["x-recovea-cache"] == "hit"

    allowing = make_tenant(db_env, "cache-tools-allowed")
    admin = cli_json(
        "key", "create", "--workspace", allowing.workspace, "--role", "admin", env=db_env
    )
    allowed = httpx.put(
        f"{cached.url}/admin/v1/cache",
        headers={"authorization": f"Bearer {admin['key']}"},
        json={"tool_calls": True},
    )
    assert allowed.status_code == 200
    ask(cached, allowing, "cache-tool-allowed", **forced)
    kept = ask(cached, allowing, "cache-tool-allowed", **forced)
    assert kept.headers["x-recovea-cache"] == "hit"
    assert kept.json()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_mock"
    assert mock.calls_holding("cache-tool-allowed") == 1


def test_an_unknown_cache_directive_is_refused_not_ignored(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """`X-Recovea-Cache` says `skip` or `refresh` (in any case): anything
    else is a 400 `invalid_request` in the surface's shape, and nothing goes upstream
    (a typo of `skip` read as nothing would share an answer meant to be kept apart)."""
    for value in ("skpi", "", "skip, refresh", "no-store"):
        refused = ask(cached, tenant, "cache-bad-directive", headers={"x-recovea-cache": value})
        assert refused.status_code == 400, value
        assert refused.json()["error"]["code"] == "invalid_request"
        assert "X-Recovea-Cache" in refused.json()["error"]["message"]
    anthropic = httpx.post(
        f"{cached.url}/anthropic/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": []},
        headers={**tenant.bearer, "anthropic-version": "2023-06-01", "x-recovea-cache": "x"},
        timeout=30,
    )
    assert anthropic.status_code == 400
    assert anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "invalid_request_error"
    assert mock.calls_holding("cache-bad-directive") == 0
    spaced = ask(cached, tenant, "cache-bad-directive", headers={"x-recovea-cache": "Skip"})
    assert spaced.headers["x-recovea-cache"] == "skip"


def test_refresh_and_max_age_go_upstream_and_refresh_writes(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """`X-Recovea-Cache: refresh` does not read (the provider is called) but writes;
    `Cache-Control: max-age=0` accepts no stored entry."""
    ask(cached, tenant, "cache-refresh")
    refreshed = ask(cached, tenant, "cache-refresh", headers={"x-recovea-cache": "refresh"})
    assert refreshed.headers["x-recovea-cache"] == "miss"
    young = ask(cached, tenant, "cache-refresh", headers={"cache-control": "max-age=0"})
    assert young.headers["x-recovea-cache"] == "miss"
    assert ask(cached, tenant, "cache-refresh").headers["x-recovea-cache"] == "hit"
    assert mock.calls_holding("cache-refresh") == 3
    # A max-age that is no number (a superscript two, which str.isdigit takes and int does not) is
    # ignored, never a fault of the lever
    odd = ask(cached, tenant, "cache-refresh", headers={"cache-control": "max-age=²".encode()})
    assert odd.headers["x-recovea-cache"] == "hit"
    row = stored(cached, tenant, "requests", odd.headers["x-request-id"])
    assert row["levers_fired"]["cache"] == "hit"


def test_cache_control_no_store_and_no_cache_as_http_caches_read_them(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """`Cache-Control: no-store`: the answer is not kept (the same request asked again
    goes upstream), though a stored answer may be served to it; `no-cache`: no stored
    answer is served, the provider's is kept. The header reaches the provider as sent."""
    before = cached.metrics()
    never_kept = ask(cached, tenant, "cache-no-store", headers={"cache-control": "no-store"})
    assert never_kept.headers["x-recovea-cache"] == "miss"
    sent = [r for r in mock.requests() if "cache-no-store" in str(r.get("body"))]
    assert sent[-1]["headers"]["cache-control"] == "no-store"
    assert ask(cached, tenant, "cache-no-store").headers["x-recovea-cache"] == "miss"
    assert mock.calls_holding("cache-no-store") == 2
    # kept by the plain request just now: no-store may read it
    served = ask(cached, tenant, "cache-no-store", headers={"cache-control": "No-Store"})
    assert served.headers["x-recovea-cache"] == "hit"
    assert mock.calls_holding("cache-no-store") == 2

    ask(cached, tenant, "cache-no-cache")
    fresh = ask(cached, tenant, "cache-no-cache", headers={"cache-control": "no-cache"})
    assert fresh.headers["x-recovea-cache"] == "miss"
    assert mock.calls_holding("cache-no-cache") == 2
    row = stored(cached, tenant, "requests", fresh.headers["x-request-id"])
    assert (row["cache_hit"], row["levers_fired"]["cache"]) == (False, "miss")
    # both together: neither read nor written
    both = ask(cached, tenant, "cache-no-cache", headers={"cache-control": "no-cache, no-store"})
    assert both.headers["x-recovea-cache"] == "miss"
    assert ask(cached, tenant, "cache-no-cache").headers["x-recovea-cache"] == "hit"
    assert mock.calls_holding("cache-no-cache") == 3
    no_store = grew(before, cached.metrics(), "recovea_cache_answers_total", outcome="no_store")
    assert no_store == 2


def test_a_hit_says_its_age_and_a_hostile_max_age_is_no_fault(
    cached: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """A hit carries `age` (seconds since the answer was stored; a miss has none); a
    max-age of 5,000 digits counts as 2^31 seconds (RFC 9111), not a fault of the
    lever: the answer is served, nothing falls back."""
    first = ask(cached, tenant, "cache-age")
    assert "age" not in first.headers
    for stream in (False, True):
        if stream:
            ask(cached, tenant, "cache-age", stream=True)
        hit = ask(cached, tenant, "cache-age", stream=stream)
        assert hit.headers["x-recovea-cache"] == "hit"
        assert 0 <= int(hit.headers["age"]) <= 60
    huge = ask(cached, tenant, "cache-age", headers={"cache-control": "max-age=" + "9" * 5000})
    assert huge.headers["x-recovea-cache"] == "hit"
    row = stored(cached, tenant, "requests", huge.headers["x-request-id"])
    assert (row["levers_fired"]["cache"], row["fell_back_to_baseline"]) == ("hit", False)
    assert metric_value(cached.metrics(), "gateway_fail_open_total", layer="lever") == 0


def test_entries_never_cross_workspaces(
    cached: Gateway, tenant: Tenant, mock: MockServer, db_env: dict[str, str]
) -> None:
    """Another workspace asking the same thing misses: keys hold the workspace."""
    other = make_tenant(db_env, "cache-other")
    ask(cached, tenant, "cache-shared-question")
    assert ask(cached, other, "cache-shared-question").headers["x-recovea-cache"] == "miss"
    assert mock.calls_holding("cache-shared-question") == 2


def test_an_answer_larger_than_the_entry_bound_is_not_kept(
    mock: MockServer, workdir: Any, db_env: dict[str, str], tenant: Tenant
) -> None:
    """Past `RECOVEA_CACHE_ENTRY_MAX_KB` (4 KB here) an answer is passed on but not
    stored: the same request goes upstream again. A stream under the bound is kept
    (the recorder reads the buffer of the flight its request leads)."""
    small = Gateway({**upstream_env(mock), **db_env, "RECOVEA_CACHE_ENTRY_MAX_KB": "4"}, workdir)
    try:
        for prompt, chunks, kept in (
            ("cache-bound-long", "40", False),
            ("cache-bound-short", "1", True),
        ):
            headers = {"x-mock-chunks": chunks}
            first = ask(small, tenant, prompt, stream=True, headers=headers)
            again = ask(small, tenant, prompt, stream=True, headers=headers)
            assert first.status_code == again.status_code == 200
            if not kept:
                assert len(first.content) > 8192  # the provider's part alone is past 4 KB
            assert again.headers["x-recovea-cache"] == ("hit" if kept else "miss")
            assert mock.calls_holding(prompt) == (1 if kept else 2)
        too_large = metric_value(
            small.metrics(), "recovea_cache_answers_total", outcome="too_large"
        )
        assert too_large == 2
    finally:
        small.stop()
