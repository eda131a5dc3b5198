"""The usage taps read tokens and outcomes from provider bytes split anywhere.

These feed the taps the exact bytes a provider sends, cut at every possible
position, because upstream chunks break inside lines, inside CRLF pairs and inside
multi-byte characters.
"""

from __future__ import annotations

import orjson
import pytest

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import CHAT, MESSAGES, RESPONSES, StreamTap
from recovea_proxy.providers.openai import HiddenUsageFilter
from recovea_proxy.providers.usage import Usage

OPENAI_STREAM = (
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"role":"assistant","content":""},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{"content":"h\xc3\xa9llo \\"usage\\":{"},"finish_reason":null}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,'
    b'"delta":{},"finish_reason":"length"}],"usage":null}\n\n'
    b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],"usage":'
    b'{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37,'
    b'"prompt_tokens_details":{"cached_tokens":20},'
    b'"completion_tokens_details":{"reasoning_tokens":4}}}\n\n'
    b"data: [DONE]\n\n"
)

ANTHROPIC_STREAM = (
    b"event: message_start\r\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":'
    b'"assistant","content":[],"model":"claude","stop_reason":null,"usage":{"input_tokens":'
    b'5,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"cache_creation":'
    b'{"ephemeral_5m_input_tokens":4,"ephemeral_1h_input_tokens":6},"output_tokens":1,'
    b'"service_tier":"standard"}}}\r\n'
    b"\r\n"
    b'event: ping\r\ndata: {"type": "ping"}\r\n\r\n'
    b"event: content_block_delta\r\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"message_delta \xe2\x9c\x93"}}\r\n\r\n'
    b"event: message_delta\r\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},'
    b'"usage":{"output_tokens":42}}\r\n\r\n'
    b'event: message_stop\r\ndata: {"type":"message_stop"       }\r\n\r\n'
)

RESPONSES_STREAM = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"r","status":'
    b'"in_progress","error":null,"usage":null}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hi"}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":2,"response":{"id":"r","status":'
    b'"completed","error":null,"incomplete_details":null,"usage":{"input_tokens":11,'
    b'"input_tokens_details":{"cached_tokens":3},"output_tokens":9,'
    b'"output_tokens_details":{"reasoning_tokens":2},"total_tokens":20}}}\n\n'
)


#: ANTHROPIC_STREAM's usage: 5 + 10 + 100 input, 100 read, 4 + 6 written, standard tier
ANTHROPIC_USAGE = Usage(
    115,
    42,
    100,
    None,
    "end_turn",
    terminal=True,
    error=False,
    cache_write_5m_tokens=4,
    cache_write_1h_tokens=6,
)


def feed_split(tap: StreamTap, data: bytes, cut: int) -> Usage:
    tap.feed(data[:cut])
    tap.feed(data[cut:])
    tap.close()
    return tap.usage


def new_tap(provider: str, kind: str) -> StreamTap:
    tap = PROVIDERS[provider].stream_tap(kind)
    assert tap is not None
    return tap


@pytest.mark.parametrize("cut", range(0, len(OPENAI_STREAM) + 1, 7))
def test_openai_chat_stream_usage_survives_any_split(cut: int) -> None:
    """Chat stream usage, cached and reasoning tokens are read wherever the chunk breaks."""
    usage = feed_split(new_tap("openai", CHAT), OPENAI_STREAM, cut)
    assert usage == Usage(30, 7, 20, 4, "length", terminal=True, error=False)


@pytest.mark.parametrize("cut", range(0, len(ANTHROPIC_STREAM) + 1, 5))
def test_anthropic_stream_usage_survives_any_split(cut: int) -> None:
    """Anthropic input = input + cache creation + cache read; cached = cache read; the
    cache writes by lifetime; the standard tier is no tier."""
    usage = feed_split(new_tap("anthropic", MESSAGES), ANTHROPIC_STREAM, cut)
    assert usage == ANTHROPIC_USAGE


@pytest.mark.parametrize("cut", range(0, len(RESPONSES_STREAM) + 1, 11))
def test_responses_stream_usage_survives_any_split(cut: int) -> None:
    """The Responses API's final event carries the usage and the status."""
    usage = feed_split(new_tap("openai", RESPONSES), RESPONSES_STREAM, cut)
    assert usage == Usage(11, 9, 3, 2, "completed", terminal=True, error=False)


def test_byte_by_byte_feed_reads_the_same_usage() -> None:
    """Feeding one byte at a time gives the same result as one whole chunk."""
    tap = new_tap("openai", CHAT)
    for i in range(len(OPENAI_STREAM)):
        tap.feed(OPENAI_STREAM[i : i + 1])
    tap.close()
    assert tap.usage == Usage(30, 7, 20, 4, "length", terminal=True, error=False)


def test_stream_without_usage_reports_none_not_zero() -> None:
    """A stream that reports no usage leaves every count None."""
    tap = new_tap("openai", CHAT)
    tap.feed(
        OPENAI_STREAM.split(b'data: {"id":"c1","object":"chat.completion.chunk","choices":[],')[0]
    )
    tap.close()
    assert tap.usage.input_tokens is None and tap.usage.output_tokens is None
    assert tap.usage.finish_reason == "length"
    assert tap.usage.terminal is False


def test_unterminated_last_event_is_not_dispatched() -> None:
    """An event without its line end (the stream broke) is never read."""
    tap = new_tap("anthropic", MESSAGES)
    tap.feed(ANTHROPIC_STREAM.rstrip(b"\r\n"))
    tap.close()
    assert tap.usage.terminal is False
    assert tap.usage.output_tokens == 42


def test_mid_stream_error_event_marks_error() -> None:
    """OpenAI's mid-stream error payload marks the outcome as an error."""
    tap = new_tap("openai", CHAT)
    tap.feed(
        b'data: {"error":{"message":"boom","type":"server_error","param":null,"code":null}}\n\n'
    )
    tap.close()
    assert tap.usage.error is True


@pytest.mark.parametrize("cut", range(0, len(OPENAI_STREAM) + 1, 3))
def test_hidden_usage_filter_restores_the_plain_stream(cut: int) -> None:
    """The stream the client gets equals the one it would get without include_usage."""
    expected = b"".join(
        line.replace(b',"usage":null', b"") + b"\n\n"
        for line in OPENAI_STREAM.split(b"\n\n")
        if line and b'"choices":[]' not in line
    )
    stream_filter = HiddenUsageFilter()
    out = stream_filter.feed(OPENAI_STREAM[:cut]) + stream_filter.feed(OPENAI_STREAM[cut:])
    out += stream_filter.flush()
    assert out == expected
    assert b'"usage"' not in out.replace(b'\\"usage\\"', b"")


def test_include_usage_is_added_without_touching_other_bytes() -> None:
    """The gateway asks for stream usage by adding one key; the rest is byte-identical."""
    body = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"x"}]}'
    sent, hide = PROVIDERS["openai"].prepare_request(CHAT, orjson.loads(body), body)
    assert hide is True
    assert sent.endswith(body[1:])
    assert orjson.loads(sent)["stream_options"] == {"include_usage": True}


def test_include_usage_asked_by_client_is_left_alone() -> None:
    """A client that asked for usage gets its request and stream unchanged."""
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    assert PROVIDERS["openai"].prepare_request(CHAT, orjson.loads(body), body) == (body, False)


def test_existing_stream_options_are_merged() -> None:
    """Other stream_options the client set are kept when usage is added."""
    body = b'{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}'
    sent, hide = PROVIDERS["openai"].prepare_request(CHAT, orjson.loads(body), body)
    assert hide is True
    assert orjson.loads(sent)["stream_options"] == {
        "include_obfuscation": False,
        "include_usage": True,
    }


def test_openrouter_is_not_rewritten() -> None:
    """OpenRouter always reports usage, so its requests go upstream untouched."""
    body = b'{"model":"openai/gpt-4o","stream":true}'
    assert PROVIDERS["openrouter"].prepare_request(CHAT, orjson.loads(body), body) == (body, False)


def test_long_stream_usage_is_read_from_the_window_ends() -> None:
    """A stream far longer than the tap's windows still yields its start and end events."""
    tap = new_tap("anthropic", MESSAGES)
    start, rest = ANTHROPIC_STREAM.split(b"event: ping", 1)
    filler = (
        b"event: content_block_delta\r\n"
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
        b'"text":"' + b"x" * 1000 + b'"}}\r\n\r\n'
    )
    tap.feed(start)
    for _ in range(200):  # ~200 KB of content between message_start and message_delta
        tap.feed(filler)
    tap.feed(b"event: ping" + rest)
    tap.close()
    assert tap.usage == ANTHROPIC_USAGE


def test_short_stream_with_fewer_events_than_the_window() -> None:
    """A stream with fewer data events than the tap reads is read whole, each event once."""
    tap = new_tap("openai", CHAT)
    tap.feed(b'data: {"choices":[{"index":0,"finish_reason":"stop"}],"usage":null}\n\n')
    tap.feed(b"data: [DONE]\n\n")
    tap.close()
    assert (tap.usage.finish_reason, tap.usage.terminal) == ("stop", True)
