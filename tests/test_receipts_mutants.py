"""The gateway's receipt signer, checked by the public verifier in the same process:
every receipt it signs is a canonical `recovea-receipt-v1` holding the record's facts
under the row's names, signed by the key it names, and placed in its workspace's chain
(seq +1, prev the hash of the one before, 64 zeros first); a key rotation continues the
chains; a stream's receipt line is the SSE comment the verifier strips.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recovea_proxy.meter import verify, verify_chain
from recovea_proxy.meter.receipt_keys import SigningKey, key_id
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord
from tests.receipt_support import b64, keys_doc

TS = 1_795_000_000_123
WORKSPACE = str(uuid.uuid4())
OTHER_WORKSPACE = str(uuid.uuid4())


def new_key() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(key_id(raw), private)


def public_raw(key: SigningKey) -> bytes:
    return key.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def published(*keys: SigningKey) -> verify.KeySet:
    """The keys as `/.well-known/recovea-receipt-keys` publishes them."""
    entries = [
        {
            "kid": key.kid,
            "alg": "Ed25519",
            "public_key": b64(public_raw(key)),
            "created_at": "2026-11-01T00:00:00+00:00",
            "retired_at": None,
        }
        for key in keys
    ]
    return verify.load_keys(keys_doc(*entries))


def record(workspace: str = WORKSPACE, **fields: Any) -> RequestRecord:
    """A finished request as the hot path leaves it for the signer."""
    rec = RequestRecord(uuid.uuid4().hex, uuid.uuid4().hex, 0, TS)
    rec.workspace_id = workspace
    rec.provider, rec.model, rec.rcv_key_id = "openai", "gpt-4o", str(uuid.uuid4())
    rec.usage = Usage(12, 5, 4, 2)
    rec.success = True
    rec.request_sha256 = hashlib.sha256(b"request").hexdigest()
    for name, value in fields.items():
        setattr(rec, name, value)
    return rec


def signed(signer: ReceiptSigner, rec: RequestRecord, body: bytes = b"response") -> verify.Receipt:
    token = signer.sign(rec, hashlib.sha256(body).hexdigest())
    assert rec.receipt == token.decode()
    return verify.decode_token(token.decode())


def test_a_receipt_holds_the_records_facts_under_the_rows_names() -> None:
    """Every field of the receipt is the record's, named as the ledger's columns are;
    the realized model is the baseline when no lever changed it; the signature verifies
    with the key the receipt names."""
    key = new_key()
    signer = ReceiptSigner(key)
    rec = record()
    receipt = signed(signer, rec)
    assert receipt.payload == {
        "v": "recovea-receipt-v1",
        "kid": key.kid,
        "request_id": rec.request_id,
        "ts": TS,
        "customer_id": WORKSPACE,
        "rcv_key_id": rec.rcv_key_id,
        "provider": "openai",
        "baseline_model": "gpt-4o",
        "realized_model": "gpt-4o",
        "input_tokens": 12,
        "output_tokens": 5,
        "cached_tokens": 4,
        "reasoning_tokens": 2,
        "cache_hit": False,
        "status": "success",
        "request_sha256": rec.request_sha256,
        "response_sha256": hashlib.sha256(b"response").hexdigest(),
        "chain": receipt.payload["chain"],
        "seq": 1,
        "prev": "0" * 64,
    }
    assert verify.check_signature(receipt, published(key)) == key.kid
    assert rec.receipt_place == (receipt.payload["chain"], 1, key.kid)


def test_a_routed_failed_cached_request_says_so() -> None:
    """The realized model when routing changed it, `error` for a failed request, a cache
    hit, and None for counts the provider did not report."""
    rec = record(realized_model="gpt-4o-mini", success=False, cache_hit=True, usage=Usage())
    fields = signed(ReceiptSigner(new_key()), rec).payload
    assert (fields["realized_model"], fields["status"], fields["cache_hit"]) == (
        "gpt-4o-mini",
        "error",
        True,
    )
    assert [fields[name] for name in verify.COUNTS] == [None, None, None, None]


def test_each_workspace_has_its_own_gapless_chain() -> None:
    """Receipts of one workspace are chained seq 1, 2, 3 with each prev the hash of the
    one before; another workspace's receipts, signed in between, start a chain of their
    own. Both verify as whole chains."""
    key = new_key()
    signer = ReceiptSigner(key)
    mine, theirs = [], []
    for _ in range(3):
        mine.append(signed(signer, record()))
        theirs.append(signed(signer, record(OTHER_WORKSPACE)))
    keys = published(key)
    for chain in (mine, theirs):
        verify_chain.check_chain(chain, keys)
        assert verify_chain.check_start(chain) == "ok (seq 1, prev is 64 zeros)"
        assert [r.payload["seq"] for r in chain] == [1, 2, 3]
        assert chain[1].payload["prev"] == hashlib.sha256(chain[0].canonical).hexdigest()
    assert mine[0].payload["chain"] != theirs[0].payload["chain"]
    assert len(mine[0].payload["chain"]) == 32
    assert int(mine[0].payload["chain"], 16) >= 0


def test_two_signers_never_share_a_chain() -> None:
    """Two gateway processes signing for one workspace keep separate chains."""
    key = new_key()
    first = signed(ReceiptSigner(key), record())
    second = signed(ReceiptSigner(key), record())
    assert first.payload["chain"] != second.payload["chain"]


def test_a_rotated_key_continues_the_chain() -> None:
    """After `use(new key)` receipts name and are signed by the new key, and the chain
    goes on (seq +1, prev linked); the whole chain verifies with both published keys."""
    old, new = new_key(), new_key()
    signer = ReceiptSigner(old)
    before = signed(signer, record())
    signer.use(new)
    after = signed(signer, record())
    assert (before.payload["kid"], after.payload["kid"]) == (old.kid, new.kid)
    verify_chain.check_chain([before, after], published(old, new))
    with pytest.raises(verify.VerifyError):
        verify.check_signature(after, published(old))


@pytest.mark.parametrize(
    "body", [b"", b"data: x\n\n", b"data: [DONE]\n\n", b"data: \xff\xfe\n\n" * 50]
)
def test_a_streamed_receipt_line_is_the_comment_the_verifier_strips(body: bytes) -> None:
    """The SSE line that ends a stream carries the token the verifier finds there, and
    what comes before it is exactly the response the receipt covers."""
    signer = ReceiptSigner(new_key())
    rec = record()
    token = signer.sign(rec, hashlib.sha256(body).hexdigest())
    line = signer.sse_line(token)
    assert line == b": recovea-receipt-v1 " + token + b"\n\n"
    stripped, found = verify.split_response(body + line)
    assert (stripped, found) == (body, token.decode())
    verify.check_response(verify.decode_token(token.decode()), body + line)

