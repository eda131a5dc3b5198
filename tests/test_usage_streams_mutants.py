"""The usage taps held to the letter, chat streams and what the client receives: a chat
stream's compact end read by position, a stream parsed only at its edges with bounded
memory, the usage the gateway asks for on the client's behalf hidden again, the stream
the client receives the one the provider would have sent, and where a path's metrics
go.

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
    COMPLETIONS,
    COUNT_TOKENS,
    EMBEDDINGS,
    MESSAGES,
    MODELS,
    OTHER,
    RESPONSES,
    WindowTap,
)
from recovea_proxy.providers.openai import ChatStreamTap, HiddenUsageFilter
from recovea_proxy.providers.usage import Usage
from tests.test_usage_taps import OPENAI_STREAM
from tests.usage_taps_support import ANTHROPIC, OPENAI, events, fed, message_delta, message_start

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


# --- the usage the gateway asks for on the client's behalf -------------------------


def test_only_streamed_chat_and_completions_requests_are_rewritten() -> None:
    """The gateway asks for stream usage on streamed Chat Completions and Completions
    only; other requests (not streamed, or another endpoint) go upstream byte for byte,
    with nothing to hide from the client."""
    streamed = b'{"model":"m","stream":true}'
    plain = b'{"model":"m"}'
    for kind in (EMBEDDINGS, RESPONSES, MODELS, OTHER):
        assert OPENAI.prepare_request(kind, orjson.loads(streamed), streamed) == (streamed, False)
    for kind in (CHAT, COMPLETIONS):
        assert OPENAI.prepare_request(kind, orjson.loads(plain), plain) == (plain, False)
        assert OPENAI.prepare_request(kind, orjson.loads(streamed), streamed)[1] is True
    assert ANTHROPIC.prepare_request(MESSAGES, orjson.loads(streamed), streamed) == (
        streamed,
        False,
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"m","stream":true,"stream_options":null}',
        b' {"model":"m","stream":true}',
        b'\n{"model":"m","stream":true,"stream_options":null}',
    ],
)
def test_usage_is_asked_for_whatever_the_bodys_layout(body: bytes) -> None:
    """`"stream_options": null`, or a body that does not start with `{`: the whole body
    is rewritten, and the upstream sees one stream_options asking for usage."""
    sent, hide = OPENAI.prepare_request(CHAT, orjson.loads(body), body)
    assert hide is True
    assert orjson.loads(sent)["stream_options"] == {"include_usage": True}
    assert sent.count(b"stream_options") == 1


# --- the stream the client receives ----------------------------------------------


def azure_stream(crlf: bool) -> bytes:
    """A chat stream as Azure OpenAI sends it: a first chunk with empty choices and its
    prompt filter results (which the client must receive), content, the finish chunk,
    the usage-only chunk the gateway asked for, and [DONE]."""
    return b"".join(
        events(
            '{"id":"","choices":[],"prompt_filter_results":[{"prompt_index":0}],"usage":null}',
            '{"usage":null,"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}',
            '{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}',
            '{"id":"c1","choices":[],"usage": {"prompt_tokens":3,"completion_tokens":1}}',
            "[DONE]",
            crlf=crlf,
        )
    )


def plain_stream(crlf: bool) -> bytes:
    """The stream the client would have received without the usage the gateway added."""
    return b"".join(
        events(
            '{"id":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}',
            '{"id":"c1","choices":[{"index":0,"delta":{"content":"hi"}}]}',
            '{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
            "[DONE]",
            crlf=crlf,
        )
    )


@pytest.mark.parametrize("crlf", [False, True])
def test_the_client_gets_the_plain_stream_wherever_it_is_cut(crlf: bool) -> None:
    """LF or CRLF line ends, cut at any byte: the added usage chunk (with its blank line)
    and every `"usage":null` key are removed; everything else, the empty-choices chunk
    that carries prompt filter results included, reaches the client unchanged."""
    stream, expected = azure_stream(crlf), plain_stream(crlf)
    for cut in range(len(stream) + 1):
        stream_filter = HiddenUsageFilter()
        out = stream_filter.feed(stream[:cut]) + stream_filter.feed(stream[cut:])
        assert out + stream_filter.flush() == expected, cut


@pytest.mark.parametrize("crlf", [False, True])
def test_the_client_gets_the_plain_stream_byte_by_byte(crlf: bool) -> None:
    """Fed one byte at a time, the filter still removes exactly what the gateway added."""
    stream = azure_stream(crlf)
    stream_filter = HiddenUsageFilter()
    out = b"".join(stream_filter.feed(stream[i : i + 1]) for i in range(len(stream)))
    assert out + stream_filter.flush() == plain_stream(crlf)


def test_a_stream_that_sent_nothing_reaches_the_client_as_nothing() -> None:
    """An upstream that ended before its first byte: the filter holds nothing back and
    gives nothing (not a null the sender would choke on) when the stream ends."""
    stream_filter = HiddenUsageFilter()
    assert stream_filter.flush() == b""
    assert stream_filter.feed(b"") + stream_filter.flush() == b""


@pytest.mark.parametrize("crlf", [False, True])
def test_a_stream_that_opens_with_a_blank_line_keeps_it(crlf: bool) -> None:
    """A keep-alive blank line before the first event is the provider's, not part of the
    usage event the filter removes: the client receives it."""
    blank = b"\r\n" if crlf else b"\n"
    stream = blank + azure_stream(crlf)
    stream_filter = HiddenUsageFilter()
    out = stream_filter.feed(blank) + stream_filter.feed(stream[len(blank) :])
    assert out + stream_filter.flush() == blank + plain_stream(crlf)


# --- where a path's metrics go, and how the key is sent ---------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/chat/completions", (CHAT, "/v1/chat/completions")),
        ("/v1/completions", (COMPLETIONS, "/v1/completions")),
        ("/v1/embeddings", (EMBEDDINGS, "/v1/embeddings")),
        ("/v1/responses", (RESPONSES, "/v1/responses")),
        ("/v1/models", (MODELS, "/v1/models")),
        ("/v1/models/gpt-4o", (MODELS, "/v1/models/{model}")),
        ("/v1/files/file-abc/content", (OTHER, "/v1/files/*")),
        ("/v1/files", (OTHER, "/v1/files/*")),
        ("/v1/responses/resp_1/cancel", (OTHER, "/v1/responses/*")),
        ("/v1/made-up/anything", (OTHER, "/v1/other")),
        ("/v2/models/x", (OTHER, "/v1/other")),
        ("/v1", (OTHER, "/v1/other")),
        ("/x/v1/models", (OTHER, "/v1/other")),
    ],
)
def test_an_openai_path_maps_to_a_bounded_route_template(
    path: str, expected: tuple[str, str]
) -> None:
    """Every OpenAI path gets its endpoint kind and one of a fixed set of route
    templates (the metrics' label), so a caller cannot grow the label set."""
    assert OPENAI.endpoint_of(path) == expected
    assert PROVIDERS["openrouter"].endpoint_of(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1/messages", (MESSAGES, "/v1/messages")),
        ("/v1/messages/count_tokens", (COUNT_TOKENS, "/v1/messages/count_tokens")),
        ("/v1/messages/batches", (OTHER, "/v1/messages/batches")),
        ("/v1/messages/batches/b_1/results", (OTHER, "/v1/messages/batches/*")),
        ("/v1/models", (MODELS, "/v1/models")),
        ("/v1/models/claude-x", (MODELS, "/v1/models/{model}")),
        ("/v1/files/f_1", (OTHER, "/v1/files/*")),
        ("/v1/anything-else", (OTHER, "/v1/other")),
    ],
)
def test_an_anthropic_path_maps_to_a_bounded_route_template(
    path: str, expected: tuple[str, str]
) -> None:
    """The same bound on Anthropic's surface."""
    assert ANTHROPIC.endpoint_of(path) == expected


def test_each_provider_gets_the_key_in_its_own_header() -> None:
    """OpenAI and OpenRouter take `Authorization: Bearer`, Anthropic `x-api-key`."""
    assert OPENAI.credential_headers("k") == (("authorization", "Bearer k"),)
    assert PROVIDERS["openrouter"].credential_headers("k") == (("authorization", "Bearer k"),)
    assert ANTHROPIC.credential_headers("k") == (("x-api-key", "k"),)
