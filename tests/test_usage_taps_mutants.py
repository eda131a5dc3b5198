"""The usage taps held to the letter, whole bodies and Anthropic streams: what each
provider's body reports ends in the row exactly (an error is an error, a zero is a
zero, a missing count is None), every Responses outcome, and an Anthropic stream's
usage from its edges.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from typing import Any

import pytest

from recovea_proxy.providers.anthropic import MessagesStreamTap
from recovea_proxy.providers.base import (
    CHAT,
    COUNT_TOKENS,
    EMBEDDINGS,
    MESSAGES,
    OTHER,
    RESPONSES,
)
from recovea_proxy.providers.usage import COUNT_MAX, Usage
from tests.test_usage_taps import ANTHROPIC_STREAM, ANTHROPIC_USAGE
from tests.usage_taps_support import ANTHROPIC, OPENAI, events, fed, message_delta, message_start

# --- whole (non-streamed) bodies --------------------------------------------------


def test_an_error_body_is_an_error_and_no_normal_end() -> None:
    """A provider's error body marks the outcome an error, never a finish, with no counts."""
    openai = OPENAI.usage_from_json(CHAT, {"error": {"message": "boom", "type": "server_error"}})
    anthropic = ANTHROPIC.usage_from_json(
        MESSAGES, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    )
    assert openai == Usage(error=True, terminal=False)
    assert anthropic == Usage(error=True, terminal=False)


def test_a_whole_chat_body_gives_its_usage_and_a_normal_end() -> None:
    """A Chat Completions body: its four counts, its finish reason, a normal end."""
    body = {
        "choices": [{"index": 0, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 30,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 4},
        },
    }
    assert OPENAI.usage_from_json(CHAT, body) == Usage(30, 7, 20, 4, "stop", terminal=True)
    assert OPENAI.usage_from_json(EMBEDDINGS, {"usage": {"prompt_tokens": 5}}) == Usage(
        5, None, None, None, None, terminal=True
    )


def test_a_whole_anthropic_message_sums_its_input_counters() -> None:
    """Anthropic's body: input = input + cache creation + cache read; cached = cache read;
    a stop_reason that is not a string is no finish reason."""
    usage = {
        "input_tokens": 5,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 100,
        "output_tokens": 42,
    }
    message = {"type": "message", "stop_reason": "end_turn", "usage": usage}
    assert ANTHROPIC.usage_from_json(MESSAGES, message) == Usage(
        115,
        42,
        100,
        None,
        "end_turn",
        terminal=True,
        cache_write_5m_tokens=10,
        cache_write_1h_tokens=0,
    )
    odd = {"type": "message", "stop_reason": 7, "usage": {"input_tokens": 5}}
    assert ANTHROPIC.usage_from_json(MESSAGES, odd) == Usage(5, terminal=True)


@pytest.mark.parametrize(
    ("value", "count"),
    [
        *[(0, 0), (1, 1), (COUNT_MAX, COUNT_MAX), (COUNT_MAX + 1, COUNT_MAX), (2**70, COUNT_MAX)],
        *[(-1, None), (True, None), (1.5, None), ("3", None), (None, None)],
    ],
)
def test_a_count_is_kept_as_reported_clamped_or_none(value: object, count: int | None) -> None:
    """Zero is a count (not None); the largest count is kept exactly, a larger one is
    clamped to it; anything that is not a non-negative integer is None, never made up."""
    body = {"usage": {"prompt_tokens": value, "completion_tokens": value}}
    usage = OPENAI.usage_from_json(CHAT, body)
    assert (usage.input_tokens, usage.output_tokens) == (count, count)


# --- the Responses API's outcome --------------------------------------------------


def response(status: str, **fields: Any) -> dict[str, Any]:
    return {"object": "response", "status": status, "usage": {"input_tokens": 2}, **fields}


def test_a_responses_body_gives_its_cache_writes_and_the_tier_that_served() -> None:
    """The Responses API's `input_tokens_details.cache_write_tokens` are 5-minute writes;
    its `service_tier` is kept unless it is `default` (the standard tier: None)."""
    usage = {"input_tokens": 9, "input_tokens_details": {"cache_write_tokens": 4}}
    flex = OPENAI.usage_from_json(
        RESPONSES, response("completed", usage=usage, service_tier="flex")
    )
    standard = OPENAI.usage_from_json(RESPONSES, response("completed", service_tier="default"))
    assert (flex.cache_write_5m_tokens, flex.service_tier) == (4, "flex")
    assert (standard.cache_write_5m_tokens, standard.service_tier) == (None, None)


RESPONSE_OUTCOMES = [
    (response("completed"), ("completed", True, False)),
    (
        response("incomplete", incomplete_details={"reason": "max_output_tokens"}),
        ("max_output_tokens", True, False),
    ),
    (response("incomplete"), ("incomplete", True, False)),
    (
        response("failed", incomplete_details={"reason": "max_output_tokens"}),
        ("failed", True, True),
    ),
    (response("cancelled"), ("cancelled", True, False)),
]


@pytest.mark.parametrize(("body", "outcome"), RESPONSE_OUTCOMES)
def test_a_responses_body_gives_its_status_reason_and_error(
    body: dict[str, Any], outcome: tuple[str, bool, bool]
) -> None:
    """Finish reason: the incomplete reason, else the status; `failed` is an error."""
    usage = OPENAI.usage_from_json(RESPONSES, body)
    assert (usage.finish_reason, usage.terminal, usage.error) == outcome
    assert usage.input_tokens == 2


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [
        ("response.completed", ("completed", True, False)),
        ("response.incomplete", ("incomplete", True, False)),
        ("response.failed", ("failed", True, True)),
        ("response.completed+error", ("completed", True, True)),
    ],
)
def test_a_responses_stream_ends_on_each_final_event(
    kind: str, outcome: tuple[str, bool, bool]
) -> None:
    """Each of the three final events of a Responses stream settles the outcome and ends
    the stream; `failed`, or a response carrying an error object, is an error."""
    tap = OPENAI.stream_tap(RESPONSES)
    assert tap is not None
    kind, _, error = kind.partition("+")
    status = kind.removeprefix("response.")
    final = response(status, error={"code": "server_error"}) if error else response(status)
    usage = fed(tap, *events({"type": kind, "response": final}))
    assert (usage.finish_reason, usage.terminal, usage.error) == outcome


def test_a_responses_stream_error_event_is_an_error() -> None:
    """A stream-level `error` event marks the outcome an error."""
    tap = OPENAI.stream_tap(RESPONSES)
    assert tap is not None
    usage = fed(tap, *events({"type": "error", "code": "server_error", "message": "x"}))
    assert (usage.error, usage.terminal) == (True, False)


def test_an_sse_comment_holding_a_marker_does_not_hide_the_final_event() -> None:
    """A non-data line that happens to contain a marker is skipped, and the final event
    after it (in the same chunk) is still read."""
    tap = OPENAI.stream_tap(RESPONSES)
    assert tap is not None
    final = {"type": "response.completed", "response": response("completed")}
    usage = fed(tap, b': {"type":"error"} is a comment\n' + events(final)[0])
    assert (usage.finish_reason, usage.error) == ("completed", False)


# --- Anthropic streams ------------------------------------------------------------


def test_an_anthropic_stream_without_cache_counters_counts_its_input_alone() -> None:
    """No cache counters reported: input is the input count, cached stays None."""
    usage = fed(
        MessagesStreamTap(),
        *events(message_start({"input_tokens": 9}), message_delta(3), {"type": "message_stop"}),
    )
    assert usage == Usage(9, 3, None, None, "end_turn", terminal=True)


def test_an_anthropic_stream_that_reports_output_only_leaves_input_none() -> None:
    """A stream whose start carries no usage: output counted, input None (not zero)."""
    usage = fed(
        MessagesStreamTap(),
        *events(
            {"type": "message_start", "message": {"type": "message"}},
            message_delta(3),
            {"type": "message_stop"},
        ),
    )
    assert usage == Usage(None, 3, None, None, "end_turn", terminal=True)


def test_an_anthropic_error_event_is_an_error() -> None:
    """An `error` event in the stream (overloaded mid-answer) marks the outcome an error."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    usage = fed(MessagesStreamTap(), *events(message_start({"input_tokens": 1}), error))
    assert (usage.error, usage.terminal, usage.input_tokens) == (True, False, 1)


def test_a_malformed_message_delta_is_read_for_what_it_holds() -> None:
    """A message_delta whose delta is not an object: no finish reason from it, its usage
    still counted, and the tap does not break."""
    odd = {"type": "message_delta", "delta": None, "usage": {"output_tokens": 4}}
    usage = fed(MessagesStreamTap(), *events(message_start({"input_tokens": 1}), odd))
    assert (usage.output_tokens, usage.finish_reason) == (4, None)


def test_only_messages_streams_are_tapped_on_anthropic() -> None:
    """Anthropic endpoints other than Messages stream no usage: no tap is made for them."""
    assert ANTHROPIC.stream_tap(MESSAGES) is not None
    assert ANTHROPIC.stream_tap(COUNT_TOKENS) is None
    assert ANTHROPIC.stream_tap(OTHER) is None


def test_a_stream_with_bare_cr_line_ends_is_read() -> None:
    """SSE lets lines end in a bare CR: such a stream's usage is read like any other."""
    stream = ANTHROPIC_STREAM.replace(b"\r\n", b"\r")
    assert fed(MessagesStreamTap(), stream) == ANTHROPIC_USAGE
