"""The exact cache and singleflight as clients we did not write see them.

A hit replays the stored bytes, a follower reads the shared call's: every client must
parse them exactly as it parsed the original answer. Each client here (the official
OpenAI and Anthropic SDKs, LangChain on both, the LiteLLM SDK with its own HTTP stack
and SSE parser) asks the same deterministic question twice and must get the same
parsed answer, chunk for chunk, while the provider is called once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI

from tests.conftest import SdkClients, upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.node_support import needs_node, run_node
from tests.support import Gateway, MockServer, cli_json

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-5-5"
USAGE = {"x-mock-input-tokens": "31", "x-mock-output-tokens": "9"}
#: a slow stream: followers join it while it is still in flight
SLOW = {**USAGE, "x-mock-chunk-delay-ms": "40", "x-mock-chunks": "30"}
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    """A workspace under the default policy: temperature 0 or a seed is shared."""
    return make_tenant(db_env, "drop-in-levers")


@pytest.fixture(scope="module")
def claude_tenant(db_env: dict[str, str]) -> Tenant:
    """A workspace under the `all` policy: current Claude models take no `temperature`
    but the default (the anthropic SDK has no such parameter, and langchain-anthropic
    refuses one for claude-sonnet-5-5), so under `deterministic` nothing of theirs would
    ever be shared."""
    tenant = make_tenant(db_env, "drop-in-levers-claude")
    cli_json("cache", "set", "--workspace", tenant.workspace, "--policy", "all", env=db_env)
    return tenant


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


# The official OpenAI SDK -------------------------------------------------------------------


def test_openai_sdk_reads_a_json_hit_as_the_original(
    sdk: SdkClients, gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The second identical completion is a hit the SDK parses to the same object (id,
    content, usage); the provider was called once; the hit's row carries the usage."""
    client = sdk.openai(f"{gateway.url}/v1", api_key=tenant.key)

    def ask() -> tuple[str, str, dict[str, Any]]:
        raw = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL,
            messages=messages("levers-sdk-json"),  # type: ignore[arg-type]
            temperature=0,
            extra_headers=USAGE,
        )
        return raw.headers["x-recovea-cache"], raw.headers["x-request-id"], raw.parse().model_dump()

    first_state, _, first = ask()
    second_state, second_id, second = ask()
    assert (first_state, second_state) == ("miss", "hit")
    assert second == first
    assert second["choices"][0]["message"]["content"] == "mock reply: levers-sdk-json"
    assert mock.calls_holding("levers-sdk-json") == 1
    row = stored(gateway, tenant, "requests", second_id)
    assert (row["cache_hit"], row["input_tokens"], row["output_tokens"]) == (True, 31, 9)


@pytest.mark.parametrize("include_usage", [False, True], ids=["usage-hidden", "usage-asked"])
def test_openai_sdk_reads_a_replayed_stream_chunk_for_chunk(
    sdk: SdkClients, gateway: Gateway, tenant: Tenant, mock: MockServer, include_usage: bool
) -> None:
    """A replayed stream parses to the same chunks as the original. The usage chunk the
    gateway asked for on the client's behalf stays hidden on the replay too; one the
    client asked for is replayed."""
    client = sdk.openai(f"{gateway.url}/v1", api_key=tenant.key)
    prompt = f"levers-sdk-stream-{include_usage}"
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}

    def stream() -> tuple[str, list[dict[str, Any]]]:
        with client.chat.completions.with_streaming_response.create(
            model=OPENAI_MODEL,
            messages=messages(prompt),  # type: ignore[arg-type]
            temperature=0,
            stream=True,
            extra_headers=USAGE,
            **extra,
        ) as response:
            return response.headers["x-recovea-cache"], [c.model_dump() for c in response.parse()]

    (first_state, first), (second_state, second) = stream(), stream()
    assert (first_state, second_state) == ("miss", "hit")
    assert second == first
    text = "".join(c["choices"][0]["delta"]["content"] or "" for c in second if c["choices"])
    assert text == f"mock reply: {prompt}"
    usage = [c["usage"] for c in second if c["usage"] is not None]
    if include_usage:
        assert [(u["prompt_tokens"], u["completion_tokens"]) for u in usage] == [(31, 9)]
    else:
        assert usage == [], "the usage the gateway asked for is hidden on a hit as well"
    assert mock.calls_holding(prompt) == 1


def test_openai_sdk_reads_responses_api_hits_as_the_originals(
    sdk: SdkClients, gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """The Responses API, a response and a response stream each asked twice (with
    `store=False`: a response the provider stores is never shared): the SDK parses the
    hit to the same response (and the same typed events, in order); the provider is
    called once for each."""
    client = sdk.openai(f"{gateway.url}/v1", api_key=tenant.key)

    def create() -> tuple[str, dict[str, Any]]:
        raw = client.responses.with_raw_response.create(
            model=OPENAI_MODEL,
            input="levers-responses-json",
            temperature=0,
            store=False,
            extra_headers=USAGE,
        )
        return raw.headers["x-recovea-cache"], raw.parse().model_dump()

    def stream() -> tuple[str, list[dict[str, Any]]]:
        with client.responses.with_streaming_response.create(
            model=OPENAI_MODEL,
            input="levers-responses-stream",
            temperature=0,
            store=False,
            stream=True,
            extra_headers=USAGE,
        ) as response:
            return response.headers["x-recovea-cache"], [e.model_dump() for e in response.parse()]

    (first_state, first), (second_state, second) = create(), create()
    assert (first_state, second_state) == ("miss", "hit")
    assert second == first
    assert second["output"][0]["content"][0]["text"] == "mock reply: levers-responses-json"

    (first_state, events), (second_state, replayed) = stream(), stream()
    assert (first_state, second_state) == ("miss", "hit")
    assert replayed == events
    kinds = [event["type"] for event in replayed]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    text = "".join(e["delta"] for e in replayed if e["type"] == "response.output_text.delta")
    assert text == "mock reply: levers-responses-stream"
    assert replayed[-1]["response"]["usage"]["output_tokens"] == 9
    assert mock.calls_holding("levers-responses-json") == 1
    assert mock.calls_holding("levers-responses-stream") == 1


async def test_openai_async_sdk_followers_read_the_shared_stream_as_its_leader(
    gateway: Gateway, tenant: Tenant, mock: MockServer
) -> None:
    """Four SDK streams join a slow stream in flight (its first bytes already sent):
    each parses to the same chunks as a later hit, and the provider is called once."""
    prompt = "levers-sdk-flight"
    body = {"model": OPENAI_MODEL, "messages": messages(prompt), "temperature": 0, "stream": True}
    client = openai.AsyncOpenAI(
        base_url=f"{gateway.url}/v1", api_key=tenant.key, max_retries=0, timeout=TIMEOUT_S
    )

    async def follow() -> tuple[str, list[dict[str, Any]]]:
        async with client.chat.completions.with_streaming_response.create(
            model=OPENAI_MODEL,
            messages=messages(prompt),  # type: ignore[arg-type]
            temperature=0,
            stream=True,
            extra_headers=SLOW,
        ) as response:
            chunks = [c.model_dump() async for c in await response.parse()]
            return response.headers["x-request-id"], chunks

    async with client, httpx.AsyncClient(base_url=gateway.url, timeout=TIMEOUT_S) as raw:
        headers = {**tenant.bearer, **SLOW}
        async with raw.stream("POST", "/v1/chat/completions", json=body, headers=headers) as lead:
            assert lead.headers["x-recovea-cache"] == "miss"
            rest = lead.aiter_raw()
            await anext(rest)  # in flight: the followers join mid-stream
            followers = await asyncio.gather(*(follow() for _ in range(4)))
            async for _ in rest:  # the leader reads its stream to the end
                pass
        _, replayed = await follow()  # the shared call ended and was kept: a hit

    assert all(chunks == replayed for _, chunks in followers)
    assert "".join(c["choices"][0]["delta"]["content"] or "" for c in replayed if c["choices"])
    assert mock.calls_holding(prompt) == 1
    for request_id, _ in followers:
        row = stored(gateway, tenant, "requests", request_id)
        assert (row["dedup_singleflight"], row["success"]) == (True, True)
        assert (row["input_tokens"], row["output_tokens"]) == (31, 9)


# The official Anthropic SDK ----------------------------------------------------------------


def test_anthropic_sdk_reads_json_and_stream_hits_as_the_originals(
    sdk: SdkClients, gateway: Gateway, claude_tenant: Tenant, mock: MockServer
) -> None:
    """A message and a message stream, each asked twice: the second is a hit the SDK
    parses to the same message (and the same events); the provider is called once
    for each."""
    claude = sdk.anthropic(gateway.url, api_key=claude_tenant.key)

    def create() -> tuple[str, dict[str, Any]]:
        raw = claude.messages.with_raw_response.create(
            model=ANTHROPIC_MODEL,
            max_tokens=64,
            messages=messages("levers-claude-json"),  # type: ignore[arg-type]
            extra_headers=USAGE,
        )
        return raw.headers["x-recovea-cache"], raw.parse().model_dump()

    def stream() -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
        with claude.messages.stream(
            model=ANTHROPIC_MODEL,
            max_tokens=64,
            messages=messages("levers-claude-stream"),  # type: ignore[arg-type]
            extra_headers=USAGE,
        ) as events:
            seen = [event.model_dump() for event in events]
            state = events.response.headers["x-recovea-cache"]
            return state, seen, events.get_final_message().model_dump()

    first, second = create(), create()
    assert (first[0], second[0]) == ("miss", "hit")
    assert second[1] == first[1]
    assert second[1]["content"][0]["text"] == "mock reply: levers-claude-json"

    first_stream, second_stream = stream(), stream()
    assert (first_stream[0], second_stream[0]) == ("miss", "hit")
    assert second_stream[1:] == first_stream[1:]
    final = second_stream[2]
    assert final["content"][0]["text"] == "mock reply: levers-claude-stream"
    assert final["usage"]["output_tokens"] == 9
    assert mock.calls_holding("levers-claude-json") == 1
    assert mock.calls_holding("levers-claude-stream") == 1


# LangChain ---------------------------------------------------------------------------------


def test_langchain_reads_hits_as_the_originals(
    gateway: Gateway, tenant: Tenant, claude_tenant: Tenant, mock: MockServer
) -> None:
    """langchain-openai and langchain-anthropic, invoke and stream, each twice at
    temperature 0: the same message both times, one provider call each."""
    gpt = ChatOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=tenant.key,  # type: ignore[arg-type]
        model=OPENAI_MODEL,
        temperature=0,
        max_retries=0,
        timeout=TIMEOUT_S,
        stream_usage=True,
        default_headers=USAGE,
    )
    claude = ChatAnthropic(  # type: ignore[call-arg]
        base_url=gateway.url,
        api_key=claude_tenant.key,  # type: ignore[arg-type]
        model=ANTHROPIC_MODEL,
        max_tokens=64,
        max_retries=0,
        default_request_timeout=TIMEOUT_S,
        default_headers=USAGE,
    )
    for name, model in (("openai", gpt), ("anthropic", claude)):
        invoke = f"levers-lc-{name}-invoke"
        first, second = model.invoke(invoke), model.invoke(invoke)
        assert second.text == first.text == f"mock reply: {invoke}"
        assert second.usage_metadata == first.usage_metadata
        assert second.usage_metadata is not None and second.usage_metadata["output_tokens"] == 9

        streamed = f"levers-lc-{name}-stream"
        runs = [[chunk.text for chunk in model.stream(streamed)] for _ in range(2)]
        assert runs[1] == runs[0]
        assert "".join(runs[1]) == f"mock reply: {streamed}"
        assert (mock.calls_holding(invoke), mock.calls_holding(streamed)) == (1, 1)


# The LiteLLM SDK (its own HTTP stack, and its own SSE parser for Anthropic) ---------------


@pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)
@pytest.mark.parametrize(
    ("model", "base", "workspace", "fields"),
    [
        pytest.param(f"openai/{OPENAI_MODEL}", "/v1", "tenant", {"temperature": 0}, id="openai"),
        pytest.param(f"anthropic/{ANTHROPIC_MODEL}", "", "claude_tenant", {}, id="anthropic"),
    ],
)
def test_litellm_reads_hits_as_the_originals(
    litellm: ModuleType,
    gateway: Gateway,
    mock: MockServer,
    request: pytest.FixtureRequest,
    model: str,
    base: str,
    workspace: str,
    fields: dict[str, Any],
) -> None:
    """completion and a stream, each twice: the same content, usage and chunks both
    times, one provider call each. (Synchronous: LiteLLM keeps its async clients past
    the test's event loop, whose sockets a later collection reports unclosed.)"""
    provider = model.split("/")[0]
    tenant: Tenant = request.getfixturevalue(workspace)
    args = {
        "model": model,
        "api_base": f"{gateway.url}{base}",
        "api_key": tenant.key,
        "max_tokens": 64,
        "extra_headers": USAGE,
        "max_retries": 0,
        "timeout": TIMEOUT_S,
        **fields,
    }
    asked = f"levers-ll-{provider}-json"
    first, second = (litellm.completion(**args, messages=messages(asked)) for _ in range(2))
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.choices[0].message.content == f"mock reply: {asked}"
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (
        first.usage.prompt_tokens,
        first.usage.completion_tokens,
    )

    streamed = f"levers-ll-{provider}-stream"
    runs = []
    for _ in range(2):
        stream = litellm.completion(**args, messages=messages(streamed), stream=True)
        runs.append([c.choices[0].delta.content or "" for c in stream if c.choices])
    assert runs[1] == runs[0]
    assert "".join(runs[1]) == f"mock reply: {streamed}"
    assert (mock.calls_holding(asked), mock.calls_holding(streamed)) == (1, 1)


# The official Node SDKs (fetch, and their own SSE parsers) --------------------------------


@needs_node
def test_node_sdks_read_hits_as_the_originals(
    node_sdks: Path, gateway: Gateway, tenant: Tenant, claude_tenant: Tenant, mock: MockServer
) -> None:
    """openai and @anthropic-ai/sdk for Node: a chat completion, a chat stream, a message
    and a message stream, each asked twice: a miss then a hit, parsed to the same
    object (the same events), one provider call each."""
    result = run_node(node_sdks, "drive_levers.mjs", gateway.url, tenant.key, claude_tenant.key)
    for question, prompt in (
        ("chat", "node-levers-chat"),
        ("chatStream", "node-levers-stream"),
        ("message", "node-levers-message"),
        ("messageStream", "node-levers-events"),
    ):
        first, second = result[question]
        assert (first["cache"], second["cache"]) == ("miss", "hit"), question
        assert second["parsed"] == first["parsed"], question
        assert mock.calls_holding(prompt) == 1, question
    chat = result["chat"][1]["parsed"]
    assert chat["choices"][0]["message"]["content"] == "mock reply: node-levers-chat"
    streamed = result["chatStream"][1]["parsed"]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in streamed if c["choices"])
    assert text == "mock reply: node-levers-stream"
    assert not [c for c in streamed if c.get("usage")], "hidden usage stays hidden on a hit"
    message = result["message"][1]["parsed"]
    assert message["content"][0]["text"] == "mock reply: node-levers-message"
    events = result["messageStream"][1]["parsed"]
    deltas = [e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta"]
    assert "".join(deltas) == "mock reply: node-levers-events"
    assert events[-1]["type"] == "message_stop"
