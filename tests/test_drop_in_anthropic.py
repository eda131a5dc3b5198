"""The official Anthropic SDK works through the gateway with only `base_url` changed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import anthropic
import pytest

from tests.conftest import FAKE_ANTHROPIC_KEY, SdkClients
from tests.support import Gateway, MockServer

USAGE_HEADERS = {
    "x-mock-input-tokens": "120",
    "x-mock-output-tokens": "33",
    "x-mock-cached-tokens": "100",
}


@pytest.fixture
def client(gateway: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key=FAKE_ANTHROPIC_KEY, max_retries=0
    ) as sdk:
        yield sdk


def test_message(client: anthropic.Anthropic, gateway: Gateway) -> None:
    """A message comes back intact; input tokens include cached ones, cached = cache read."""
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-5-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "hello-5521"}],
        extra_headers=USAGE_HEADERS,
    )
    message = raw.parse()
    assert "hello-5521" in message.content[0].text  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == 100
    record = gateway.record(raw.headers["x-request-id"])
    assert record["provider"] == "anthropic"
    assert record["route"] == "/v1/messages"
    assert record["input_tokens"] == 120
    assert record["cached_tokens"] == 100
    assert record["output_tokens"] == 33
    assert record["reasoning_tokens"] is None
    assert record["finish_reason"] == "end_turn"
    assert record["success"] is True
    assert record["upstream_request_id"] == raw.headers["request-id"]


def test_message_stream(client: anthropic.Anthropic, gateway: Gateway) -> None:
    """A streamed message is read by the SDK's own accumulator and metered the same."""
    with client.messages.stream(
        model="claude-sonnet-5-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "stream-8812"}],
        extra_headers=USAGE_HEADERS,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["x-request-id"]
    assert "stream-8812" in text
    assert final.usage.output_tokens == 33
    record = gateway.record(request_id)
    assert (record["input_tokens"], record["cached_tokens"], record["output_tokens"]) == (
        120,
        100,
        33,
    )
    assert record["stream"] is True
    assert record["success"] is True


def test_max_tokens_stop_reason(client: anthropic.Anthropic, gateway: Gateway) -> None:
    """A message cut by max_tokens records that stop reason."""
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5",
        max_tokens=5,
        messages=[{"role": "user", "content": "long"}],
        extra_headers={"x-mock-output-tokens": "50"},
    )
    assert raw.parse().stop_reason == "max_tokens"
    assert gateway.record(raw.headers["x-request-id"])["finish_reason"] == "max_tokens"


def test_anthropic_headers_reach_the_provider(
    client: anthropic.Anthropic, gateway: Gateway, mock: MockServer
) -> None:
    """anthropic-version, anthropic-beta and x-stainless-* headers are forwarded as sent."""
    mock.clear()
    client.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=16,
        messages=[{"role": "user", "content": "h"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31,other-beta"},
    )
    seen = [r for r in mock.requests() if r["path"] == "/v1/messages"][-1]["headers"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", seen["anthropic-version"])
    assert seen["anthropic-beta"] == "prompt-caching-2024-07-31,other-beta"
    assert seen["x-stainless-lang"] == "python"
    # Older SDKs send x-api-key, newer ones a bearer token: either way, unchanged.
    assert FAKE_ANTHROPIC_KEY in (seen.get("x-api-key"), seen.get("authorization", "")[7:])
    assert seen["accept-encoding"] == "identity"


def test_explicit_anthropic_surface_and_count_tokens(sdk: SdkClients, gateway: Gateway) -> None:
    """/anthropic/v1/* reaches Anthropic; count_tokens is forwarded and not billed."""
    client = sdk.anthropic(f"{gateway.url}/anthropic")
    raw = client.messages.with_raw_response.count_tokens(
        model="claude-sonnet-5-5", messages=[{"role": "user", "content": "count me"}]
    )
    assert raw.parse().input_tokens > 0
    record = gateway.record(raw.headers["x-request-id"])
    assert record["route"] == "/anthropic/v1/messages/count_tokens"
    assert record["input_tokens"] is None
