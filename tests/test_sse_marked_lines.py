"""`sse.MarkedLines` hands back the same marked lines however a stream is cut into
pieces (a marker split across several pieces included), and holds a line in progress
without copying or screening it again with every piece."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from recovea_proxy.providers.openai import ResponsesStreamTap
from recovea_proxy.providers.sse import MAX_PENDING_LINE, MarkedLines

MARKERS = ResponsesStreamTap.markers
_LINES = [
    b"event: response.output_text.delta",
    b'data: {"type":"response.output_text.delta","delta":"hi"}',
    b"",
    b"event: response.completed",
    b'data: {"type":"response.completed","response":{"usage":{"input_tokens":3}}}',
    b'data: {"type": "error", "message": "boom"}',
    b": keep-alive",
]


def _fed(pieces: list[bytes]) -> list[bytes]:
    lines = MarkedLines(MARKERS)
    return [line for piece in pieces for line in lines.feed(piece)]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_LINES), min_size=1, max_size=12),
    st.sampled_from([b"\n", b"\r\n"]),
    st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=60),
)
def test_the_marked_lines_do_not_depend_on_where_the_stream_is_cut(
    lines: list[bytes], end: bytes, sizes: list[int]
) -> None:
    stream = b"".join(line + end for line in lines)
    pieces, at = [], 0
    while at < len(stream):
        size = sizes[len(pieces) % len(sizes)]
        pieces.append(stream[at : at + size])
        at += size
    assert _fed(pieces) == _fed([stream])
    assert _fed([stream[i : i + 1] for i in range(len(stream))]) == _fed([stream])


def test_a_line_past_the_bound_is_dropped_and_the_next_one_read() -> None:
    """A line without an end past `MAX_PENDING_LINE`, in small pieces, is no event a tap
    needs: it is dropped, and a marked line after it is still found."""
    lines = MarkedLines(MARKERS)
    piece = b"x" * 4096
    for _ in range(MAX_PENDING_LINE // len(piece) + 2):
        assert lines.feed(piece) == []
    marked = b'data: {"type":"response.completed"}'
    assert lines.feed(b"\n" + marked + b"\n") == [marked]
