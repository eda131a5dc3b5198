"""The receipt verifier module: every signed field, the body hashes, the usage check and
chains, on receipts built here with `cryptography` directly."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest

from recovea_proxy.meter import verify
from recovea_proxy.meter.verify import MalformedError, VerifyError
from tests.receipt_support import (
    ANTHROPIC_COUNTS,
    ANTHROPIC_JSON,
    ANTHROPIC_STREAM,
    CHAT_STREAM,
    CHAT_STREAM_NO_USAGE,
    MALFORMED,
    REQUEST,
    USAGE_CASES,
    Signer,
    b64,
    canonical,
    chain_payloads,
    keys_doc,
    payload,
    receipts,
    sha,
)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_token_is_rejected(case: str) -> None:
    token, message = MALFORMED[case]
    with pytest.raises(MalformedError, match=re.escape(message)):
        verify.decode_token(token)


# --- signatures -----------------------------------------------------------------------


def tampered(field: str, value: Any, other_kid: str) -> Any:
    """A different value of the same type (another published kid for `kid`)."""
    if field == "kid":
        return other_kid
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value and value[-1] in "0123456789abcdef" and field != "v":
        return value[:-1] + ("1" if value[-1] == "0" else "0")
    return value + "x"


@pytest.mark.parametrize("field", sorted(payload(Signer())))
def test_every_field_is_signed(field: str, signer: Signer) -> None:
    """Changing any one field under the old signature breaks the signature."""
    other = Signer()
    keys = verify.load_keys(keys_doc(signer.entry(), other.entry()))
    original = payload(signer)
    token = signer.token(original)
    changed = {**original, field: tampered(field, original[field], other.kid)}
    assert changed != original
    forged = b64(canonical(changed)) + "." + token.split(".")[1]
    receipt = verify.decode_token(forged)
    with pytest.raises(VerifyError, match=f"^signature does not verify with key {changed['kid']}$"):
        verify.check_signature(receipt, keys)


def test_valid_signature_names_its_key(signer: Signer) -> None:
    keys = verify.load_keys(json.dumps(keys_doc(signer.entry(retired=True))).encode())
    receipt = verify.decode_token(signer.token(payload(signer)))
    assert verify.check_signature(receipt, keys) == signer.kid


def test_flipped_signature_byte(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    body, sig = signer.token(payload(signer)).split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    receipt = verify.decode_token(body + "." + b64(bytes(raw)))
    with pytest.raises(VerifyError, match=f"signature does not verify with key {signer.kid}"):
        verify.check_signature(receipt, keys)


def test_keys_document_rejects_mismatched_kid_only_for_that_key(signer: Signer) -> None:
    """A bad entry is refused; the document's other keys still verify."""
    other = Signer()
    keys = verify.load_keys(keys_doc(other.entry(kid="rk_" + "0" * 16), signer.entry()))
    assert set(keys) == {signer.kid}
    assert keys.rejected == {"rk_" + "0" * 16: "its kid does not match the hash of its public key"}


def test_keys_document_that_is_not_one() -> None:
    with pytest.raises(MalformedError, match='keys document has no "keys" list'):
        verify.load_keys(b'{"kid": "rk_1"}')
    with pytest.raises(MalformedError, match="keys document is not JSON"):
        verify.load_keys(b"<html>")


# --- request, response and usage ------------------------------------------------------


def test_request_hash(signer: Signer) -> None:
    receipt = verify.decode_token(signer.token(payload(signer)))
    verify.check_request(receipt, REQUEST)
    with pytest.raises(VerifyError, match=r"^request_sha256 does not match the request file$"):
        verify.check_request(receipt, REQUEST[:-1] + b"]")


def test_response_receipt_line_is_stripped_before_hashing(signer: Signer) -> None:
    token = signer.token(payload(signer, response_sha256=sha(ANTHROPIC_STREAM)))
    body = ANTHROPIC_STREAM + b": recovea-receipt-v1 " + token.encode() + b"\n\n"
    assert verify.receipt_from_response(body) == token
    assert verify.receipt_from_response(ANTHROPIC_STREAM) is None
    receipt = verify.decode_token(token)
    assert verify.check_response(receipt, body) == ANTHROPIC_STREAM
    with pytest.raises(VerifyError, match=r"^response_sha256 does not match the response file$"):
        verify.check_response(receipt, body.replace(b"hi", b"ho"))


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_matches(case: str, signer: Signer) -> None:
    body, counts = USAGE_CASES[case]
    receipt = verify.decode_token(signer.token(payload(signer, **counts)))
    assert verify.check_usage(receipt, body) == "match"


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_mismatch_fails(case: str, signer: Signer) -> None:
    """One count off, or null where the provider reported a number: the check fails."""
    body, counts = USAGE_CASES[case]
    more = verify.decode_token(signer.token(payload(signer, **{**counts, "input_tokens": 13})))
    with pytest.raises(VerifyError, match=r"^input_tokens is 13 in the receipt but 12 in the"):
        verify.check_usage(more, body)
    unreported = verify.decode_token(
        signer.token(payload(signer, **{**counts, "cached_tokens": None}))
    )
    with pytest.raises(VerifyError, match=r"^cached_tokens is None in the receipt but 4 in the"):
        verify.check_usage(unreported, body)


def test_anthropic_reports_no_reasoning_count(signer: Signer) -> None:
    receipt = verify.decode_token(
        signer.token(payload(signer, **{**ANTHROPIC_COUNTS, "reasoning_tokens": 0}))
    )
    with pytest.raises(VerifyError, match=r"^reasoning_tokens is 0 in the receipt but None in the"):
        verify.check_usage(receipt, ANTHROPIC_JSON.encode())


def test_usage_after_receipt_line_and_without_usage(signer: Signer) -> None:
    token = signer.token(payload(signer))
    receipt = verify.decode_token(token)
    line = b": recovea-receipt-v1 " + token.encode() + b"\n\n"
    assert verify.check_usage(receipt, CHAT_STREAM + line) == "match"
    assert verify.check_usage(receipt, CHAT_STREAM_NO_USAGE + line) == "not checkable"
    assert verify.check_usage(receipt, b"") == "not checkable"


# --- chains ---------------------------------------------------------------------------


def test_valid_chain(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    verify.check_chain(receipts(signer, chain_payloads(signer, 5)), keys)


def test_page_starting_at_seq_3_passes(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    verify.check_chain(receipts(signer, chain_payloads(signer, 5)[2:]), keys)


def test_chain_signed_across_a_key_rotation(signer: Signer) -> None:
    """Receipts from a retired key and its successor verify as one chain."""
    after = Signer()
    payloads = chain_payloads(signer, 4)
    payloads[2:] = [{**p, "kid": after.kid} for p in payloads[2:]]
    payloads[2]["prev"] = sha(canonical(payloads[1]))
    payloads[3]["prev"] = sha(canonical(payloads[2]))
    chain = receipts(signer, payloads[:2]) + receipts(after, payloads[2:])
    keys = verify.load_keys(keys_doc(signer.entry(retired=True), after.entry()))
    verify.check_chain(chain, keys)


def chain_error(signer: Signer, chain: list[verify.Receipt]) -> str:
    keys = verify.load_keys(keys_doc(signer.entry()))
    with pytest.raises(VerifyError) as caught:
        verify.check_chain(chain, keys)
    return str(caught.value)


def test_removed_receipt_is_a_gap(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    del chain[2]
    assert chain_error(signer, chain) == "seq 4 follows seq 2 (gap)"


def test_swapped_receipts_are_out_of_order(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    chain[2], chain[3] = chain[3], chain[2]
    assert chain_error(signer, chain) == "seq 3 follows seq 4 (out of order)"


def test_duplicated_receipt(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 3))
    chain.insert(2, chain[1])
    assert chain_error(signer, chain) == "seq 2 follows seq 2 (duplicate)"


def test_edited_and_resigned_receipt_breaks_the_next_prev(signer: Signer) -> None:
    payloads = chain_payloads(signer, 5)
    payloads[2]["output_tokens"] = 1
    assert chain_error(signer, receipts(signer, payloads)) == (
        "receipt seq 4: prev does not match the hash of seq 3"
    )


def test_edited_receipt_without_the_key_breaks_its_signature(signer: Signer) -> None:
    tokens = [signer.token(p) for p in chain_payloads(signer, 5)]
    changed = {
        **json.loads(base64.urlsafe_b64decode(tokens[2].split(".")[0] + "==")),
        "output_tokens": 1,
    }
    tokens[2] = b64(canonical(changed)) + "." + tokens[2].split(".")[1]
    chain = [verify.decode_token(t) for t in tokens]
    assert (
        chain_error(signer, chain)
        == f"receipt seq 3: signature does not verify with key {signer.kid}"
    )


def test_receipt_from_another_chain(signer: Signer) -> None:
    chain = receipts(signer, chain_payloads(signer, 5))
    chain[2] = receipts(signer, chain_payloads(signer, 5, chain="b" * 32))[2]
    assert chain_error(signer, chain) == f"receipt seq 3 is from chain {'b' * 32}, not {'a' * 32}"


def test_first_receipt_needs_zero_prev(signer: Signer) -> None:
    payloads = chain_payloads(signer, 3)
    payloads[0]["prev"] = "f" * 64
    assert chain_error(signer, receipts(signer, payloads)) == "receipt seq 1: prev is not 64 zeros"


def test_empty_ledger(signer: Signer) -> None:
    assert chain_error(signer, []) == "the ledger holds no receipts"
