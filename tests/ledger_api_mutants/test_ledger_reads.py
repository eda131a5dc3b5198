"""The ledger API's reads, scoped by the code alone: a workspace sees exactly its own
requests (the latest, a page at a time, in a window), receipts and chains (paged in seq
order, with the checkpoints signed within each page), another workspace's ids are 404;
the route table under test is the gateway's own.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from recovea_proxy.admin.api import ADMIN_ROUTES
from recovea_proxy.meter.api import LEDGER_ROUTES
from recovea_proxy.meter.event import COLUMNS
from tests.ledger_api_mutants.support import (
    Ledger,
    Tenant,
    _shape,
    get,
    routes,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_these_routes_are_the_gateways() -> None:
    """The table the tests below serve is the gateway's own: same paths and methods."""
    assert _shape(routes()) == _shape([*LEDGER_ROUTES, *ADMIN_ROUTES])


# --- /v1/recovea/requests --------------------------------------------------------------


async def test_a_request_row_is_returned_with_exactly_the_ledgers_columns(ledger: Ledger) -> None:
    """The stored row of one of the workspace's requests: every column, typed for JSON
    (ids as text, the time as ISO 8601, levers as an object), for any key of it."""
    request_id = ledger.mine.requests[0]
    for role in ("admin", "member"):
        answer = await get(ledger, f"/v1/recovea/requests/{request_id}", role=role)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/json"
        row = answer.json()
        assert list(row) == list(COLUMNS)
        assert row["request_id"] == request_id
        assert row["customer_id"] == ledger.mine.id
        assert row["rcv_key_id"] == ledger.mine.admin.id
        assert uuid.UUID(row["route_id"])
        assert row["levers_fired"] == {"cache": "miss"}
        assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (10, 5, 2)
        assert row["reasoning_tokens"] is None
        assert datetime.fromisoformat(row["ts"]).tzinfo is not None
        assert (row["baseline_cost"], row["realized_cost"]) == (None, None)


async def test_another_workspaces_request_is_not_found(ledger: Ledger) -> None:
    """Another workspace's request id, an unknown one and a malformed one: 404, the same
    answer, so a caller cannot tell which exist."""
    for request_id in (ledger.theirs.requests[0], uuid.uuid4().hex, "not-an-id"):
        answer = await get(ledger, f"/v1/recovea/requests/{request_id}")
        assert answer.status_code == 404
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {
            "error": {
                "message": "No request with that id in this workspace.",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }


async def test_the_latest_requests_are_the_workspaces_rows_newest_first(ledger: Ledger) -> None:
    """`GET /v1/recovea/requests` lists the workspace's rows of the last 24 hours up to
    now, newest first, each exactly its `GET /v1/recovea/requests/{id}` row, for any key
    of it; another workspace's rows are not among them."""
    before = datetime.now(UTC)
    answer = await get(ledger, "/v1/recovea/requests", role="member")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    listed = answer.json()
    assert list(listed) == ["object", "from", "to", "data", "has_more"]
    assert (listed["object"], listed["has_more"]) == ("list", False)
    assert [row["request_id"] for row in listed["data"]] == ledger.mine.requests
    one = await get(ledger, f"/v1/recovea/requests/{ledger.mine.requests[0]}")
    assert listed["data"][0] == one.json()
    since, until = (datetime.fromisoformat(listed[name]) for name in ("from", "to"))
    assert until - since == timedelta(days=1)
    assert until.utcoffset() == timedelta(0)
    assert before <= until <= datetime.now(UTC)


async def test_the_latest_requests_come_limit_at_a_time(ledger: Ledger, long_chain: Tenant) -> None:
    """`limit` rows at most (50 unless asked, 0 read as 1), and `has_more` says whether
    older rows in the window were left out."""
    mine = ledger.mine.requests
    for limit, rows, more in ((2, mine[:2], True), (4, mine, False), (0, mine[:1], True)):
        page = (await get(ledger, f"/v1/recovea/requests?limit={limit}")).json()
        assert [row["request_id"] for row in page["data"]] == rows, limit
        assert page["has_more"] is more, limit
    default = (await get(ledger, "/v1/recovea/requests", long_chain)).json()
    assert [row["request_id"] for row in default["data"]] == long_chain.requests[:50]
    assert default["has_more"] is True
    largest = await get(ledger, "/v1/recovea/requests?limit=500", long_chain)
    assert len(largest.json()["data"]) == 500


async def test_the_latest_requests_are_those_in_from_to(ledger: Ledger) -> None:
    """The window is [from, to): a row at `from` is in it, a row at `to` is not; without
    `from` it starts 24 hours before `to`."""
    rows = (await get(ledger, "/v1/recovea/requests")).json()["data"]
    newest, second, third = (row["ts"] for row in rows[:3])
    window = {"from": third, "to": newest}
    answer = await ledger.client.get(
        "/v1/recovea/requests", params=window, headers=ledger.mine.auth()
    )
    listed = answer.json()
    assert [row["ts"] for row in listed["data"]] == [second, third]
    assert (listed["from"], listed["to"]) == (third, newest)
    answer = await ledger.client.get(
        "/v1/recovea/requests", params={"to": newest}, headers=ledger.mine.auth()
    )
    listed = answer.json()
    assert [row["request_id"] for row in listed["data"]] == ledger.mine.requests[1:]
    since = datetime.fromisoformat(newest) - timedelta(days=1)
    assert (listed["from"], listed["to"]) == (since.isoformat(), newest)
    past = (await get(ledger, "/v1/recovea/requests?from=2020-01-01&to=2020-01-02")).json()
    assert (past["data"], past["has_more"]) == ([], False)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-02-01&to=2026-01-01", "from must be before to."),
        ("from=2026-01-01&to=2026-01-01", "from must be before to."),
        ("from=yesterday", "from must be an ISO 8601 date or time."),
        ("to=soon", "to must be an ISO 8601 date or time."),
        ("limit=501", "limit must be an integer from 0 to 500."),
        ("limit=two", "limit must be an integer from 0 to 500."),
    ],
)
async def test_a_bad_request_list_query_is_a_400_that_says_why(
    ledger: Ledger, query: str, message: str
) -> None:
    """A window that ends before it starts, a time that is not ISO 8601 or a page size
    out of bounds is refused 400 with what is wrong."""
    answer = await get(ledger, f"/v1/recovea/requests?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"
    assert answer.json()["error"]["message"] == message


# --- /v1/recovea/receipts --------------------------------------------------------------


async def test_a_receipt_is_returned_for_its_workspace_only(ledger: Ledger) -> None:
    """The workspace's receipt: its request id, chain, seq, kid and token; another
    workspace's is 404."""
    request_id = ledger.mine.requests[0]
    answer = await get(ledger, f"/v1/recovea/receipts/{request_id}")
    assert answer.status_code == 200
    receipt = answer.json()
    assert set(receipt) == {"request_id", "chain", "seq", "kid", "token"}
    assert (receipt["request_id"], receipt["chain"], receipt["seq"]) == (
        request_id,
        ledger.mine.chain,
        1,
    )
    assert receipt["kid"].startswith("rk_") and "." in receipt["token"]
    theirs = await get(ledger, f"/v1/recovea/receipts/{ledger.theirs.requests[0]}")
    assert theirs.status_code == 404
    assert theirs.json()["error"]["message"] == "No receipt with that id in this workspace."


# --- /v1/recovea/ledger ----------------------------------------------------------------


async def test_the_ledger_lists_the_workspaces_own_chains(ledger: Ledger) -> None:
    """Without `chain=`: the workspace's chains only, each with its first and last seq,
    its count and its time span."""
    answer = await get(ledger, "/v1/recovea/ledger")
    assert answer.status_code == 200
    body = answer.json()
    assert body["object"] == "list"
    [chain] = body["data"]
    assert (chain["chain"], chain["first_seq"], chain["last_seq"], chain["receipts"]) == (
        ledger.mine.chain,
        1,
        4,
        4,
    )
    assert datetime.fromisoformat(chain["first_ts"]) <= datetime.fromisoformat(chain["last_ts"])


async def test_a_chain_is_paged_in_seq_order(ledger: Ledger) -> None:
    """`chain=` pages the chain from `after_seq`, `limit` at a time, with the chain's
    stored first and last seq, `has_more` and where the next page starts."""
    base = f"/v1/recovea/ledger?chain={ledger.mine.chain}"
    first = (await get(ledger, f"{base}&limit=3")).json()
    assert first["object"] == "recovea-chain-v1"
    assert (first["chain"], first["first_seq"], first["last_seq"]) == (ledger.mine.chain, 1, 4)
    assert [r["seq"] for r in first["receipts"]] == [1, 2, 3]
    assert set(first["receipts"][0]) == {"request_id", "seq", "kid", "token"}
    assert (first["has_more"], first["next_after_seq"]) == (True, 3)
    rest = (await get(ledger, f"{base}&after_seq=3")).json()
    assert [r["seq"] for r in rest["receipts"]] == [4]
    assert (rest["has_more"], rest["next_after_seq"]) == (False, None)
    whole = (await get(ledger, base)).json()
    assert [r["seq"] for r in whole["receipts"]] == [1, 2, 3, 4]
    assert whole["has_more"] is False
    one = (await get(ledger, f"{base}&limit=0")).json()
    assert [r["seq"] for r in one["receipts"]] == [1]
    exact = (await get(ledger, f"{base}&limit=4")).json()
    assert (len(exact["receipts"]), exact["has_more"], exact["next_after_seq"]) == (4, False, None)
    far = await get(ledger, f"{base}&after_seq={2**62}")
    assert (far.status_code, far.json()["receipts"]) == (200, [])


async def test_a_chain_page_is_1000_receipts_unless_asked(
    ledger: Ledger, long_chain: Tenant
) -> None:
    """Without `limit`, a page of a chain holds 1000 receipts, and says where the next
    one starts."""
    page = (await get(ledger, f"/v1/recovea/ledger?chain={long_chain.chain}", long_chain)).json()
    assert (page["first_seq"], page["last_seq"]) == (1, 1001)
    assert [r["seq"] for r in page["receipts"]] == list(range(1, 1001))
    assert (page["has_more"], page["next_after_seq"]) == (True, 1000)


async def test_another_workspaces_chain_reads_as_empty(ledger: Ledger) -> None:
    """Asking for another workspace's chain id gives an empty page with no bounds, as
    for a chain that does not exist."""
    answer = await get(ledger, f"/v1/recovea/ledger?chain={ledger.theirs.chain}")
    body = answer.json()
    assert (body["receipts"], body["first_seq"], body["last_seq"], body["has_more"]) == (
        [],
        None,
        None,
        False,
    )


async def test_each_chain_page_lists_the_checkpoints_signed_within_it(
    ledger: Ledger, checkpointed: Tenant
) -> None:
    """A page of a chain lists the chain's signed checkpoints after its `after_seq`, up
    to its last receipt when more pages follow: pages read in order list each
    checkpoint once, beside the receipts it covers."""
    base = f"/v1/recovea/ledger?chain={checkpointed.chain}&limit=2"
    first = (await get(ledger, base, checkpointed)).json()
    assert [r["seq"] for r in first["receipts"]] == [1, 2]
    assert [c["seq"] for c in first["checkpoints"]] == [2]
    [checkpoint] = first["checkpoints"]
    assert set(checkpoint) == {"object", "chain", "seq", "kid", "token", "created_at"}
    assert (checkpoint["object"], checkpoint["chain"]) == (
        "recovea-checkpoint-v1",
        checkpointed.chain,
    )
    assert checkpoint["kid"] == first["receipts"][0]["kid"]
    assert datetime.fromisoformat(checkpoint["created_at"]).tzinfo is not None
    rest = (await get(ledger, f"{base}&after_seq=2", checkpointed)).json()
    assert [r["seq"] for r in rest["receipts"]] == [3]
    assert [c["seq"] for c in rest["checkpoints"]] == [4]
    assert (await get(ledger, base)).json()["checkpoints"] == []


async def test_a_checkpoint_past_the_last_stored_receipt_is_on_the_last_page(
    ledger: Ledger, checkpointed: Tenant
) -> None:
    """A checkpoint whose receipt was never stored (its event set aside) is listed on the
    chain's last page, even one exactly full: a verifier sees the chain goes on past the
    receipts it was given."""
    path = f"/v1/recovea/ledger?chain={checkpointed.chain}&limit=3"
    page = (await get(ledger, path, checkpointed)).json()
    assert ([r["seq"] for r in page["receipts"]], page["last_seq"]) == ([1, 2, 3], 3)
    assert page["has_more"] is False
    assert [c["seq"] for c in page["checkpoints"]] == [2, 4]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("chain=bad%20id", "chain must be a chain id."),
        ("chain=abc&after_seq=-1", "after_seq must be an integer from 0 to"),
        (f"chain=abc&after_seq={2**62 + 1}", f"after_seq must be an integer from 0 to {2**62}."),
        ("chain=abc&limit=x", "limit must be an integer from 0 to 10000."),
        ("chain=abc&limit=10001", "limit must be an integer from 0 to 10000."),
    ],
)
async def test_a_bad_ledger_query_is_a_400_that_says_why(
    ledger: Ledger, query: str, message: str
) -> None:
    """A malformed chain id, offset or page size is refused 400 with what is wrong."""
    answer = await get(ledger, f"/v1/recovea/ledger?{query}")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_request"
    assert answer.json()["error"]["message"].startswith(message)


@pytest.mark.parametrize("value", ["%C2%B2", "%C2%B9%C2%B2", "%E2%91%A0"])
async def test_a_page_size_or_offset_in_other_digits_than_0_to_9_is_a_400(
    ledger: Ledger, value: str
) -> None:
    """`limit` and `after_seq` are numbers: a superscript or circled digit (a digit to
    `str.isdigit`, but no number to `int`) is refused 400, not a 500."""
    for name in ("limit", "after_seq"):
        answer = await get(ledger, f"/v1/recovea/ledger?chain=abc&{name}={value}")
        assert answer.status_code == 400, name
        assert answer.json()["error"]["message"].startswith(f"{name} must be an integer")


async def test_the_largest_page_is_allowed(ledger: Ledger) -> None:
    """`limit` up to 10000 is accepted."""
    answer = await get(ledger, f"/v1/recovea/ledger?chain={ledger.mine.chain}&limit=10000")
    assert answer.status_code == 200
