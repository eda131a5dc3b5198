"""Rate and concurrency limits (`recovea limit set`, `/admin/v1/limits`): a request
over a limit gets 429 `rate_limited` in its surface's shape with `retry-after` and
the provider's rate-limit headers, so the official SDKs wait and retry on their own;
tokens are charged an estimate and trued up with the real usage; a cache hit is a
request but no tokens; concurrency slots free when a request ends; the admin API and
the CLI set, list and clear limits (Redis-shared limits: `test_limits_redis.py`).

Real gateway processes, the mock provider and Postgres.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant
from tests.limits_support import (
    FAST_WINDOW_S,
    SLOW_WINDOW_S,
    Limited,
    chat,
    duration_s,
)
from tests.support import Gateway, MockServer, cli, cli_json


@pytest.fixture(scope="module")
def fast(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_LIMIT_WINDOW_S": str(FAST_WINDOW_S)}, workdir
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def slow(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway(
        {**upstream_env(mock), **db_env, "RECOVEA_LIMIT_WINDOW_S": str(SLOW_WINDOW_S)}, workdir
    )
    yield gw
    gw.stop()


def test_over_the_rpm_the_caller_gets_429_with_the_openai_headers(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """rpm 2: the third request is refused 429 `rate_limited` in OpenAI's shape, with
    `retry-after`, `retry-after-ms` and `x-ratelimit-*-requests` saying the truth: 0
    left, the next one in a window / rpm, the bucket full in a window."""
    limited = Limited(db_env, "limits-rpm")
    limited.set(slow, rpm=2)
    assert [chat(slow, limited.tenant).status_code for _ in range(2)] == [200, 200]
    refused = chat(slow, limited.tenant)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    headers = refused.headers
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    wait_s = SLOW_WINDOW_S / 2
    assert wait_s - 5 < int(headers["retry-after-ms"]) / 1000 <= wait_s
    assert int(headers["retry-after"]) == pytest.approx(wait_s, abs=5)
    # a full bucket again in a whole window (10 h), in OpenAI's `6m0s` format
    assert duration_s(headers["x-ratelimit-reset-requests"]) == pytest.approx(SLOW_WINDOW_S, abs=5)
    assert headers["x-recovea-limit"] == "requests; scope=workspace"
    assert "rcv_" not in refused.text


def test_the_anthropic_surface_gets_its_own_shape_and_headers(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """On /v1/messages the refusal is Anthropic's error shape with
    `anthropic-ratelimit-requests-*` (the reset an RFC 3339 time) and `retry-after`."""
    limited = Limited(db_env, "limits-anthropic")
    limited.set(slow, rpm=1)

    def ask() -> httpx.Response:
        return httpx.post(
            f"{slow.url}/v1/messages",
            json={
                "model": "claude-3-5-haiku-latest",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={**limited.tenant.bearer, "anthropic-version": "2023-06-01"},
            timeout=30,
        )

    assert ask().status_code == 200
    refused = ask()
    assert refused.status_code == 429
    assert refused.json()["type"] == "error"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-limit"] == "1"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert refused.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert int(refused.headers["retry-after"]) > 0


def test_the_openai_sdk_waits_the_stated_time_and_then_succeeds(
    fast: Gateway, db_env: dict[str, str]
) -> None:
    """rpm 1 over a 2 s window: the SDK (max_retries=2) is refused once, waits the
    `retry-after-ms` it was given (about 2 s) on its own, and succeeds."""
    limited = Limited(db_env, "limits-sdk-openai")
    limited.set(fast, rpm=1)
    client = openai.OpenAI(base_url=f"{fast.url}/v1", api_key=limited.tenant.key, max_retries=2)
    with client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}]
        )
        started = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "two"}]
        )
        waited = time.monotonic() - started
    assert raw.http_response.status_code == 200
    assert raw.retries_taken == 1
    assert FAST_WINDOW_S * 0.8 < waited < FAST_WINDOW_S * 2


def test_the_anthropic_sdk_waits_the_stated_time_and_then_succeeds(
    fast: Gateway, db_env: dict[str, str]
) -> None:
    """The same with the Anthropic SDK on /v1/messages."""
    limited = Limited(db_env, "limits-sdk-anthropic")
    limited.set(fast, rpm=1)
    client = anthropic.Anthropic(base_url=fast.url, api_key=limited.tenant.key, max_retries=2)
    with client:
        ask = {
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 32,
            "messages": [{"role": "user", "content": "hi"}],
        }
        client.messages.create(**ask)  # type: ignore[call-overload]
        started = time.monotonic()
        raw = client.messages.with_raw_response.create(**ask)  # type: ignore[call-overload]
        waited = time.monotonic() - started
    assert raw.http_response.status_code == 200
    assert raw.retries_taken == 1
    assert FAST_WINDOW_S * 0.8 < waited < FAST_WINDOW_S * 2


def test_tokens_are_estimated_then_trued_up_and_a_cache_hit_costs_none(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """tpm 5000: a request asking `max_tokens` 2000 is charged about 2000 up front, then
    only the 28 tokens it used; its cache hit is charged its estimate, then nothing.
    A request whose estimate is larger than what is left is refused, and its
    `x-ratelimit-remaining-tokens` shows the trued-up level: 5000 - 28."""
    limited = Limited(db_env, "limits-tpm")
    limited.set(slow, tpm=5000)
    first = chat(slow, limited.tenant, prompt="true-up", max_tokens=2000, temperature=0)
    assert first.status_code == 200
    used = first.json()["usage"]["total_tokens"]
    hit = chat(slow, limited.tenant, prompt="true-up", max_tokens=2000, temperature=0)
    assert hit.headers["x-recovea-cache"] == "hit"
    # each of these fits only when what came before was trued up
    for n in range(2):
        again = chat(slow, limited.tenant, prompt=f"fits-{n}", max_tokens=2000)
        assert again.status_code == 200, again.text
        used += again.json()["usage"]["total_tokens"]
    refused = chat(slow, limited.tenant, prompt="too-much", max_tokens=4990)
    assert refused.status_code == 429
    assert refused.headers["x-ratelimit-limit-tokens"] == "5000"
    remaining = int(refused.headers["x-ratelimit-remaining-tokens"])
    assert 5000 - used <= remaining <= 5000 - used + 5  # + what refilled meanwhile
    assert refused.headers["x-recovea-limit"] == "tokens; scope=workspace"


def test_a_cache_hit_counts_as_a_request(slow: Gateway, db_env: dict[str, str]) -> None:
    """rpm 2: a miss and its hit take both; the third request is refused."""
    limited = Limited(db_env, "limits-hit-rpm")
    limited.set(slow, rpm=2)
    assert chat(slow, limited.tenant, prompt="hit-rpm", temperature=0).status_code == 200
    hit = chat(slow, limited.tenant, prompt="hit-rpm", temperature=0)
    assert hit.headers["x-recovea-cache"] == "hit"
    assert chat(slow, limited.tenant, prompt="other").status_code == 429


def test_a_limit_for_one_model_or_one_key_leaves_the_rest_alone(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """rpm 1 for gpt-4o-mini on one key: that key's second gpt-4o-mini request is
    refused (scope key); its gpt-4o requests and another key's are not."""
    limited = Limited(db_env, "limits-model")
    other = cli_json("key", "create", "--workspace", limited.tenant.workspace, env=db_env)
    limit = limited.set(slow, key_id=limited.tenant.key_id, model="gpt-4o-mini", rpm=1)
    assert (limit["scope"], limit["model"], limit["rpm"]) == ("key", "gpt-4o-mini", 1)
    assert chat(slow, limited.tenant).status_code == 200
    refused = chat(slow, limited.tenant)
    assert refused.status_code == 429
    assert refused.headers["x-recovea-limit"] == "requests; scope=key"
    assert chat(slow, limited.tenant, model="gpt-4o").status_code == 200
    other_key = Tenant(limited.tenant.workspace, other["key"], other["key_id"])
    assert chat(slow, other_key).status_code == 200


def test_project_and_team_limits_apply_to_their_keys(slow: Gateway, db_env: dict[str, str]) -> None:
    """A project's rpm 1 binds its key; a team's rpm 1 binds the key in that team."""
    limited = Limited(db_env, "limits-project", project="alpha", team="red")
    assert limited.set(slow, project="alpha", rpm=5)["project"] == "alpha"
    limited.set(slow, team="red", rpm=1)
    assert chat(slow, limited.tenant).status_code == 200
    refused = chat(slow, limited.tenant)
    assert refused.headers["x-recovea-limit"] == "requests; scope=team"


async def test_concurrency_refuses_the_extra_stream_and_frees_a_slot_when_one_ends(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """concurrency 2: with two long streams open, a third request is refused 429; when
    one stream ends (read to its end), a new request is admitted."""
    limited = Limited(db_env, "limits-concurrency")
    limited.set(slow, concurrency=2)
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "long"}],
    }
    slow_stream = {**limited.tenant.bearer, "x-mock-chunks": "40", "x-mock-chunk-delay-ms": "100"}
    short_stream = {**limited.tenant.bearer, "x-mock-chunks": "3", "x-mock-chunk-delay-ms": "100"}
    async with httpx.AsyncClient(base_url=slow.url, timeout=30) as client:
        url = "/v1/chat/completions"
        long_one = await client.send(
            client.build_request("POST", url, json=body, headers=slow_stream), stream=True
        )
        short_one = await client.send(
            client.build_request("POST", url, json=body, headers=short_stream), stream=True
        )
        try:
            assert (long_one.status_code, short_one.status_code) == (200, 200)
            third = await client.post(url, json=body, headers=limited.tenant.bearer)
            assert third.status_code == 429
            assert third.headers["x-recovea-limit"] == "concurrency; scope=workspace"
            assert third.headers["retry-after"] == "1"
            await short_one.aread()  # that stream ends: its slot is freed

            async def admitted() -> httpx.Response:
                deadline = time.monotonic() + 10
                while True:
                    answer = await client.post(url, json=body, headers=limited.tenant.bearer)
                    if answer.status_code == 200 or time.monotonic() > deadline:
                        return answer
                    await asyncio.sleep(0.02)

            assert (await admitted()).status_code == 200
        finally:
            await long_one.aclose()
            await short_one.aclose()


async def test_a_websocket_session_holds_a_slot_for_its_lifetime(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """concurrency 1: while a Realtime session is open, a second handshake is refused
    429 (OpenAI's shape, `x-recovea-limit`); once the first closes, a new one opens."""
    limited = Limited(db_env, "limits-websocket")
    limited.set(slow, concurrency=1)
    url = slow.url.replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime-mini"
    auth = {"authorization": f"Bearer {limited.tenant.key}"}
    first = await connect(url, additional_headers=auth)
    try:
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, additional_headers=auth)
        response = refused.value.response
        assert response.status_code == 429
        assert orjson.loads(response.body)["error"]["code"] == "rate_limited"
        assert response.headers["x-recovea-limit"] == "concurrency; scope=workspace"
    finally:
        await first.close()

    async def reopened() -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                again = await connect(url, additional_headers=auth)
            except InvalidStatus:
                await asyncio.sleep(0.02)
                continue
            await again.close()
            return True
        return False

    assert await reopened()


def test_the_admin_api_validates_lists_and_removes_limits(
    slow: Gateway, db_env: dict[str, str]
) -> None:
    """PUT refuses bad input with 400 (a clear message), a member key gets 403; GET
    lists the workspace's limits; DELETE removes one (404 for an unknown id)."""
    limited = Limited(db_env, "limits-admin", project="p1")
    url = f"{slow.url}/admin/v1/limits"
    for bad, says in (
        ({"rpm": -1}, "rpm"),
        ({"rpm": "ten"}, "rpm"),
        ({"tpm": True}, "tpm"),
        ({"concurrency": 0}, "at least one"),
        ({"rpm": 5, "on_failure": "sometimes"}, "on_failure"),
        ({"rpm": 5, "project": "nope"}, "no project"),
        ({"rpm": 5, "project": "p1", "team": "t"}, "at most one"),
        ({"rpm": 5, "key_id": "not-a-uuid"}, "key id"),
        ({"rpm": 5, "model": ""}, "model"),
        ({"rps": 5}, "Unknown field"),
    ):
        refused = httpx.put(url, headers=limited.admin, json=bad)
        assert refused.status_code == 400, bad
        assert says in refused.json()["error"]["message"], (bad, refused.text)
    assert httpx.put(url, headers=limited.tenant.bearer, json={"rpm": 5}).status_code == 403
    made = limited.set(slow, project="p1", rpm=10, tpm=1000, on_failure="closed")
    assert (made["scope"], made["on_failure"]) == ("project", "closed")
    changed = limited.set(slow, project="p1", tpm=0)  # 0 removes a bound, the rest stays
    assert (changed["rpm"], changed["tpm"], changed["on_failure"]) == (10, None, "closed")
    listed = httpx.get(url, headers=limited.admin).json()["data"]
    assert [item["id"] for item in listed] == [made["id"]]
    assert httpx.delete(f"{url}/{made['id']}", headers=limited.admin).status_code == 200
    assert httpx.delete(f"{url}/{made['id']}", headers=limited.admin).status_code == 404
    assert httpx.get(url, headers=limited.admin).json()["data"] == []


def test_the_cli_sets_shows_and_clears_and_refuses_bad_input(db_env: dict[str, str]) -> None:
    """`recovea limit set|show|clear`; bad input exits 1 with one line."""
    tenant = make_tenant(db_env, "limits-cli", team="blue")
    ws = tenant.workspace
    made = cli_json(
        "limit",
        "set",
        "--workspace",
        ws,
        "--team",
        "blue",
        "--rpm",
        "60",
        "--concurrency",
        "4",
        env=db_env,
    )["limit"]
    assert (made["scope"], made["team"], made["rpm"], made["concurrency"]) == (
        "team",
        "blue",
        60,
        4,
    )
    shown = cli("limit", "show", "--workspace", ws, env=db_env)
    assert shown.returncode == 0
    assert "team blue: rpm 60, concurrency 4; fails open" in shown.stdout
    for args, says in (
        (("--rpm", "-3"), "rpm"),
        (("--team", "nobody", "--rpm", "3"), "no team"),
        (("--key", "00000000-0000-0000-0000-000000000000", "--rpm", "3"), "no key"),
        ((), "at least one"),
    ):
        done = cli("limit", "set", "--workspace", ws, *args, env=db_env)
        assert done.returncode == 1, args
        assert done.stderr.strip().count("\n") == 0
        assert says in done.stderr, (args, done.stderr)
    assert cli_json("limit", "clear", made["id"], "--workspace", ws, env=db_env)["removed"]
    assert cli_json("limit", "show", "--workspace", ws, env=db_env)["data"] == []
    assert cli("limit", "clear", made["id"], "--workspace", ws, env=db_env).returncode == 1


# With Redis --------------------------------------------------------------------------
