"""What the gateway changes and reports around a stream, held to the letter: the usage
it asks for on the client's behalf (and hides again, so the client receives the
stream the provider would have sent, wherever it is cut), where a path's metrics go,
and how each provider's key is sent.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import orjson
import pytest

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import (
    CHAT,
    COMPLETIONS,
    COUNT_TOKENS,
    EMBEDDINGS,
    MESSAGES,
    MODELS,
    OTHER,
    RESPONSES,
)
from recovea_proxy.providers.openai import HiddenUsageFilter
from recovea_proxy.providers.sse import MAX_PENDING_LINE
from tests.usage_taps_support import ANTHROPIC, OPENAI, events

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


def test_a_line_longer_than_the_bound_passes_on_whole_and_bounded() -> None:
    """A provider line with no line end, sent in small pieces past `MAX_PENDING_LINE`:
    the filter holds no more than the bound (past it, the line so far is passed on as
    it came), and the client receives every byte, in order."""
    piece = b"x" * 4096
    pieces = MAX_PENDING_LINE // len(piece) + 3
    stream = b"data: {" + piece * pieces + b'}\n\ndata: {"id":"c1","usage":null}\n\n'
    stream_filter = HiddenUsageFilter()
    received = []
    for at in range(0, len(stream), len(piece)):
        received.append(stream_filter.feed(stream[at : at + len(piece)]))
        held = at + len(piece) - sum(len(out) for out in received)
        assert held <= MAX_PENDING_LINE + len(piece)
    received.append(stream_filter.flush())
    assert b"".join(received) == stream.replace(b',"usage":null', b"")


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
