"""Shadow evaluation's pure parts: the sampling, the bounded capture, the reassembly of
answers (JSON and streamed, for Chat Completions, Responses and Messages), each
comparator, and the boundaries of the sequential test."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import pytest

from recovea_proxy.levers.shadow import Capture, sampled
from recovea_proxy.levers.shadow_answer import Answer, canonical_arguments, reassemble
from recovea_proxy.levers.shadow_compare import chrf, compare, normalized
from recovea_proxy.levers.shadow_sprt import INFERIOR, NON_INFERIOR, Sprt
from recovea_proxy.mock_provider import anthropic_wire, openai_wire, responses_wire
from recovea_proxy.mock_provider.controls import MockDefaults, plan_for
from recovea_proxy.providers.base import CHAT, MESSAGES, RESPONSES

PROSE = (
    "The gateway forwards each request to the provider and streams the answer back "
    "chunk by chunk, writing one metering row per request without any prompt text."
)


def _body(model: str, prompt: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


@pytest.mark.parametrize(
    ("kind", "render", "events"),
    [
        (
            CHAT,
            lambda b, p: openai_wire.chat_json(b, p, legacy=False, openrouter=False),
            lambda b, p: openai_wire.chat_events(b, p, legacy=False, openrouter=False),
        ),
        (RESPONSES, responses_wire.responses_json, responses_wire.responses_events),
        (MESSAGES, anthropic_wire.message_json, anthropic_wire.message_events),
    ],
)
def test_a_streamed_answer_reassembles_to_the_same_answer_as_its_json(
    kind: str, render: Any, events: Any
) -> None:
    """The mock's JSON body and its SSE stream for one request reassemble to one answer:
    the reply text and a normal finish."""
    body = _body("m", "split me anywhere")
    plan = plan_for(MockDefaults(chunks=7), {}, b"id", "m")
    whole = reassemble(kind, render(body, plan), streamed=False)
    streamed = reassemble(kind, b"".join(events(body, plan)), streamed=True)
    assert whole == Answer("mock reply: split me anywhere", (), "stop", False)
    assert streamed == whole


def test_the_mock_disagrees_for_the_models_it_is_told() -> None:
    """`x-mock-disagree-model` names the models whose answer is the dissenting one."""
    body = _body("cheap", "route me")
    headers = {"x-mock-disagree-model": "cheap, other"}
    dissent = orjson.loads(openai_wire.chat_json(
        body, plan_for(MockDefaults(), headers, b"i", "cheap"), legacy=False, openrouter=False
    ))  # fmt: skip
    agree = orjson.loads(openai_wire.chat_json(
        body, plan_for(MockDefaults(), headers, b"i", "base"), legacy=False, openrouter=False
    ))  # fmt: skip
    assert dissent["choices"][0]["message"]["content"] == "mock dissent: em etuor"
    assert agree["choices"][0]["message"]["content"] == "mock reply: route me"


def test_tool_calls_reassemble_from_chat_json_and_stream() -> None:
    """Chat tool calls: names and arguments, pieced together by index in a stream, with
    canonical (sorted, compact) arguments either way."""
    whole = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "tool_calls": [
                        {"function": {"name": "get", "arguments": '{"b": 1, "a": [2]}'}}
                    ],
                },
                "finish_reason": "tool_calls",
            }
        ]
    }
    pieces = [
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "get", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": '{"a": [2],'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ' "b": 1}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]  # fmt: skip
    stream = b"".join(b"data: " + orjson.dumps(p) + b"\n\n" for p in pieces) + b"data: [DONE]\n\n"
    expected = Answer("", (("get", '{"a":[2],"b":1}'),), "tool", False)
    assert reassemble(CHAT, orjson.dumps(whole), streamed=False) == expected
    assert reassemble(CHAT, stream, streamed=True) == expected


def test_anthropic_tool_use_reassembles_from_input_json_deltas() -> None:
    """A Messages stream's tool_use block: its input pieced from `input_json_delta`."""
    events = [
        ("content_block_start", {"index": 0, "content_block":
            {"type": "tool_use", "name": "find", "input": {}}}),
        ("content_block_delta", {"index": 0, "delta":
            {"type": "input_json_delta", "partial_json": '{"q": "x"'}}),
        ("content_block_delta", {"index": 0, "delta":
            {"type": "input_json_delta", "partial_json": "}"}}),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}}),
    ]  # fmt: skip
    raw = b"".join(
        b"event: " + n.encode() + b"\ndata: " + orjson.dumps({"type": n, **e}) + b"\n\n"
        for n, e in events
    )
    assert reassemble(MESSAGES, raw, streamed=True) == Answer(
        "", (("find", '{"q":"x"}'),), "tool", False
    )


def test_errors_and_unknown_endpoints_are_unreadable() -> None:
    """An error body, an error event or another endpoint gives no answer (the sample is
    dropped, never counted as a disagreement)."""
    assert reassemble(CHAT, b'{"error": {"message": "x"}}', streamed=False) is None
    assert reassemble(MESSAGES, b'event: error\ndata: {"type":"error"}\n\n', streamed=True) is None
    assert reassemble("embeddings", b"{}", streamed=False) is None
    assert reassemble(CHAT, b"not json", streamed=False) is None


def test_canonical_arguments() -> None:
    assert canonical_arguments('{"b":1,"a":{"d":2,"c":3}}') == '{"a":{"c":3,"d":2},"b":1}'
    assert canonical_arguments({"z": 1, "y": 2}) == '{"y":2,"z":1}'
    assert canonical_arguments(" not json ") == "not json"


def test_refusal_and_finish_parity() -> None:
    """A refusal on one side only disagrees; so do different finish reasons."""
    ok = Answer("Paris", (), "stop")
    assert compare(Answer("Paris", (), "stop", True), ok).comparator == "refusal"
    assert not compare(Answer("Paris", (), "stop", True), ok).agree
    assert compare(Answer("Paris", (), "length"), ok) == compare(Answer("x", (), "tool"), ok)
    assert compare(Answer("Paris", (), "length"), ok).comparator == "finish"


def test_tool_calls_compare_by_name_and_canonical_arguments_in_any_order() -> None:
    a = Answer("", (("f", '{"a":1}'), ("g", "{}")), "tool")
    b = Answer("sure", (("g", "{}"), ("f", '{"a":1}')), "tool")
    c = Answer("", (("f", '{"a":2}'), ("g", "{}")), "tool")
    assert compare(a, b).agree and compare(a, b).comparator == "tool_calls"
    assert not compare(a, c).agree


def test_json_outputs_compare_by_validity_and_field_equality() -> None:
    assert compare(Answer('{"a": 1, "b": [1]}'), Answer('{"b":[1],"a":1}')).agree
    assert not compare(Answer('{"a": 1}'), Answer('{"a": 2}')).agree
    broken = compare(Answer('{"a": 1'), Answer('{"a": 1}'))
    assert (broken.agree, broken.comparator) == (False, "json")


def test_short_answers_compare_normalized() -> None:
    """Case, whitespace, quotes and trailing punctuation do not matter; words do."""
    assert normalized('  "Paris." ') == "paris"
    assert compare(Answer("The answer is  Paris."), Answer("the answer is paris")).agree
    assert compare(Answer("Paris"), Answer("Paris")).comparator == "short"
    assert not compare(Answer("Paris"), Answer("Lyon")).agree


def test_prose_compares_by_chrf_and_length_ratio() -> None:
    """Close paraphrases agree, unrelated or reversed text does not, and a text much
    longer than the other disagrees whatever its n-grams."""
    assert chrf(PROSE, PROSE) == pytest.approx(1.0)
    close = PROSE.replace("chunk by chunk", "piece by piece").replace("one", "a single")
    assert compare(Answer(close), Answer(PROSE)).agree
    assert compare(Answer(close), Answer(PROSE)).comparator == "prose"
    assert not compare(Answer(PROSE[::-1]), Answer(PROSE)).agree
    assert not compare(Answer(PROSE * 3), Answer(PROSE)).agree
    assert chrf(PROSE[::-1], PROSE) < 0.5


def test_sprt_boundaries() -> None:
    """Default test (margin 5%, alpha = beta = 0.05): no verdict before the minimum
    sample; 114 agreements in a row are non-inferior, 113 are not yet; one
    disagreement pushes that to 142; six disagreements in 30 are inferior, five not."""
    sprt = Sprt(margin=0.05, min_sample=30)
    assert sprt.verdict(29, 29) is None
    assert sprt.verdict(113, 0) is None
    assert sprt.verdict(114, 0) == NON_INFERIOR
    assert sprt.verdict(141, 1) is None
    assert sprt.verdict(142, 1) == NON_INFERIOR
    assert sprt.verdict(30, 5) is None
    assert sprt.verdict(30, 6) == INFERIOR
    assert sprt.verdict(30, 30) == INFERIOR
    assert Sprt(min_sample=10).verdict(10, 10) == INFERIOR
    with pytest.raises(ValueError):
        Sprt(margin=0)


def test_sampling_is_deterministic_by_the_body_hash() -> None:
    """The same body is always sampled or never; about `rate` of bodies are; rate 0 none,
    rate 1 all."""
    digests = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    share = sum(sampled(0.05, d) for d in digests) / len(digests)
    assert 0.035 < share < 0.065
    assert [sampled(0.05, d) for d in digests] == [sampled(0.05, d) for d in digests]
    assert not any(sampled(0.0, d) for d in digests)
    assert all(sampled(1.0, d) for d in digests)


def test_the_capture_never_holds_more_than_its_bound() -> None:
    """Past the bound the capture lets go of what it kept and keeps nothing more: a
    hostile or enormous answer cannot grow it."""
    capture = Capture(64 * 1024)
    chunk = b"x" * 60_000
    capture.feed(chunk)
    assert capture.body() == chunk
    for _ in range(200):  # 12 MB
        capture.feed(chunk)
        assert sum(map(len, capture.parts)) <= 64 * 1024
    assert capture.overflow and capture.body() == b""
