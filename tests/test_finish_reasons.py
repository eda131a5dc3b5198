"""Which finish reason reaches the row (docs/ledger.md, "Finish reasons"): for a whole
response the first choice that has one; for a stream the last one among its final
events, so with several choices the one that finished last; none when the stream
stops before its finish event."""

from __future__ import annotations

import orjson
import pytest

from recovea_proxy.providers import PROVIDERS
from recovea_proxy.providers.base import CHAT, EMBEDDINGS, MESSAGES, RESPONSES


def chat_chunk(choices: list[dict[str, object]], *, spaced: bool = False) -> bytes:
    doc = {"id": "c", "object": "chat.completion.chunk", "choices": choices, "usage": None}
    data = orjson.dumps(doc)
    if spaced:  # not the compact shape: the tap parses the events instead
        data = data.replace(b'":', b'": ')
    return b"data: " + data + b"\n\n"


def finish(index: int, reason: str | None) -> dict[str, object]:
    return {"index": index, "delta": {}, "finish_reason": reason}


USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'


def stream_reason(*parts: bytes) -> str | None:
    tap = PROVIDERS["openai"].stream_tap(CHAT)
    assert tap is not None
    for part in parts:
        tap.feed(part)
    tap.close()
    return tap.usage.finish_reason


def test_a_whole_chat_response_gives_the_first_choice_that_has_one() -> None:
    """In `choices` order, the first entry with a string finish_reason wins."""
    usage = PROVIDERS["openai"].usage_from_json
    both = {"choices": [finish(0, "length"), finish(1, "stop")]}
    first_open = {"choices": [finish(0, None), finish(1, "stop")]}
    assert usage(CHAT, both).finish_reason == "length"
    assert usage(CHAT, first_open).finish_reason == "stop"
    assert usage(EMBEDDINGS, {"data": [], "usage": {"prompt_tokens": 1}}).finish_reason is None


@pytest.mark.parametrize("spaced", [False, True])
def test_a_chat_stream_gives_the_choice_that_finished_last(spaced: bool) -> None:
    """Choice 0 finishes first (`length`), choice 1 last (`stop`): the row gets `stop`,
    whether the tap reads the compact end by position or parses the events."""
    reason = stream_reason(
        chat_chunk([{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]),
        chat_chunk([finish(0, "length")], spaced=spaced),
        chat_chunk([finish(1, "stop")], spaced=spaced),
        USAGE,
        b"data: [DONE]\n\n",
    )
    assert reason == "stop"


def test_a_stream_cut_before_its_finish_event_has_none() -> None:
    """Only content chunks arrived (finish_reason null): no reason is made up."""
    reason = stream_reason(
        chat_chunk([{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]),
        chat_chunk([{"index": 0, "delta": {"content": "b"}, "finish_reason": None}]),
    )
    assert reason is None


def test_anthropic_and_responses_reasons() -> None:
    """Anthropic: `stop_reason`. Responses: the incomplete reason, else the status."""
    message = {"type": "message", "stop_reason": "max_tokens", "usage": {"input_tokens": 1}}
    assert PROVIDERS["anthropic"].usage_from_json(MESSAGES, message).finish_reason == (
        "max_tokens"
    )
    openai = PROVIDERS["openai"]
    incomplete = {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    assert openai.usage_from_json(RESPONSES, incomplete).finish_reason == "max_output_tokens"
    assert openai.usage_from_json(RESPONSES, {"status": "completed"}).finish_reason == (
        "completed"
    )
