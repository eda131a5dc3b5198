"""The usage taps held to the letter on chat streams: a chat stream's compact end read
by position, a stream parsed only at its edges with bounded memory (what the gateway
changes around a stream: `test_usage_rewrite_mutants.py`).

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.anthropic import MessagesStreamTap
from recovea_proxy.providers.base import (
    CHAT,
    MESSAGES,
    WindowTap,
)
from recovea_proxy.providers.openai import ChatStreamTap
from recovea_proxy.providers.usage import Usage
from tests.test_usage_taps import OPENAI_STREAM
from tests.usage_taps_support import OPENAI, events, fed, message_delta, message_start

# --- chat streams -----------------------------------------------------------------


def chat_chunk(**fields: Any) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", **fields}


SPACED_USAGE = (
    '{"id": "c1", "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 7,'
    ' "prompt_tokens_details": {"cached_tokens": 20}}}'
)


def test_a_chat_stream_in_another_layout_is_parsed_for_its_usage() -> None:
    """A chat stream not in OpenAI's compact layout (spaces after colons) is parsed event
    by event: its counts and finish reason are read the same."""
    usage = fed(
        OPENAI.stream_tap(CHAT) or ChatStreamTap(),
        *events(
            '{"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
            SPACED_USAGE,
            "[DONE]",
        ),
    )
    assert usage == Usage(30, 7, 20, None, "stop", terminal=True)


def test_an_unparseable_data_line_does_not_hide_the_events_after_it() -> None:
    """A data line that is not JSON is skipped; the final events after it still count."""
    usage = fed(
        ChatStreamTap(),
        *events(
            "{not json",
            '{"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}',
            SPACED_USAGE,
            "[DONE]",
        ),
    )
    assert (usage.input_tokens, usage.finish_reason, usage.terminal) == (30, "length", True)


class CountingChatTap(ChatStreamTap):
    """A chat tap that counts the events it had to parse."""

    def __init__(self) -> None:
        super().__init__()
        self.parsed = 0

    def on_event(self, event: dict[str, Any]) -> None:
        self.parsed += 1
        super().on_event(event)


class CountingMessagesTap(MessagesStreamTap):
    """An Anthropic tap that counts the events it had to parse."""

    def __init__(self) -> None:
        super().__init__()
        self.parsed = 0

    def on_event(self, event: dict[str, Any]) -> None:
        self.parsed += 1
        super().on_event(event)


EXPECTED_CHAT = Usage(30, 7, 20, 4, "length", terminal=True)


@pytest.mark.parametrize("layout", ["whole", "event per chunk", "byte per chunk"])
def test_the_compact_end_of_a_chat_stream_is_read_without_parsing_events(layout: str) -> None:
    """OpenAI's compact final events are read by position: no event is parsed, however
    the stream was cut into chunks."""
    if layout == "whole":
        chunks = [OPENAI_STREAM]
    elif layout == "event per chunk":
        chunks = [event + b"\n\n" for event in OPENAI_STREAM.split(b"\n\n") if event]
    else:
        chunks = [OPENAI_STREAM[i : i + 1] for i in range(len(OPENAI_STREAM))]
    tap = CountingChatTap()
    assert fed(tap, *chunks) == EXPECTED_CHAT
    assert tap.parsed == 0


def test_a_long_chat_stream_in_large_chunks_is_read_by_position_too() -> None:
    """Past the tap's window, with 10 KB chunks, the end is still read by position."""
    content = chat_chunk(choices=[{"index": 0, "delta": {"content": "x" * 10_000}}], usage=None)
    body = orjson.dumps(content)
    chunks = [b"data: " + body + b"\n\n" for _ in range(12)]
    tap = CountingChatTap()
    assert fed(tap, *chunks, OPENAI_STREAM[-400:]).input_tokens == 30
    assert tap.parsed == 0


def test_the_tier_of_a_compact_chat_stream_is_read_by_position_too() -> None:
    """A compact end that names its service tier is still read without parsing events,
    tier included; `default` is the standard tier (None)."""
    for tier, kept in ((b'"flex"', "flex"), (b'"default"', None)):
        stream = OPENAI_STREAM.replace(
            b'"choices":[],"usage":', b'"service_tier":' + tier + b',"choices":[],"usage":'
        )
        tap = CountingChatTap()
        assert fed(tap, stream).service_tier == kept
        assert (tap.usage.input_tokens, tap.parsed) == (30, 0)


def test_a_finish_reason_that_is_not_utf8_is_kept_readable() -> None:
    """A provider that sends bytes that are not UTF-8 in the finish reason does not break
    the tap: the reason is kept with a replacement character, the usage is read."""
    stream = OPENAI_STREAM.replace(b'"finish_reason":"length"', b'"finish_reason":"len\xffth"')
    usage = fed(ChatStreamTap(), stream)
    assert (usage.finish_reason, usage.input_tokens) == ("len\ufffdth", 30)


def test_an_error_after_the_usage_chunk_is_never_skipped() -> None:
    """An error event between the usage chunk and [DONE] marks the outcome an error: the
    position read does not step over it."""
    final, done = OPENAI_STREAM.rsplit(b"data: [DONE]", 1)
    error = b'data: {"error":{"message":"boom","type":"server_error"}}\n\n'
    stream = final + error + b"data: [DONE]" + done
    usage = fed(ChatStreamTap(), stream)
    assert (usage.error, usage.input_tokens) == (True, 30)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_stream_that_sent_nothing_reports_nothing(provider: str) -> None:
    """A stream that ended before its first byte: no usage, no outcome, no error."""
    kind = CHAT if provider == "openai" else MESSAGES
    tap = PROVIDERS[provider].stream_tap(kind)
    assert tap is not None
    assert fed(tap) == Usage()


def test_a_stream_that_reports_its_usage_twice_counts_the_last_report() -> None:
    """A provider that puts a running usage in its finish chunk and the final one in the
    usage chunk after it: the row gets the final counts, not the running ones."""
    final, done = OPENAI_STREAM.rsplit(b"data: [DONE]", 1)
    head, usage_chunk = final.rstrip(b"\n").rsplit(b"\n\n", 1)
    running = head.replace(
        b'"finish_reason":"length"}],"usage":null}',
        b'"finish_reason":"length"}],"usage":{"prompt_tokens":30,"completion_tokens":6}}',
    )
    assert running != head
    stream = running + b"\n\n" + usage_chunk + b"\n\ndata: [DONE]" + done
    assert fed(ChatStreamTap(), stream) == EXPECTED_CHAT


def test_an_escaped_finish_reason_is_left_to_the_json_parser() -> None:
    """A finish reason with an escaped character is not read by position but parsed,
    so the row gets the decoded text."""
    stream = OPENAI_STREAM.replace(b'"finish_reason":"length"', b'"finish_reason":"len\\u0067th"')
    tap = CountingChatTap()
    assert fed(tap, stream) == EXPECTED_CHAT
    assert tap.parsed > 0


@pytest.mark.parametrize(
    "end",
    [
        b'data: {"error":{"message":"boom"}}\n\ndata: [DONE]\n\n',
        b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3}}\n\n',
    ],
)
def test_an_end_that_is_not_the_compact_shape_is_parsed(end: bytes) -> None:
    """An error near the end, or no [DONE]: the tap parses the final events instead."""
    tap = CountingChatTap()
    fed(tap, *events(chat_chunk(choices=[{"index": 0, "finish_reason": "stop"}])), end)
    assert tap.parsed > 0


def test_a_chat_stream_whose_usage_is_not_last_is_parsed() -> None:
    """The position read needs the usage object to close its chunk; another layout of
    the same chunk is parsed, with the same result."""
    stream = OPENAI_STREAM.replace(b'"choices":[],"usage":', b'"usage":').replace(
        b'"reasoning_tokens":4}}}', b'"reasoning_tokens":4}},"choices":[]}'
    )
    tap = CountingChatTap()
    assert fed(tap, stream) == EXPECTED_CHAT
    assert tap.parsed > 0


def test_a_chat_stream_without_a_finish_reason_before_its_usage_is_parsed() -> None:
    """No finish reason before the usage chunk: parsed, and no reason made up."""
    stream = (
        b"".join(events(chat_chunk(choices=[{"index": 0, "delta": {"content": "a"}}], usage=None)))
        + OPENAI_STREAM.split(b"\n\n")[3]
        + b"\n\ndata: [DONE]\n\n"
    )
    tap = CountingChatTap()
    usage = fed(tap, stream)
    assert (usage.input_tokens, usage.finish_reason) == (30, None)
    assert tap.parsed > 0


def test_a_short_stream_is_parsed_only_at_its_edges() -> None:
    """An Anthropic stream of many small events: only the first and the last four are
    parsed, and they give the whole usage."""
    deltas = [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}}
    ] * 6
    stream = events(
        message_start({"input_tokens": 9}), *deltas, message_delta(3), {"type": "message_stop"}
    )
    tap = CountingMessagesTap()
    assert fed(tap, *stream) == Usage(9, 3, None, None, "end_turn", terminal=True)
    assert tap.parsed == 5


def test_a_stream_of_many_lines_is_read_from_its_edge_lines() -> None:
    """More lines than the edges hold (pings, comments), still inside the window: the
    start and end events are found among the edge lines."""
    pings = [b'event: ping\ndata: {"type": "ping"}\n\n'] * 20
    stream = [
        *events(message_start({"input_tokens": 9})),
        *pings,
        *events(message_delta(3), {"type": "message_stop"}),
    ]
    tap = CountingMessagesTap()
    assert fed(tap, *stream) == Usage(9, 3, None, None, "end_turn", terminal=True)
    assert tap.parsed <= 5


def test_a_long_stream_fed_in_small_pieces_keeps_its_edge_events_whole() -> None:
    """Past the window, in 7-byte pieces: the start event split across pieces and the end
    events split across pieces are read whole."""
    text = {"type": "text_delta", "text": "y" * 500}
    filler = events({"type": "content_block_delta", "index": 0, "delta": text})[0]
    stream = b"".join(
        [
            *events(message_start({"input_tokens": 9})),
            filler * 200,
            *events(message_delta(3), {"type": "message_stop"}),
        ]
    )
    tap = MessagesStreamTap()
    for at in range(0, len(stream), 7):
        tap.feed(stream[at : at + 7])
    tap.close()
    assert tap.usage == Usage(9, 3, None, None, "end_turn", terminal=True)


@pytest.mark.parametrize("piece", [100, 5_000, 50_000])
def test_a_taps_memory_is_bounded_whatever_the_streams_length(piece: int) -> None:
    """A 10 MB stream: the tap keeps about a window at each end, not the stream."""
    tap = MessagesStreamTap()
    chunk = b"data: " + b"z" * (piece - 7) + b"\n"
    for _ in range(10_000_000 // piece):
        tap.feed(chunk)
    held = sum(map(len, tap._head)) + sum(map(len, tap._tail))
    assert held <= 2 * WindowTap.WINDOW + 2 * piece
    tap.close()
