"""/v1/recovea/usage, scoped by the code alone: sums per grouping of the workspace's own
rollup rows (most requests first, or over time in time order), costs and savings (a
cache hit's included), null costs for unpriced models, window bounds.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from tests.ledger_api_mutants.support import (
    Ledger,
    Tenant,
    get,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# --- /v1/recovea/usage ----------------------------------------------------------------


async def test_usage_is_the_workspaces_own_rollups(ledger: Ledger) -> None:
    """By model (the default): the workspace's requests and tokens per model, largest
    first, and their totals; the other workspace's traffic is not counted."""
    answer = await get(ledger, "/v1/recovea/usage")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["object"], body["group_by"]) == ("usage", "model")
    by_model = {row["key"]: row for row in body["data"]}
    assert [row["key"] for row in body["data"]] == ["gpt-4o", "gpt-4o-mini"]
    assert (by_model["gpt-4o"]["requests"], by_model["gpt-4o"]["input_tokens"]) == (3, 30)
    assert by_model["gpt-4o"]["cache_hits"] == 1
    assert body["totals"]["requests"] == 4
    assert body["totals"]["output_tokens"] == 20
    assert datetime.fromisoformat(body["to"]) - datetime.fromisoformat(body["from"]) == (
        timedelta(days=30)
    )
    assert body["to"].endswith("+00:00")


@pytest.mark.parametrize(
    ("group_by", "key"),
    [("feature", "search"), ("provider", "openai"), ("realized_model", "gpt-4o")],
)
async def test_usage_groups_by_each_dimension(ledger: Ledger, group_by: str, key: str) -> None:
    """Each `group_by` groups the same requests by that dimension."""
    body = (await get(ledger, f"/v1/recovea/usage?group_by={group_by}")).json()
    assert body["group_by"] == group_by
    assert key in {row["key"] for row in body["data"]}
    assert body["totals"]["requests"] == 4


async def test_usage_costs_and_savings_are_decimal_strings(ledger: Ledger) -> None:
    """Baseline and realized cost, and savings (a cache hit costs nothing), are exact
    decimal strings, never in exponent form; the totals add them up."""
    body = (await get(ledger, "/v1/recovea/usage")).json()
    by_model = {row["key"]: row for row in body["data"]}
    for row in [*body["data"], body["totals"]]:
        money = [row["baseline_cost_usd"], row["realized_cost_usd"], row["savings_usd"]]
        assert all(isinstance(value, str) and "E" not in value.upper() for value in money)
        baseline, realized, savings = (Decimal(value) for value in money)
        assert savings == baseline - realized
        assert baseline > 0
    assert Decimal(by_model["gpt-4o"]["savings_usd"]) > 0
    assert by_model["gpt-4o-mini"]["savings_usd"] == "0"
    totals = body["totals"]
    for name in ("baseline_cost_usd", "realized_cost_usd"):
        assert Decimal(totals[name]) == sum(Decimal(row[name]) for row in body["data"])


async def test_usage_by_a_dimension_puts_the_most_requests_first(
    ledger: Ledger, two_hours: Tenant
) -> None:
    """Grouped by a dimension, the group with the most requests comes first, whatever
    its name."""
    body = (await get(ledger, "/v1/recovea/usage", two_hours)).json()
    assert [(row["key"], row["requests"]) for row in body["data"]] == [
        ("gpt-4o-mini", 2),
        ("gpt-4o", 1),
    ]


@pytest.mark.parametrize("group_by", ["hour", "day"])
async def test_usage_over_time_is_in_time_order(
    ledger: Ledger, two_hours: Tenant, group_by: str
) -> None:
    """`group_by=hour|day` gives one row per hour (or UTC day) that holds usage, keyed
    by its start in ISO 8601, oldest first even when a later one holds more requests;
    the rows add up to the same totals as by model."""
    body = (await get(ledger, f"/v1/recovea/usage?group_by={group_by}", two_hours)).json()
    assert body["group_by"] == group_by
    starts = [datetime.fromisoformat(row["key"]) for row in body["data"]]
    assert starts == sorted(starts)
    assert all(start.utcoffset() == timedelta(0) for start in starts)
    if group_by == "hour":
        assert [row["requests"] for row in body["data"]] == [1, 2]
        assert starts[1] - starts[0] == timedelta(hours=2)
    else:
        assert all((start.hour, start.minute) == (0, 0) for start in starts)
    by_model = (await get(ledger, "/v1/recovea/usage", two_hours)).json()
    assert body["totals"] == by_model["totals"]
    assert body["totals"]["requests"] == 3


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("group_by=color", "group_by must be one of feature, model,"),
        ("from=2026-02-01&to=2026-01-01", "from must be before to."),
        ("from=2026-01-01&to=2026-01-01", "from must be before to."),
        ("from=yesterday", "from must be an ISO 8601 date or time."),
        ("to=soon", "to must be an ISO 8601 date or time."),
    ],
)
async def test_a_bad_usage_query_is_a_400_that_says_why(
    ledger: Ledger, query: str, message: str
) -> None:
    """An unknown dimension, a window that ends before it starts, or a time that is not
    ISO 8601 is refused 400 with what is wrong."""
    answer = await get(ledger, f"/v1/recovea/usage?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["message"].startswith(message)


async def test_usage_of_a_window_without_traffic_is_empty(ledger: Ledger) -> None:
    """A window in the past with no traffic: no groups, zero totals, no costs."""
    body = (await get(ledger, "/v1/recovea/usage?from=2020-01-01&to=2020-01-02")).json()
    assert body["data"] == []
    assert body["totals"]["requests"] == 0
    assert body["totals"]["baseline_cost_usd"] is None
    assert body["from"].startswith("2020-01-01")


async def test_usage_of_a_model_without_a_price_has_no_costs(ledger: Ledger) -> None:
    """A model no price covers is counted (as unpriced) with null costs, not zero and
    not an error, and the totals' costs are the priced models' alone; a cost below a
    millionth of a dollar is still written out in plain decimals."""
    answer = await get(ledger, "/v1/recovea/usage", ledger.odd)
    assert answer.status_code == 200
    body = answer.json()
    by_model = {row["key"]: row for row in body["data"]}
    assert set(by_model) == {"gpt-4o-mini", "no-such-model"}
    unknown = by_model["no-such-model"]
    assert (unknown["requests"], unknown["unpriced"]) == (1, 1)
    assert (unknown["baseline_cost_usd"], unknown["realized_cost_usd"]) == (None, None)
    assert unknown["savings_usd"] is None
    tiny = by_model["gpt-4o-mini"]
    assert (tiny["baseline_cost_usd"], tiny["realized_cost_usd"]) == ("0.00000015", "0.00000015")
    assert tiny["savings_usd"] == "0"
    totals = body["totals"]
    assert (totals["requests"], totals["unpriced"]) == (2, 1)
    assert (totals["baseline_cost_usd"], totals["savings_usd"]) == ("0.00000015", "0")
