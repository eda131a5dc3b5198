"""Frameworks we did not write work through the gateway with only the base URL changed.

LangChain (langchain-openai, langchain-anthropic) and the LiteLLM SDK each read the
providers' wire formats their own way: LangChain through the official SDKs, LiteLLM
through its own HTTP stack (aiohttp for async calls) and, on its Anthropic route, its
own hand-written SSE parser. Every streamed response from the gateway ends with its
receipt comment line (`: recovea-receipt-v1 <token>`), which SSE clients must ignore:
these tests check that each one does, and that the reply arrives whole and unchanged.
"""

from __future__ import annotations

import functools
import operator
import socket
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessageChunk
from langchain_openai import ChatOpenAI

from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.support import Gateway, MockServer, without_receipt

#: the mock provider answers this + the last user message (streams cut it into pieces)
REPLY_PREFIX = "mock reply: "
OPENAI_USAGE = {"x-mock-input-tokens": "31", "x-mock-output-tokens": "9"}
ANTHROPIC_USAGE = {"x-mock-input-tokens": "120", "x-mock-output-tokens": "33"}
ANTHROPIC_MODEL = "claude-sonnet-5-5"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
#: a stuck stream fails the test instead of hanging it (LiteLLM's default is 600 s)
TIMEOUT_S = 30.0

#: pydantic warns (UserWarning) when it builds a schema for LiteLLM's own TypedDicts
#: with `ReadOnly` items; that is about LiteLLM's types, not about the gateway.
litellm_warnings = pytest.mark.filterwarnings(
    r"ignore:Items? .* on TypedDict class .* using the `ReadOnly` qualifier:UserWarning"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A name lookup of any host but loopback fails at once, and fails the test:
    the libraries must not reach out on their own (no network here, nor in CI)."""
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if name not in LOOPBACK:
            looked_up.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"offline test: no lookup of {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield looked_up
    assert not looked_up, f"the client tried to reach the network: {looked_up}"


def reply(prompt: str) -> str:
    return REPLY_PREFIX + prompt


def assert_receipt_unseen(chunks: list[Any]) -> None:
    """No chunk the client made carries the receipt, as content or anywhere else."""
    assert not [c for c in chunks if "recovea" in repr(c)], "the receipt leaked into a chunk"


def upstream_paths(mock: MockServer) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in mock.requests()]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/chat/completions", {"model": "gpt-4o-mini"}, id="openai"),
        pytest.param("/v1/messages", {"model": ANTHROPIC_MODEL, "max_tokens": 64}, id="anthropic"),
    ],
)
def test_streams_under_test_end_with_a_receipt(
    gateway: Gateway, path: str, body: dict[str, Any]
) -> None:
    """The streams the frameworks read below do end with the receipt line (or the
    tests below would prove nothing about it)."""
    headers = {"authorization": f"Bearer {FAKE_OPENAI_KEY}"}
    if path == "/v1/messages":
        headers = {"x-api-key": FAKE_ANTHROPIC_KEY, "anthropic-version": "2023-06-01"}
    request = {**body, "stream": True, "messages": [{"role": "user", "content": "r"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        response = client.post(path, json=request, headers=headers)
    assert response.status_code == 200
    content = without_receipt(response.content)
    assert content and response.content.startswith(content)
    assert response.content[len(content) :].startswith(b": recovea-receipt-v1 ")


# LangChain + OpenAI (langchain-openai, on the openai SDK) ---------------------------------


def chat_openai(gateway: Gateway) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=FAKE_OPENAI_KEY,  # type: ignore[arg-type]
        model="gpt-4o-mini",
        max_retries=0,
        timeout=TIMEOUT_S,
        stream_usage=True,  # usage chunk at the stream's end, just before the receipt
        default_headers=OPENAI_USAGE,
    )


def assert_openai_stream(chunks: list[Any], prompt: str) -> None:
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert_receipt_unseen(chunks)
    assert "".join(chunk.text for chunk in chunks) == reply(prompt)
    final = functools.reduce(operator.add, chunks)
    assert final.text == reply(prompt)
    assert final.usage_metadata is not None
    assert (final.usage_metadata["input_tokens"], final.usage_metadata["output_tokens"]) == (
        31,
        9,
    )
    assert final.response_metadata.get("finish_reason") == "stop"


def test_langchain_openai_invoke(gateway: Gateway, mock: MockServer) -> None:
    mock.clear()
    message = chat_openai(gateway).invoke("lc-openai-invoke-3141")
    assert message.content == reply("lc-openai-invoke-3141")
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == 31
    assert message.usage_metadata["output_tokens"] == 9
    assert message.usage_metadata["total_tokens"] == 40
    assert upstream_paths(mock) == ["POST /v1/chat/completions"]


def test_langchain_openai_stream(gateway: Gateway) -> None:
    chunks = list(chat_openai(gateway).stream("lc-openai-stream-2718"))
    assert_openai_stream(chunks, "lc-openai-stream-2718")


async def test_langchain_openai_astream(gateway: Gateway) -> None:
    chunks = [chunk async for chunk in chat_openai(gateway).astream("lc-openai-astream-1732")]
    assert_openai_stream(chunks, "lc-openai-astream-1732")


# LangChain + Anthropic (langchain-anthropic, on the anthropic SDK) -------------------------


def chat_anthropic(gateway: Gateway) -> ChatAnthropic:
    return ChatAnthropic(  # type: ignore[call-arg]
        base_url=gateway.url,
        api_key=FAKE_ANTHROPIC_KEY,  # type: ignore[arg-type]
        model=ANTHROPIC_MODEL,
        max_tokens=256,
        max_retries=0,
        default_request_timeout=TIMEOUT_S,
        default_headers=ANTHROPIC_USAGE,
    )


def assert_anthropic_stream(chunks: list[Any], prompt: str) -> None:
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert_receipt_unseen(chunks)
    assert "".join(chunk.text for chunk in chunks) == reply(prompt)
    final = functools.reduce(operator.add, chunks)
    assert final.text == reply(prompt)
    # LangChain takes a stream's usage from message_delta alone; the mock's message_delta
    # carries output tokens only (input tokens are in its message_start).
    assert final.usage_metadata is not None
    assert final.usage_metadata["output_tokens"] == 33
    assert final.response_metadata.get("stop_reason") == "end_turn"


def test_langchain_anthropic_invoke(gateway: Gateway, mock: MockServer) -> None:
    mock.clear()
    message = chat_anthropic(gateway).invoke("lc-anthropic-invoke-1618")
    assert message.text == reply("lc-anthropic-invoke-1618")
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == 120
    assert message.usage_metadata["output_tokens"] == 33
    assert upstream_paths(mock) == ["POST /v1/messages"]


def test_langchain_anthropic_stream(gateway: Gateway) -> None:
    chunks = list(chat_anthropic(gateway).stream("lc-anthropic-stream-1414"))
    assert_anthropic_stream(chunks, "lc-anthropic-stream-1414")


async def test_langchain_anthropic_astream(gateway: Gateway) -> None:
    chunks = [chunk async for chunk in chat_anthropic(gateway).astream("lc-anth-astream-2236")]
    assert_anthropic_stream(chunks, "lc-anth-astream-2236")


# LiteLLM SDK -----------------------------------------------------------------------------


def openai_args(gateway: Gateway, prompt: str) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "api_base": f"{gateway.url}/v1",
        "api_key": FAKE_OPENAI_KEY,
        "messages": [{"role": "user", "content": prompt}],
        "extra_headers": OPENAI_USAGE,
        "max_retries": 0,
        "timeout": TIMEOUT_S,
    }


def anthropic_args(gateway: Gateway, prompt: str) -> dict[str, Any]:
    # LiteLLM appends /v1/messages to an api_base that does not already end with it,
    # so the gateway's root URL is the base (as with the anthropic SDK).
    return {
        "model": f"anthropic/{ANTHROPIC_MODEL}",
        "api_base": gateway.url,
        "api_key": FAKE_ANTHROPIC_KEY,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 256,
        "extra_headers": ANTHROPIC_USAGE,
        "max_retries": 0,
        "timeout": TIMEOUT_S,
    }


ROUTES = [
    pytest.param(openai_args, "POST /v1/chat/completions", (31, 9), id="openai"),
    pytest.param(anthropic_args, "POST /v1/messages", (120, 33), id="anthropic"),
]


def stream_text(chunks: list[Any]) -> str:
    assert_receipt_unseen(chunks)
    return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)


@litellm_warnings
@pytest.mark.parametrize(("args", "upstream", "usage"), ROUTES)
def test_litellm_completion(
    litellm: ModuleType,
    gateway: Gateway,
    mock: MockServer,
    args: Any,
    upstream: str,
    usage: tuple[int, int],
) -> None:
    mock.clear()
    response = litellm.completion(**args(gateway, "ll-json-5772"))
    assert response.choices[0].message.content == reply("ll-json-5772")
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == usage
    assert upstream_paths(mock) == [upstream]


@litellm_warnings
@pytest.mark.parametrize(("args", "upstream", "usage"), ROUTES)
def test_litellm_stream(
    litellm: ModuleType,
    gateway: Gateway,
    mock: MockServer,
    args: Any,
    upstream: str,
    usage: tuple[int, int],
) -> None:
    mock.clear()
    chunks = list(litellm.completion(**args(gateway, "ll-stream-6931"), stream=True))
    assert stream_text(chunks) == reply("ll-stream-6931")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream_paths(mock) == [upstream]


@litellm_warnings
@pytest.mark.parametrize(("args", "upstream", "usage"), ROUTES)
async def test_litellm_async_stream(
    litellm: ModuleType,
    gateway: Gateway,
    mock: MockServer,
    args: Any,
    upstream: str,
    usage: tuple[int, int],
) -> None:
    mock.clear()
    stream = await litellm.acompletion(**args(gateway, "ll-astream-8128"), stream=True)
    chunks = [chunk async for chunk in stream]
    assert stream_text(chunks) == reply("ll-astream-8128")
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert upstream_paths(mock) == [upstream]
