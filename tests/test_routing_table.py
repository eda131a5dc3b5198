"""The routing table and the fallback's verdicts, in-process: the most specific rule
wins, a plan holds each target once with the caller's model last (and its key sets
routed requests apart in the cache), and the first event of a stream tells content
from an error past any preamble."""

from __future__ import annotations

from recovea_proxy.fallback import first_verdict, retry_after_s
from recovea_proxy.levers.cache_key import key_of
from recovea_proxy.route_table import RouteTable, Rule


def test_the_table_matches_the_most_specific_rule_and_keeps_the_baseline_last() -> None:
    """Compiled rules: one probe by (surface, model), the most specific matching rule
    first; the plan holds each target once and the caller's model last; a rule to
    another provider is filed only under surfaces of the same wire format."""
    table = RouteTable(
        [
            Rule("a", "gpt-4o", "gpt-4o-mini", fallbacks=("gpt-4o-mini", "gpt-4o")),
            Rule("b", "gpt-4o", "gpt-4.1-nano", feature="bulk", env="live"),
            Rule("c", "gpt-4o", "openai/gpt-4o-mini", provider="openrouter"),
        ]
    )
    plan = table.match("openai", "/v1/chat/completions", "gpt-4o", None, "live")
    assert plan is not None and plan.rule_id == "a"
    assert [(t.provider, t.model) for t in plan.targets] == [
        ("openai", "gpt-4o-mini"),
        ("openai", "gpt-4o"),
    ]
    bulk = table.match("openai", "/v1/chat/completions", "gpt-4o", "bulk", "live")
    assert bulk is not None and bulk.rule_id == "b"
    assert table.match("openai", "/v1/chat/completions", "gpt-4o-mini", None, "live") is None
    # rule c is filed for openrouter (and openai, after a), never for anthropic
    routed = table.match("openrouter", "/v1/chat/completions", "gpt-4o", None, "live")
    assert routed is not None and routed.rule_id == "a"
    assert table.match("anthropic", "/v1/messages", "gpt-4o", None, "live") is not None
    assert [t.label for t in plan.targets] == ["gpt-4o-mini", "gpt-4o"]
    assert key_of("w", "POST", "openai", "/v1/chat/completions", {"m": 1}, plan.key) != key_of(
        "w", "POST", "openai", "/v1/chat/completions", {"m": 1}
    )


def test_the_first_event_verdict_reads_past_the_preamble() -> None:
    """Comments, pings, the message start and role-only chunks are not content; an error
    event (Anthropic's `event: error`, OpenAI's `{"error": …}`) before content is."""
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},' + (
        b'"finish_reason":null}]}\n\n'
    )
    text = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\n\n'
    assert first_verdict(b": OPENROUTER PROCESSING\n\n" + role) is None
    assert first_verdict(role + text) == "content"
    assert first_verdict(role + b'data: {"error":{"message":"x"}}\n\n') == "error"
    assert first_verdict(b"event: ping\ndata: {}\n\nevent: error\ndata: {}\n\n") == "error"
    assert first_verdict(b'event: message_start\r\ndata: {"type":"message_start"}\r\n\r\n') is None
    assert first_verdict(b"data: [DONE]\n\n") == "content"
    assert first_verdict(text[:-1]) is None
    assert (retry_after_s("1.5"), retry_after_s("soon"), retry_after_s(None)) == (1.5, None, None)
