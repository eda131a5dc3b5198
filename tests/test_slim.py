"""Slim's transforms: lossless, deterministic and idempotent, so that a conversation's
prefix stays byte-stable across turns (the provider's prompt cache keeps hitting)."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from recovea_proxy.levers.slim import minified_json, slim_body

PRETTY = json.dumps({"city": "Paris", "temp": 21.50, "tags": ["a", "b"]}, indent=2)
COMPACT = '{"city":"Paris","temp":21.5,"tags":["a","b"]}'


def slimmed(body: dict[str, Any]) -> dict[str, Any]:
    copied = copy.deepcopy(body)
    slim_body(copied)
    return copied


def test_top_level_nulls_go_and_nested_ones_stay() -> None:
    body = {
        "model": "gpt-4o",
        "temperature": None,
        "stop": None,
        "messages": [{"role": "user", "content": "hi", "name": None}],
        "response_format": {"type": "json_schema", "json_schema": {"strict": None}},
    }
    out = slimmed(body)
    assert "temperature" not in out and "stop" not in out
    assert out["messages"][0] == {"role": "user", "content": "hi", "name": None}
    assert out["response_format"]["json_schema"] == {"strict": None}


def test_an_openai_tool_result_loses_only_the_whitespace_between_tokens() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": PRETTY},  # the user's text: never touched
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{ "city" : "Paris" }'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": PRETTY},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": PRETTY}],
            },
        ],
    }
    out = slimmed(body)
    messages = out["messages"]
    assert messages[0]["content"] == PRETTY
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{ "city" : "Paris" }'
    assert messages[2]["content"] == COMPACT
    assert messages[3]["content"][0]["text"] == COMPACT


def test_anthropic_tool_results_are_trimmed_and_everything_else_is_kept() -> None:
    thinking = {"type": "thinking", "thinking": "let me see  {  }", "signature": "c2ln"}
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "x"}}
    body = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 64,
        "system": [{"type": "text", "text": PRETTY, "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "assistant",
                "content": [thinking, {"type": "redacted_thinking", "data": "e"}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": PRETTY,
                        "cache_control": {"type": "ephemeral"},
                    },
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": PRETTY}, image],
                    },
                    {"type": "text", "text": PRETTY},
                ],
            },
        ],
    }
    out = slimmed(body)
    assert out["system"] == body["system"]
    assert out["messages"][0] == body["messages"][0]
    blocks = out["messages"][1]["content"]
    assert blocks[0] == {**body["messages"][1]["content"][0], "content": COMPACT}
    assert blocks[1]["content"] == [{"type": "text", "text": COMPACT}, image]
    assert blocks[2] == {"type": "text", "text": PRETTY}


def test_a_responses_function_call_output_is_trimmed() -> None:
    body = {
        "model": "gpt-4o",
        "input": [
            {"role": "user", "content": PRETTY},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{ }"},
            {"type": "function_call_output", "call_id": "c1", "output": PRETTY},
        ],
    }
    out = slimmed(body)
    assert out["input"][0]["content"] == PRETTY
    assert out["input"][1]["arguments"] == "{ }"
    assert out["input"][2]["output"] == COMPACT


def test_numbers_escapes_and_key_order_are_kept_as_written() -> None:
    text = '{\n  "z": 1e5,\n  "a": "caf\\u00e9  two  spaces\\n",\n  "dup": 1, "dup": 2.50\n}'
    assert minified_json(text) == '{"z":1e5,"a":"caf\\u00e9  two  spaces\\n","dup":1,"dup":2.50}'


def test_text_that_is_not_one_json_document_is_left_alone() -> None:
    for text in ("plain words", '{"a": 1} trailing', "[1, 2", "  42  ", '"a string"', ""):
        assert minified_json(text) is None
    body = {"messages": [{"role": "tool", "content": "sunny,  21 C"}]}
    assert slim_body(copy.deepcopy(body)) is False


def test_nothing_to_trim_reports_no_change_and_leaves_the_body_as_it_was() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "tool", "content": COMPACT}]}
    copied = copy.deepcopy(body)
    assert slim_body(copied) is False
    assert copied == body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=8), json_values, max_size=5) | st.lists(json_values),
    indent=st.sampled_from([None, 1, 2, 4, "\t"]),
    nulls=st.dictionaries(st.sampled_from(["stop", "seed", "user", "top_p"]), st.none()),
)
def test_slim_is_lossless_deterministic_and_idempotent(
    value: Any, indent: Any, nulls: dict[str, None]
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=False)
    body = {"model": "m", **nulls, "messages": [{"role": "tool", "content": text}]}
    once, twice = slimmed(body), slimmed(body)
    assert orjson.dumps(once) == orjson.dumps(twice)  # deterministic
    assert slimmed(once) == once  # idempotent
    assert json.loads(once["messages"][0]["content"]) == value  # lossless
    assert not set(nulls) & set(once)


def test_every_turns_slimmed_prefix_is_the_previous_turns_slimmed_request() -> None:
    """A conversation replayed turn by turn: each turn's slimmed messages start with
    exactly the bytes of the previous turn's slimmed messages."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are terse."}]
    previous: list[bytes] = []
    for turn in range(6):
        messages.append({"role": "user", "content": f"question {turn}\n\n  indented  "})
        messages.append(
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": f"call_{turn}",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": f'{{"n": {turn}}}'},
                    }
                ],
            }
        )
        result = {"turn": turn, "rows": [{"id": i, "v": i * 1.5} for i in range(3)]}
        pretty = json.dumps(result, indent=2)
        messages.append({"role": "tool", "tool_call_id": f"call_{turn}", "content": pretty})
        body = {"model": "gpt-4o", "temperature": None, "messages": copy.deepcopy(messages)}
        current = [orjson.dumps(m) for m in slimmed(body)["messages"]]
        assert current[: len(previous)] == previous
        previous = current
