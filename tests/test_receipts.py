"""Receipts end to end: the gateway signs, the client keeps what it got, and
`recovea verify-receipt` checks it all from public data only."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from recovea_proxy.meter import verify
from tests.conftest import SdkClients, upstream_env
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer, Postgres, cli, wait_until


@pytest.fixture(scope="module")
def tenant(db_env: dict[str, str]) -> Tenant:
    return make_tenant(db_env, "receipts-main")


def verify_cli(
    gateway: Gateway,
    tmp: Path,
    token: str | None,
    *,
    request: bytes | None = None,
    response: bytes | None = None,
    ledger: bytes | None = None,
    env: dict[str, str],
) -> tuple[int, str]:
    args = ["verify-receipt"]
    if token is not None:
        args.append(token)
    args += ["--keys", gateway.url]
    for name, data in (("request", request), ("response", response), ("ledger", ledger)):
        if data is not None:
            path = tmp / f"{name}.bin"
            path.write_bytes(data)
            args += [f"--{name}", str(path)]
    done = cli(*args, env=env)
    return done.returncode, done.stdout + done.stderr


def post(
    gateway: Gateway, tenant: Tenant, path: str, body: dict[str, object], **headers: str
) -> tuple[bytes, httpx.Response]:
    raw = orjson.dumps(body)
    response = httpx.post(
        f"{gateway.url}{path}",
        content=raw,
        headers={
            **tenant.bearer,
            "content-type": "application/json",
            # as the Anthropic SDK: on Anthropic's calls only (on any bare /v1/* path
            # it makes the call Anthropic's)
            **({"anthropic-version": "2023-06-01"} if path.startswith("/v1/messages") else {}),
            **headers,
        },
        timeout=30,
    )
    return raw, response


def test_a_non_streamed_receipt_verifies_from_public_data(
    gateway: Gateway, tenant: Tenant, tmp_path: Path, db_env: dict[str, str]
) -> None:
    raw, response = post(
        gateway,
        tenant,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "receipt please"}]},
        **{"x-mock-input-tokens": "12", "x-mock-output-tokens": "5"},
    )
    token = response.headers["recovea-receipt"]
    receipt = verify.decode_token(token)
    assert receipt.payload["request_id"] == response.headers["x-request-id"]
    assert receipt.payload["customer_id"] == tenant.workspace
    assert (receipt.payload["input_tokens"], receipt.payload["output_tokens"]) == (12, 5)
    assert receipt.payload["status"] == "success"
    code, out = verify_cli(
        gateway, tmp_path, token, request=raw, response=response.content, env=db_env
    )
    assert code == 0, out
    assert "tokens: match" in out and "receipt OK" in out
    # The stored receipt is the same token.
    assert stored(gateway, tenant, "receipts", response.headers["x-request-id"])["token"] == token


def test_a_changed_response_or_request_file_fails(
    gateway: Gateway, tenant: Tenant, tmp_path: Path, db_env: dict[str, str]
) -> None:
    raw, response = post(
        gateway,
        tenant,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "tamper"}]},
    )
    token = response.headers["recovea-receipt"]
    edited = response.content.replace(b"tamper", b"tampeR")
    code, out = verify_cli(gateway, tmp_path, token, response=edited, env=db_env)
    assert code == 1 and "response_sha256" in out
    code, out = verify_cli(gateway, tmp_path, token, request=raw + b" ", env=db_env)
    assert code == 1 and "request_sha256" in out


@pytest.mark.parametrize(
    ("path", "body", "usage"),
    [
        (
            "/v1/chat/completions",
            {
                "model": "gpt-4o",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "s"}],
            },
            "match",
        ),
        (
            "/v1/chat/completions",
            {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "s"}]},
            "not checkable",
        ),
        (
            "/v1/messages",
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 40,
                "stream": True,
                "messages": [{"role": "user", "content": "s"}],
            },
            "match",
        ),
        ("/v1/responses", {"model": "gpt-4o", "stream": True, "input": "s"}, "match"),
    ],
)
def test_a_stream_ends_with_its_receipt_and_verifies(
    gateway: Gateway,
    tenant: Tenant,
    tmp_path: Path,
    db_env: dict[str, str],
    path: str,
    body: dict[str, object],
    usage: str,
) -> None:
    raw, response = post(gateway, tenant, path, body)
    assert response.status_code == 200
    assert "recovea-receipt" not in response.headers
    content, token = verify.split_response(response.content)
    assert content.rstrip().endswith((b"[DONE]", b'message_stop"}', b"}"))
    assert token is not None and response.content.endswith(b"\n\n")
    code, out = verify_cli(
        gateway, tmp_path, None, request=raw, response=response.content, env=db_env
    )
    assert code == 0, out
    assert f"tokens: {usage}" in out


def test_errors_after_auth_carry_a_receipt_with_status_error(
    gateway: Gateway, tenant: Tenant
) -> None:
    _, response = post(
        gateway,
        tenant,
        "/v1/chat/completions",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "e"}]},
        **{"x-mock-fault": "reset"},
    )
    assert response.status_code == 502
    receipt = verify.decode_token(response.headers["recovea-receipt"])
    assert receipt.payload["status"] == "error"
    assert receipt.payload["input_tokens"] is None


def test_the_chain_is_gapless_and_the_ledger_verifies(
    gateway: Gateway, db_env: dict[str, str], tmp_path: Path
) -> None:
    chained = make_tenant(db_env, "receipts-chain")
    tokens = []
    for n in range(7):
        _, response = post(
            gateway,
            chained,
            "/v1/chat/completions",
            {"model": "gpt-4o", "messages": [{"role": "user", "content": f"c{n}"}]},
        )
        tokens.append(response.headers["recovea-receipt"])
    receipts = [verify.decode_token(t) for t in tokens]
    assert [r.payload["seq"] for r in receipts] == list(range(1, 8))
    assert receipts[0].payload["prev"] == "0" * 64
    assert len({r.payload["chain"] for r in receipts}) == 1
    chain = receipts[0].payload["chain"]
    stored(gateway, chained, "receipts", receipts[-1].payload["request_id"])
    listing = httpx.get(f"{gateway.url}/v1/recovea/ledger", headers=chained.bearer).json()
    assert [(c["chain"], c["first_seq"], c["last_seq"]) for c in listing["data"]] == [(chain, 1, 7)]
    first = httpx.get(
        f"{gateway.url}/v1/recovea/ledger",
        params={"chain": chain, "limit": 4},
        headers=chained.bearer,
    ).json()
    assert first["has_more"] is True and first["next_after_seq"] == 4
    rest = httpx.get(
        f"{gateway.url}/v1/recovea/ledger",
        params={"chain": chain, "after_seq": 4},
        headers=chained.bearer,
    ).json()
    assert rest["has_more"] is False
    assert [e["token"] for e in first["receipts"] + rest["receipts"]] == tokens
    export = orjson.dumps([first, rest])
    code, out = verify_cli(gateway, tmp_path, None, ledger=export, env=db_env)
    assert code == 0, out
    assert "seq 1..7" in out
    # Dropping one receipt from the export is caught.
    first["receipts"].pop(2)
    code, out = verify_cli(gateway, tmp_path, None, ledger=orjson.dumps([first, rest]), env=db_env)
    assert code == 1 and "gap" in out


def test_the_sdks_work_unchanged_and_expose_the_receipt(
    gateway: Gateway, tenant: Tenant, sdk: SdkClients
) -> None:
    client = sdk.openai(f"{gateway.url}/v1", api_key=tenant.key)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "sdk"}]
    )
    assert verify.decode_token(raw.headers["recovea-receipt"]).payload["status"] == "success"
    completion = raw.parse()
    assert completion.choices[0].message.content == "mock reply: sdk"
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "sdk stream"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock reply: sdk stream"
    claude = sdk.anthropic(gateway.url, api_key=tenant.key)
    with claude.messages.stream(
        model="claude-sonnet-5-5", max_tokens=64, messages=[{"role": "user", "content": "sdk"}]
    ) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == "mock reply: sdk"
    assert final.usage.output_tokens > 0


def test_published_keys_match_their_ids(gateway: Gateway) -> None:
    document = httpx.get(f"{gateway.url}/.well-known/recovea-receipt-keys").json()
    keys = verify.load_keys(document)
    assert keys and not keys.rejected
    assert all(entry["alg"] == "Ed25519" for entry in document["keys"])


def test_rotated_keys_stay_published_and_old_receipts_still_verify(
    mock: MockServer, workdir: Path, own_postgres: Postgres, tmp_path: Path
) -> None:
    env = {
        "RECOVEA_DATABASE_URL": own_postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "master.key"),
    }
    tenant = make_tenant(env, "receipts-rotation")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "rot"}]}
    gateway = Gateway(
        {**upstream_env(mock), **env, "RECOVEA_MAINTENANCE_INTERVAL_S": "0.1"}, workdir
    )
    try:
        _, old = post(gateway, tenant, "/v1/chat/completions", body)
        old_token = old.headers["recovea-receipt"]
        old_kid = verify.decode_token(old_token).payload["kid"]
        done = cli("receipt-key", "rotate", "--json", env=env)
        assert done.returncode == 0, done.stderr
        new_kid = orjson.loads(done.stdout)["kid"]
        assert new_kid != old_kid

        def signed_with_new_key() -> verify.Receipt | None:
            _, response = post(gateway, tenant, "/v1/chat/completions", body)
            receipt = verify.decode_token(response.headers["recovea-receipt"])
            return receipt if receipt.payload["kid"] == new_kid else None

        newer = wait_until(signed_with_new_key, 15, "the running gateway signs with the new key")
        # The chain goes on across the rotation.
        assert newer.payload["chain"] == verify.decode_token(old_token).payload["chain"]
        assert newer.payload["seq"] > 1
        document = httpx.get(f"{gateway.url}/.well-known/recovea-receipt-keys").json()
        published = {entry["kid"]: entry["retired_at"] for entry in document["keys"]}
        assert published[new_kid] is None and published[old_kid] is not None
        code, out = verify_cli(gateway, tmp_path, old_token, response=old.content, env=env)
        assert code == 0, out
    finally:
        gateway.stop()
