"""The verdict rules and the report readers, without a network: tolerances, the
direction of a difference, models matched undated, and pages that are not what the
providers document."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from recovea_proxy.reconcile import anthropic_report, openai_report
from recovea_proxy.reconcile.compare import model_key
from recovea_proxy.reconcile.figures import DayFigures, Malformed, page_items
from recovea_proxy.reconcile.verdict import Side, verdict


def side(requests: int | None, tokens: tuple[int, int, int], cost: str | None) -> Side:
    return Side(requests, *tokens, Decimal(cost) if cost is not None else None)


@pytest.mark.parametrize(
    ("provider", "ledger", "expected"),
    [
        (side(3, (36, 12, 48), "0.0001"), side(3, (36, 12, 48), "0.0001"), "match"),
        (side(100, (1000, 0, 1000), "1"), side(100, (1009, 0, 995), "1.009"), "match"),
        (side(4, (36, 12, 48), "0.0001"), side(3, (36, 12, 48), "0.0001"), "unmetered traffic"),
        (side(3, (36, 12, 48), "0.0001"), side(4, (36, 12, 48), "0.0001"), "token mismatch"),
        (side(3, (36, 12, 49), "0.0001"), side(3, (36, 12, 48), "0.0001"), "token mismatch"),
        (side(3, (36, 11, 48), "0.0001"), side(3, (36, 12, 48), "0.0001"), "token mismatch"),
        (side(3, (36, 12, 48), "0.0002"), side(3, (36, 12, 48), "0.0001"), "price drift"),
        (side(3, (36, 12, 48), "0.0001"), side(3, (36, 12, 48), None), "price drift"),
        (side(3, (36, 12, 48), None), side(3, (36, 12, 48), "0.0001"), "match"),
        # Anthropic reports no request count
        (side(None, (80, 40, 32), "0.1"), side(2, (80, 40, 32), "0.1"), "match"),
        (side(None, (120, 40, 48), "0.1"), side(2, (80, 40, 32), "0.1"), "unmetered traffic"),
        (side(None, (80, 40, 33), "0.1"), side(2, (80, 40, 32), "0.1"), "token mismatch"),
        (side(None, (10, 0, 10), None), side(0, (0, 0, 0), None), "unmetered traffic"),
        (side(None, (0, 0, 0), None), side(2, (80, 40, 32), None), "token mismatch"),
    ],
)
def test_verdicts_within_one_percent(provider: Side, ledger: Side, expected: str) -> None:
    assert verdict(provider, ledger, 1.0) == expected


def test_a_wider_tolerance_accepts_more() -> None:
    provider, ledger = side(100, (1000, 0, 1000), None), side(100, (1040, 0, 1000), None)
    assert verdict(provider, ledger, 1.0) == "token mismatch"
    assert verdict(provider, ledger, 5.0) == "match"


def test_models_are_matched_undated() -> None:
    assert model_key("gpt-4o-mini-2024-07-18") == model_key("gpt-4o-mini") == "gpt-4o-mini"
    assert model_key("claude-sonnet-4-5-20250929") == model_key("claude-sonnet-4-5")
    assert model_key("openai/gpt-4o") == "gpt-4o"
    assert model_key(None) == "(none)"


def pages_of(*answers: dict[str, Any]) -> Any:
    """A `pages` function that answers each report path with these pages' buckets."""

    async def pages(url: str, params: list[tuple[str, str]], headers: dict[str, str]) -> Any:
        buckets: list[Any] = []
        for page in answers:
            if page["_path"] in url:
                buckets += page_items(page)[0]
        return buckets

    return pages


async def test_openai_line_items_give_the_model_and_amounts_sum() -> None:
    usage = {
        "_path": "usage",
        "data": [
            {
                "results": [
                    {
                        "model": "gpt-4o-mini-2024-07-18",
                        "input_tokens": 30,
                        "input_cached_tokens": 10,
                        "output_tokens": 5,
                        "num_model_requests": 2,
                        "api_key_id": "key_a",
                        "project_id": None,
                    },
                ]
            }
        ],
    }
    costs = {
        "_path": "costs",
        "data": [
            {
                "results": [
                    {
                        "amount": {"value": 0.25, "currency": "usd"},
                        "line_item": "gpt-4o-mini-2024-07-18, input",
                        "project_id": None,
                    },
                    {
                        "amount": {"value": 0.5, "currency": "usd"},
                        "line_item": "gpt-4o-mini-2024-07-18, output",
                        "project_id": None,
                    },
                ]
            }
        ],
    }
    figures = DayFigures(date(2025, 1, 2))
    await openai_report.fetch_day(pages_of(usage, costs), "http://x", "k", figures)
    assert figures.rows[("gpt-4o-mini-2024-07-18", "key_a", "")].requests == 2
    cost_row = figures.rows[("gpt-4o-mini-2024-07-18", "", "")]
    assert cost_row.cost_usd == Decimal("0.75") and cost_row.requests is None


async def test_anthropic_input_adds_cache_reads_and_writes_and_cents_become_dollars() -> None:
    usage = {
        "_path": "usage_report",
        "data": [
            {
                "results": [
                    {
                        "model": "claude-haiku-4-5",
                        "uncached_input_tokens": 10,
                        "cache_read_input_tokens": 20,
                        "output_tokens": 7,
                        "cache_creation": {
                            "ephemeral_5m_input_tokens": 3,
                            "ephemeral_1h_input_tokens": 4,
                        },
                    },
                ]
            }
        ],
    }
    costs = {
        "_path": "cost_report",
        "data": [{"results": [{"model": "claude-haiku-4-5", "amount": "12.5", "currency": "USD"}]}],
    }
    figures = DayFigures(date(2025, 1, 2))
    await anthropic_report.fetch_day(pages_of(usage, costs), "http://x", "k", figures)
    row = figures.rows[("claude-haiku-4-5", "", "")]
    assert (row.input_tokens, row.cached_tokens, row.output_tokens) == (37, 20, 7)
    assert row.requests is None and row.cost_usd == Decimal("0.125")


@pytest.mark.parametrize(
    "page",
    [
        {"data": "oops"},
        {"data": [], "has_more": True},
        {"data": [], "has_more": "yes"},
        {"data": [{"no_results": []}], "has_more": False},
        {"data": [{"results": [{"model": "m", "input_tokens": -1}]}]},
        {"data": [{"results": [{"model": "m", "input_tokens": "12"}]}]},
        {"data": [{"results": [{"model": 7}]}]},
    ],
)
async def test_a_page_that_is_not_what_the_api_documents_is_malformed(page: Any) -> None:
    async def pages(url: str, params: list[tuple[str, str]], headers: dict[str, str]) -> Any:
        items: list[Any] = page_items(page)[0]
        return items

    with pytest.raises(Malformed):
        await openai_report.fetch_day(pages, "http://x", "k", DayFigures(date(2025, 1, 2)))
