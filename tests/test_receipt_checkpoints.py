"""Receipts signed as checkpoints (RECOVEA_RECEIPT_SIGNING=checkpoint), end to end: the
gateway issues receipts unsigned and signs chain heads off the hot path — after N
receipts, after T ms, at shutdown — stores them, serves them to the workspace only, and
`recovea verify-receipt` checks a receipt against its checkpoint from public data and
the ledger."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from recovea_proxy.meter import verify
from recovea_proxy.meter.verify_checkpoint import decode_checkpoint
from tests.ledger_support import Tenant, make_tenant, owner_query
from tests.receipt_support import Signer, b64, canonical
from tests.support import Gateway, Postgres, cli, wait_until

#: no trigger but the count (the interval is far away)
BY_COUNT = {
    "RECOVEA_RECEIPT_SIGNING": "checkpoint",
    "RECOVEA_RECEIPT_CHECKPOINT_EVERY": "3",
    "RECOVEA_RECEIPT_CHECKPOINT_MS": "600000",
}
#: no trigger but the interval
BY_TIME = {
    "RECOVEA_RECEIPT_SIGNING": "checkpoint",
    "RECOVEA_RECEIPT_CHECKPOINT_EVERY": "1000000",
    "RECOVEA_RECEIPT_CHECKPOINT_MS": "200",
}
#: no trigger but shutdown
AT_EXIT = {
    "RECOVEA_RECEIPT_SIGNING": "checkpoint",
    "RECOVEA_RECEIPT_CHECKPOINT_EVERY": "1000000",
    "RECOVEA_RECEIPT_CHECKPOINT_MS": "600000",
}


def chat(
    gateway: Gateway, tenant: Tenant, n: int, *, stream: bool = False
) -> tuple[bytes, httpx.Response]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"m{n}"}]}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    raw = orjson.dumps(body)
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=raw,
        headers={**tenant.bearer, "content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return raw, response


def token_of(response: httpx.Response) -> str:
    """The receipt of a JSON response (header) or a stream (its closing comment line)."""
    if "recovea-receipt" in response.headers:
        return response.headers["recovea-receipt"]
    token = verify.receipt_from_response(response.content)
    assert token is not None
    return token


def checkpoint(gateway: Gateway, tenant: Tenant, chain: str, seq: int) -> httpx.Response:
    return httpx.get(
        f"{gateway.url}/v1/recovea/checkpoints",
        params={"chain": chain, "seq": seq},
        headers=tenant.bearer,
    )


def wait_checkpoint(gateway: Gateway, tenant: Tenant, chain: str, seq: int) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        response = checkpoint(gateway, tenant, chain, seq)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    result: dict[str, Any] = wait_until(found, 15, f"checkpoint of {chain} at seq {seq}")
    return result


def ledger_page(gateway: Gateway, tenant: Tenant, chain: str, last: int) -> dict[str, Any]:
    """The chain's export once the drainer has written it up to seq `last`."""

    def page() -> dict[str, Any] | None:
        body: dict[str, Any] = httpx.get(
            f"{gateway.url}/v1/recovea/ledger", params={"chain": chain}, headers=tenant.bearer
        ).json()
        return body if body["last_seq"] == last else None

    result: dict[str, Any] = wait_until(page, 15, f"ledger of {chain} to seq {last}")
    return result


def verify_cli(
    gateway: Gateway, env: dict[str, str], *args: str | Path, key: str = ""
) -> tuple[int, str]:
    done = cli(
        "verify-receipt",
        *map(str, args),
        "--keys",
        gateway.url,
        env={**env, "RECOVEA_API_KEY": key},
    )
    return done.returncode, done.stdout + done.stderr


def edited(token: str, **fields: Any) -> str:
    """The token with its payload changed (canonically), signature part kept."""
    head, _, signature = token.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return b64(canonical({**payload, **fields})) + "." + signature


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "checkpoints-main")


def test_default_receipts_are_still_signed_one_by_one(gateway: Gateway, tenant: Tenant) -> None:
    """Without RECOVEA_RECEIPT_SIGNING, every receipt carries its own signature."""
    _, response = chat(gateway, tenant, 0)
    assert verify.decode_token(token_of(response)).signed


def test_a_checkpoint_covers_every_n_receipts_and_verifies_end_to_end(
    start_gateway: Any, tenant: Tenant, db_env: dict[str, str], tmp_path: Path
) -> None:
    """Receipts go out unsigned (JSON header and SSE line alike); the N-th receipt of a
    chain brings a signed checkpoint of its head; the CLI verifies a receipt against the
    ledger and the checkpoint, and says a receipt alone is not yet verified."""
    gw = start_gateway(**BY_COUNT)
    sent = [chat(gw, tenant, 1), chat(gw, tenant, 2, stream=True), chat(gw, tenant, 3)]
    tokens = [token_of(response) for _, response in sent]
    assert all(token.endswith(".") for token in tokens)
    receipts = [verify.decode_token(token) for token in tokens]
    assert [r.signed for r in receipts] == [False] * 3
    assert [r.payload["seq"] for r in receipts] == [1, 2, 3]
    chain = receipts[0].payload["chain"]
    found = wait_checkpoint(gw, tenant, chain, 1)
    assert found["seq"] == 3 and found["chain"] == chain
    head = decode_checkpoint(found["token"]).payload
    assert head["head"] == receipts[2].digest and head["v"] == "recovea-checkpoint-v1"
    assert wait_checkpoint(gw, tenant, chain, 3)["seq"] == 3
    ledger_page(gw, tenant, chain, 3)

    # The stream: its receipt line, request and response, against the gateway's ledger.
    raw, streamed = sent[1]
    (tmp_path / "request.json").write_bytes(raw)
    (tmp_path / "stream.txt").write_bytes(streamed.content)
    code, out = verify_cli(
        gw,
        db_env,
        "--request",
        tmp_path / "request.json",
        "--response",
        tmp_path / "stream.txt",
        "--ledger",
        gw.url,
        key=tenant.key,
    )
    assert code == 0, out
    assert "checkpoint: ok (seq 2 covered by checkpoint seq 3" in out and "receipt OK" in out
    # The JSON response's header token.
    code, out = verify_cli(gw, db_env, tokens[0], "--ledger", gw.url, key=tenant.key)
    assert code == 0, out
    # Alone, a receipt is covered by a checkpoint not yet checked: not "OK".
    code, out = verify_cli(gw, db_env, tokens[0])
    assert code == 3, out
    assert "NOT YET VERIFIED" in out and "receipt OK" not in out
    # An edited receipt is not the ledger's.
    code, out = verify_cli(
        gw, db_env, edited(tokens[0], input_tokens=1), "--ledger", gw.url, key=tenant.key
    )
    assert code == 1 and "is not this receipt" in out


def test_a_forged_checkpoint_or_an_edited_export_fails(
    start_gateway: Any, tenant: Tenant, db_env: dict[str, str], tmp_path: Path
) -> None:
    """The whole-chain check: every receipt up to the last checkpoint is covered, the
    ones after it are reported as not yet covered; a checkpoint signed by another key,
    or one receipt changed, fails."""
    gw = start_gateway(**BY_COUNT)
    tokens = [token_of(chat(gw, tenant, 10 + n)[1]) for n in range(4)]
    chain = verify.decode_token(tokens[0]).payload["chain"]
    wait_checkpoint(gw, tenant, chain, 3)
    page = ledger_page(gw, tenant, chain, 4)
    assert [c["seq"] for c in page["checkpoints"]] == [3]
    export = tmp_path / "ledger.json"
    export.write_bytes(orjson.dumps(page))
    code, out = verify_cli(gw, db_env, "--ledger", export)
    assert code == 3, out
    assert "checkpoints: NOT YET VERIFIED (seq 4..4 not yet covered" in out
    # Receipt 3 is covered, though the chain's seq 4 is not yet.
    code, out = verify_cli(gw, db_env, tokens[2], "--ledger", export)
    assert code == 3, out
    assert "checkpoint: ok (seq 3 covered by checkpoint seq 3" in out
    code, out = verify_cli(gw, db_env, tokens[3], "--ledger", export)
    assert code == 3, out
    assert "checkpoint: NOT YET VERIFIED (no checkpoint covers seq 4 yet" in out

    forger = Signer()
    real = decode_checkpoint(page["checkpoints"][0]["token"])
    forged_payload = {**real.payload, "head": "f" * 64}
    forged = (
        b64(canonical(forged_payload)) + "." + b64(forger.private.sign(canonical(forged_payload)))
    )
    export.write_bytes(orjson.dumps({**page, "checkpoints": [{"token": forged}]}))
    code, out = verify_cli(gw, db_env, tokens[0], "--ledger", export)
    assert code == 1 and "signature does not verify" in out, out

    changed = [dict(entry) for entry in page["receipts"]]
    changed[1]["token"] = edited(changed[1]["token"], output_tokens=999)
    export.write_bytes(orjson.dumps({**page, "receipts": changed}))
    code, out = verify_cli(gw, db_env, tokens[0], "--ledger", export)
    assert code == 1 and "prev does not match" in out, out


def test_a_checkpoint_is_signed_within_the_interval(start_gateway: Any, tenant: Tenant) -> None:
    """One receipt, far from N: its chain's head is signed within T ms anyway."""
    gw = start_gateway(**BY_TIME)
    receipt = verify.decode_token(token_of(chat(gw, tenant, 20)[1]))
    found = wait_checkpoint(gw, tenant, receipt.payload["chain"], 1)
    assert found["seq"] == 1


def test_shutdown_signs_the_final_checkpoint(
    start_gateway: Any, tenant: Tenant, postgres: Postgres
) -> None:
    """A graceful stop signs every chain that moved, so every receipt issued is covered."""
    gw = start_gateway(**AT_EXIT)
    tokens = [token_of(chat(gw, tenant, 30 + n, stream=n == 1)[1]) for n in range(2)]
    chain = verify.decode_token(tokens[0]).payload["chain"]
    assert checkpoint(gw, tenant, chain, 1).status_code == 404
    gw.stop()
    rows = owner_query(
        postgres.url,
        "SELECT seq, customer_id::text FROM recovea.receipt_checkpoints WHERE chain_id = $1",
        chain,
    )
    assert [(row["seq"], row["customer_id"]) for row in rows] == [(2, tenant.workspace)]


def test_another_workspace_cannot_read_the_checkpoints(
    start_gateway: Any, tenant: Tenant, db_env: dict[str, str]
) -> None:
    """Checkpoints are the workspace's: another one's key gets 404 and an empty list."""
    gw = start_gateway(**BY_COUNT)
    tokens = [token_of(chat(gw, tenant, 40 + n)[1]) for n in range(3)]
    chain = verify.decode_token(tokens[0]).payload["chain"]
    wait_checkpoint(gw, tenant, chain, 1)
    other = make_tenant(db_env, "checkpoints-other")
    response = checkpoint(gw, other, chain, 1)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    page = httpx.get(
        f"{gw.url}/v1/recovea/ledger", params={"chain": chain}, headers=other.bearer
    ).json()
    assert page["receipts"] == [] and page["checkpoints"] == []
    assert checkpoint(gw, tenant, "not a chain!", 1).status_code == 400
    assert checkpoint(gw, tenant, chain, 0).status_code == 400


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RECOVEA_RECEIPT_SIGNING", "sometimes", "must be each or checkpoint"),
        ("RECOVEA_RECEIPT_CHECKPOINT_EVERY", "0", "must be a whole number, at least 1"),
        ("RECOVEA_RECEIPT_CHECKPOINT_EVERY", "1.5", "must be a whole number"),
        ("RECOVEA_RECEIPT_CHECKPOINT_MS", "soon", "must be a whole number"),
    ],
)
def test_bad_values_refuse_to_start(
    db_env: dict[str, str], name: str, value: str, message: str
) -> None:
    done = cli("serve", env={**db_env, name: value})
    assert done.returncode == 2
    assert f"{name} {message}" in done.stderr
