"""The official OpenAI SDK works through the gateway with only `base_url` changed,
and every response's usage lands in the request's record."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import FAKE_OPENAI_KEY, SdkClients
from tests.support import Gateway, MockServer

USAGE_HEADERS = {
    "x-mock-input-tokens": "31",
    "x-mock-output-tokens": "9",
    "x-mock-cached-tokens": "17",
    "x-mock-reasoning-tokens": "5",
}


@pytest.fixture
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=FAKE_OPENAI_KEY, max_retries=0) as sdk:
        yield sdk


def assert_usage(record: dict[str, object], *, output: bool = True) -> None:
    assert record["input_tokens"] == 31
    assert record["cached_tokens"] == 17
    if output:
        assert record["output_tokens"] == 9
        assert record["reasoning_tokens"] == 5


def test_chat_completion(client: openai.OpenAI, gateway: Gateway) -> None:
    """A non-streamed chat completion comes back intact and its usage is recorded."""
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "ping-7731"}],
        extra_headers=USAGE_HEADERS,
    )
    completion = raw.parse()
    assert "ping-7731" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.prompt_tokens == 31
    record = gateway.record(raw.headers["x-request-id"])
    assert_usage(record)
    assert record["provider"] == "openai"
    assert record["route"] == "/v1/chat/completions"
    assert record["baseline_model"] == "gpt-4o-mini"
    assert record["finish_reason"] == "stop"
    assert record["success"] is True
    assert record["stream"] is False


def test_chat_stream_reads_cached_and_reasoning_tokens(
    client: openai.OpenAI, gateway: Gateway
) -> None:
    """A streamed chat completion (no include_usage asked) still records full usage."""
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream-4410"}],
        stream=True,
        extra_headers=USAGE_HEADERS,
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stream-4410" in text
    assert all(c.usage is None for c in chunks), "client did not ask for usage"
    assert all(c.choices for c in chunks), "the gateway's usage chunk must be hidden"
    record = gateway.record(request_id)
    assert_usage(record)
    assert record["stream"] is True
    assert record["finish_reason"] == "stop"
    assert record["success"] is True


def test_chat_stream_with_include_usage_keeps_usage_chunk(
    client: openai.OpenAI, gateway: Gateway
) -> None:
    """A client that asks for stream usage receives the usage chunk as usual."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "u"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=USAGE_HEADERS,
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9


def test_legacy_completions_json_and_stream(client: openai.OpenAI, gateway: Gateway) -> None:
    """Legacy completions are metered streamed and not."""
    raw = client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt="legacy-1", extra_headers=USAGE_HEADERS
    )
    assert "legacy-1" in raw.parse().choices[0].text
    assert_usage(gateway.record(raw.headers["x-request-id"]))
    with client.completions.with_streaming_response.create(
        model="gpt-3.5-turbo-instruct", prompt="legacy-2", stream=True, extra_headers=USAGE_HEADERS
    ) as response:
        text = "".join(c.choices[0].text for c in response.parse() if c.choices)
        request_id = response.headers["x-request-id"]
    assert "legacy-2" in text
    assert_usage(gateway.record(request_id))


def test_embeddings(client: openai.OpenAI, gateway: Gateway) -> None:
    """Embeddings report input tokens only; output tokens stay None, not 0."""
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["a", "b"], extra_headers=USAGE_HEADERS
    )
    assert len(raw.parse().data) == 2
    record = gateway.record(raw.headers["x-request-id"])
    assert record["input_tokens"] == 31
    assert record["output_tokens"] is None
    assert record["route"] == "/v1/embeddings"


def test_responses_api_json_and_stream(client: openai.OpenAI, gateway: Gateway) -> None:
    """The Responses API is metered from its JSON and from its response.completed event."""
    raw = client.responses.with_raw_response.create(
        model="gpt-4.1", input="resp-json", extra_headers=USAGE_HEADERS
    )
    assert "resp-json" in raw.parse().output_text
    record = gateway.record(raw.headers["x-request-id"])
    assert_usage(record)
    assert record["finish_reason"] == "completed"

    with client.responses.with_streaming_response.create(
        model="gpt-4.1", input="resp-stream", stream=True, extra_headers=USAGE_HEADERS
    ) as response:
        events = list(response.parse())
        request_id = response.headers["x-request-id"]
    assert events[-1].type == "response.completed"
    record = gateway.record(request_id)
    assert_usage(record)
    assert record["success"] is True


def test_responses_incomplete_reason_is_recorded(client: openai.OpenAI, gateway: Gateway) -> None:
    """An incomplete response records why it stopped (max_output_tokens)."""
    raw = client.responses.with_raw_response.create(
        model="gpt-4.1",
        input="cut",
        max_output_tokens=16,
        extra_headers={"x-mock-output-tokens": "40"},
    )
    assert raw.parse().status == "incomplete"
    assert gateway.record(raw.headers["x-request-id"])["finish_reason"] == "max_output_tokens"


def test_models_list_and_retrieve(client: openai.OpenAI, gateway: Gateway) -> None:
    """Model listing passes through; the model id never becomes a metric label."""
    models = client.models.list()
    assert len(models.data) >= 1
    model = client.models.retrieve("gpt-4o-mini-unique-label-42")
    assert model.id == "gpt-4o-mini-unique-label-42"
    metrics = gateway.metrics()
    assert 'route="/v1/models/{model}"' in metrics
    assert "unique-label-42" not in metrics


def test_openrouter_surface(sdk: SdkClients, gateway: Gateway, mock: MockServer) -> None:
    """OpenRouter via /openrouter/api/v1 reaches the OpenRouter upstream and is metered."""
    client = sdk.openai(f"{gateway.url}/openrouter/api/v1", "sk-or-v1-abcdefghijkl")
    with client.chat.completions.with_streaming_response.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "or-1"}],
        stream=True,
        extra_headers=USAGE_HEADERS,
    ) as response:
        chunks = list(response.parse())
        request_id = response.headers["x-request-id"]
        generation_id = response.headers["x-recovea-upstream-request-id"]
    assert chunks[-1].usage is not None, "OpenRouter always streams usage; it is not hidden"
    record = gateway.record(request_id)
    assert record["provider"] == "openrouter"
    assert record["route"] == "/openrouter/api/v1/chat/completions"
    assert record["upstream_request_id"] == generation_id
    assert_usage(record)
    seen = [r for r in mock.requests() if r["path"] == "/api/v1/chat/completions"]
    assert seen and "stream_options" not in (seen[-1]["body"] or {})


def test_explicit_openai_surface(sdk: SdkClients, gateway: Gateway) -> None:
    """/openai/v1/* reaches OpenAI as /v1/*."""
    client = sdk.openai(f"{gateway.url}/openai/v1")
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    assert raw.parse().choices
    assert gateway.record(raw.headers["x-request-id"])["route"] == "/openai/v1/chat/completions"


def test_sdk_async_client_streams(gateway: Gateway) -> None:
    """The async OpenAI client (its own HTTP stack path) streams through the gateway."""
    import asyncio

    async def run() -> str:
        async with openai.AsyncOpenAI(
            base_url=f"{gateway.url}/v1", api_key=FAKE_OPENAI_KEY, max_retries=0
        ) as client:
            stream = await client.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "async-99"}], stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert "async-99" in asyncio.run(run())
