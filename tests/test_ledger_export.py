"""The ledger export states where a chain starts and ends: every page of
`GET /v1/recovea/ledger?chain=ID` carries the chain's stored `first_seq` and
`last_seq`, and `recovea verify-receipt` holds the receipts it is given to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from recovea_proxy.meter import verify
from tests.ledger_support import Tenant, make_tenant, owner_query, stored
from tests.support import Gateway, cli


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "ledger-export")


def new_chain(
    gateway: Gateway, db_env: dict[str, str], name: str, count: int
) -> tuple[Tenant, list[str]]:
    """A fresh workspace (so a chain of its own) and `count` receipts, all stored."""
    tenant = make_tenant(db_env, name)
    tokens = []
    for n in range(count):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": f"{name} {n}"}]},
            headers=tenant.bearer,
            timeout=30,
        )
        assert response.status_code == 200, response.text
        tokens.append(response.headers["recovea-receipt"])
    stored(gateway, tenant, "receipts", verify.decode_token(tokens[-1]).payload["request_id"])
    return tenant, tokens


def chain_of(tokens: list[str]) -> str:
    return str(verify.decode_token(tokens[0]).payload["chain"])


def page(gateway: Gateway, tenant: Tenant, chain: str, **params: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{gateway.url}/v1/recovea/ledger",
        params={"chain": chain, **params},
        headers=tenant.bearer,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def pages(gateway: Gateway, tenant: Tenant, chain: str, limit: int) -> list[dict[str, Any]]:
    """Every page of a chain, following next_after_seq."""
    found = [page(gateway, tenant, chain, limit=limit)]
    while found[-1]["has_more"]:
        found.append(
            page(gateway, tenant, chain, limit=limit, after_seq=found[-1]["next_after_seq"])
        )
    return found


def verify_ledger(
    gateway: Gateway, env: dict[str, str], tmp: Path, export: Any, *args: str
) -> tuple[int, str]:
    ledger = tmp / "ledger.json"
    ledger.write_bytes(orjson.dumps(export))
    done = cli("verify-receipt", *args, "--keys", gateway.url, "--ledger", str(ledger), env=env)
    return done.returncode, done.stdout + done.stderr


def test_every_page_states_the_chains_first_and_last_seq(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """Whichever page you ask for, it says where the stored chain starts and ends."""
    tenant, tokens = new_chain(gateway, db_env, "export-bounds", 5)
    found = pages(gateway, tenant, chain_of(tokens), limit=2)
    assert [(p["first_seq"], p["last_seq"], p["has_more"]) for p in found] == [
        (1, 5, True),
        (1, 5, True),
        (1, 5, False),
    ]
    assert [entry["token"] for p in found for entry in p["receipts"]] == tokens
    past_the_end = page(gateway, tenant, chain_of(tokens), after_seq=5)
    assert (past_the_end["first_seq"], past_the_end["last_seq"]) == (1, 5)
    assert past_the_end["receipts"] == []


def test_an_unknown_chain_states_no_bounds(gateway: Gateway, tenant: Tenant) -> None:
    """A chain this workspace does not have: an empty page, with null first and last seq."""
    body = page(gateway, tenant, "f" * 32)
    assert (body["first_seq"], body["last_seq"], body["receipts"]) == (None, None, [])


def test_another_workspaces_chain_states_no_bounds(
    gateway: Gateway, db_env: dict[str, str], tenant: Tenant
) -> None:
    """The bounds are the workspace's: another workspace's chain looks unknown."""
    _, tokens = new_chain(gateway, db_env, "export-other", 1)
    body = page(gateway, tenant, chain_of(tokens))
    assert (body["first_seq"], body["last_seq"], body["receipts"]) == (None, None, [])


@pytest.mark.parametrize("chain", ["\x00", "a" * 129, "a b", "é", "../x"])
def test_a_chain_id_that_is_not_one_is_a_bad_request(
    gateway: Gateway, tenant: Tenant, chain: str
) -> None:
    """A `chain` that cannot be a chain id (a NUL, too long, other characters) is 400,
    in the OpenAI error shape, before the database sees it."""
    response = httpx.get(
        f"{gateway.url}/v1/recovea/ledger", params={"chain": chain}, headers=tenant.bearer
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


def test_the_verifier_catches_a_missing_last_page(
    gateway: Gateway, db_env: dict[str, str], tmp_path: Path
) -> None:
    """A real export, all pages: it verifies, the client's newest receipt in it. Without
    its last page the chain's stated end shows the cut tail."""
    tenant, tokens = new_chain(gateway, db_env, "export-tail", 5)
    found = pages(gateway, tenant, chain_of(tokens), limit=2)
    code, out = verify_ledger(gateway, db_env, tmp_path, found, tokens[-1])
    assert code == 0, out
    assert "chain_end: ok (seq 5, the export's last_seq)" in out
    assert f"in_chain: ok (chain {chain_of(tokens)}, seq 5)" in out
    code, out = verify_ledger(gateway, db_env, tmp_path, found[:-1])
    assert code == 1, out
    assert (
        "FAILED: chain_end: the ledger ends at seq 4 but the export's last_seq is 5:"
        " its tail is missing"
    ) in out


def test_a_chain_whose_head_is_gone_verifies_only_from_an_accepted_seq(
    gateway: Gateway, db_env: dict[str, str], tmp_path: Path
) -> None:
    """Once a chain's oldest receipts are gone (as retention deletes them), the export
    starts at seq 3 and says so; the verifier fails it unless told --first-seq 3."""
    tenant, tokens = new_chain(gateway, db_env, "export-head", 4)
    chain = chain_of(tokens)
    owner_query(
        db_env["RECOVEA_DATABASE_URL"],
        "DELETE FROM recovea.receipts WHERE chain_id = $1 AND seq < 3",
        chain,
    )
    export = page(gateway, tenant, chain)
    assert (export["first_seq"], export["last_seq"]) == (3, 4)
    code, out = verify_ledger(gateway, db_env, tmp_path, export)
    assert code == 1, out
    assert "FAILED: chain_start: the ledger starts at seq 3, not 1: its head is missing" in out
    code, out = verify_ledger(gateway, db_env, tmp_path, export, "--first-seq", "3")
    assert code == 0, out
    assert "chain_start: ok (seq 3, as accepted; its prev cannot be checked against genesis)" in out
