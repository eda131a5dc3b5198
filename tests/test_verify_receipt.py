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
    HOUR_MS,
    MALFORMED,
    REQUEST,
    RETIRED_MS,
    USAGE_CASES,
    Signer,
    b64,
    canonical,
    keys_doc,
    payload,
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
    with pytest.raises(MalformedError, match="keys document is not UTF-8 JSON"):
        verify.load_keys(b"<html>")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "keys document is nested too deeply"),
        (b'{"keys": [' * 50_000, "keys document is nested too deeply"),
        (b'{"keys": [], "n": ' + b"7" * 5000 + b"}", "keys document holds a number too long"),
        (b"\xff\xfe{}", "keys document is not UTF-8 JSON"),
        (b'{"keys": {"kid": "rk_1"}}', 'keys document has no "keys" list'),
    ],
)
def test_hostile_keys_document_is_malformed_not_a_crash(document: bytes, message: str) -> None:
    """However a keys document is broken, loading it raises MalformedError, one line."""
    with pytest.raises(MalformedError, match=re.escape(message)):
        verify.load_keys(document)


def test_unreadable_key_entries_are_set_aside_with_why(signer: Signer) -> None:
    """Entries that cannot be read are set aside one by one (a later format's key may be
    one of them); the others still load, and a receipt naming one is malformed input."""
    good = signer.entry()
    entries: list[Any] = [
        {**good, "kid": "rk_a", "public_key": 42},
        {**good, "kid": "rk_b", "public_key": "a$b"},
        {**good, "kid": "rk_c", "alg": "ML-DSA-65"},
        {**good, "kid": "rk_d", "public_key": b64(b"x" * 31)},
        {**good, "kid": "rk_e", "retired_at": "soon"},
        good,
    ]
    keys = verify.load_keys({"keys": entries})
    assert set(keys) == {signer.kid}
    assert keys.unusable == {
        "rk_a": "it is not a raw 32-byte Ed25519 public key",
        "rk_b": "its public_key is not valid base64url",
        "rk_c": "it is not a raw 32-byte Ed25519 public key",
        "rk_d": "it is not a raw 32-byte Ed25519 public key",
        "rk_e": "its retired_at is not an ISO 8601 time with a UTC offset",
    }
    receipt = verify.decode_token(signer.token(payload(signer, kid="rk_b")))
    with pytest.raises(MalformedError) as caught:
        verify.check_signature(receipt, keys)
    assert str(caught.value) == "key rk_b is unusable: its public_key is not valid base64url"


@pytest.mark.parametrize("entry", ["rk_0", 7, None, [], {"kid": ["rk_0"]}, {"alg": "Ed25519"}])
def test_a_keys_list_holding_a_non_key_is_malformed(entry: Any, signer: Signer) -> None:
    """An entry that is not an object with a string kid makes the document malformed."""
    with pytest.raises(MalformedError) as caught:
        verify.load_keys({"keys": [signer.entry(), entry]})
    assert str(caught.value) == "keys document entry 2 is not an object with a kid"


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"created_at": "yesterday"}, "its created_at is not an ISO 8601 time"),
        ({"created_at": None}, "its created_at is not an ISO 8601 time"),
        ({"created_at": "2026-11-01T00:00:00"}, "its created_at is not an ISO 8601 time"),
        ({"retired_at": 1795132800}, "its retired_at is not an ISO 8601 time"),
    ],
)
def test_a_key_without_a_readable_window_is_unusable(
    fields: dict[str, Any], why: str, signer: Signer
) -> None:
    """A key verifies only within its published window, so a key whose window cannot be
    read verifies nothing (and says why)."""
    keys = verify.load_keys(keys_doc(signer.entry(**fields)))
    assert signer.kid not in keys
    assert keys.unusable[signer.kid].startswith(why)
    receipt = verify.decode_token(signer.token(payload(signer)))
    with pytest.raises(MalformedError, match=f"^key {signer.kid} is unusable: {why}"):
        verify.check_signature(receipt, keys)


# --- key validity windows -------------------------------------------------------------


def test_retired_key_used_after_its_window_fails(signer: Signer) -> None:
    """A receipt signed by a retired key with ts after retired_at plus the grace fails,
    with one line that says when the key was retired and by how much ts misses."""
    keys = verify.load_keys(keys_doc(signer.entry(retired=True)))
    late = verify.decode_token(signer.token(payload(signer, ts=RETIRED_MS + HOUR_MS + 1)))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(late, keys)
    assert str(caught.value) == (
        f"key {signer.kid} was retired at 2026-11-20T00:00:00.000+00:00: receipt ts"
        " 2026-11-20T01:00:00.001+00:00 is more than 3600 s after that"
    )


def test_retired_key_verifies_within_the_grace(signer: Signer) -> None:
    """Gateways switch keys at their next maintenance round, so a receipt up to the grace
    (one hour by default) after retired_at still verifies; a longer grace can be chosen."""
    keys = verify.load_keys(keys_doc(signer.entry(retired=True)))
    on_time = verify.decode_token(signer.token(payload(signer, ts=RETIRED_MS + HOUR_MS)))
    assert verify.check_signature(on_time, keys) == signer.kid
    late = verify.decode_token(signer.token(payload(signer, ts=RETIRED_MS + 2 * HOUR_MS)))
    with pytest.raises(VerifyError, match=r"is more than 3600 s after that$"):
        verify.check_signature(late, keys)
    lenient = verify.load_keys(keys_doc(signer.entry(retired=True)), grace_s=2 * 3600)
    assert verify.check_signature(late, lenient) == signer.kid
    strict = verify.load_keys(keys_doc(signer.entry(retired=True)), grace_s=0)
    with pytest.raises(VerifyError, match=r"is more than 0 s after that$"):
        verify.check_signature(on_time, strict)


def test_key_used_before_it_was_created_fails(signer: Signer) -> None:
    """A key cannot sign for a time before it existed (less the grace): re-signing old
    history with a newer key shows."""
    keys = verify.load_keys(keys_doc(signer.entry()))
    created_ms = RETIRED_MS - 19 * 24 * HOUR_MS  # 2026-11-01
    early = verify.decode_token(signer.token(payload(signer, ts=created_ms - HOUR_MS - 1)))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(early, keys)
    assert str(caught.value) == (
        f"key {signer.kid} was created at 2026-11-01T00:00:00.000+00:00: receipt ts"
        " 2026-10-31T22:59:59.999+00:00 is more than 3600 s before that"
    )
    just_before = verify.decode_token(signer.token(payload(signer, ts=created_ms - HOUR_MS)))
    assert verify.check_signature(just_before, keys) == signer.kid


def test_an_active_key_has_no_end(signer: Signer) -> None:
    """A key not retired (retired_at null) verifies any later ts."""
    keys = verify.load_keys(keys_doc(signer.entry()))
    far = verify.decode_token(signer.token(payload(signer, ts=RETIRED_MS + 10**12)))
    assert verify.check_signature(far, keys) == signer.kid


def test_a_ts_far_outside_any_calendar_is_reported_not_a_crash(signer: Signer) -> None:
    """A ts no date can hold is still reported on one line (in ms after the epoch)."""
    keys = verify.load_keys(keys_doc(signer.entry(retired=True)))
    absurd = verify.decode_token(signer.token(payload(signer, ts=10**30)))
    with pytest.raises(VerifyError, match=f"receipt ts {10**30} ms after the epoch is more"):
        verify.check_signature(absurd, keys)


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


# --- hostile text in messages ---------------------------------------------------------


def test_untrusted_strings_stay_on_one_bounded_line(signer: Signer) -> None:
    """A kid or chain id with newlines, NULs or thousands of characters is escaped and
    cut in the message, which stays one line."""
    hostile = "x\n\x00\u2028" + "y" * 5000
    receipt = verify.decode_token(signer.token(payload(signer, kid=hostile)))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(receipt, verify.load_keys(keys_doc(signer.entry())))
    message = str(caught.value)
    assert message.startswith("no key x\\n\\x00\\u2028yyy") and message.endswith("... in the keys")
    assert message.isprintable() and len(message) < 200


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000,
        b'{"usage": {"prompt_tokens": ' + b"9" * 5000 + b"}}",
        b"data: " + b"[" * 100_000 + b'\n\ndata: {"usage": ' + b"1" * 5000 + b"}\n\n",
        b"\xff\xfe\x00",
    ],
)
def test_a_response_python_cannot_read_has_no_checkable_usage(body: bytes, signer: Signer) -> None:
    """JSON too deep, numbers too long, or not UTF-8: no usage to compare, no crash."""
    receipt = verify.decode_token(signer.token(payload(signer)))
    assert verify.check_usage(receipt, body) == "not checkable"


def test_a_count_the_gateway_clamped_still_matches_the_response(signer: Signer) -> None:
    """A provider reporting more tokens than a row can hold: the gateway signs the clamp
    (2^31 - 1), and the usage check reads the response the same way."""
    body = json.dumps(
        {"object": "chat.completion", "usage": {"prompt_tokens": 2**40, "completion_tokens": 3}}
    ).encode()
    counts = {
        "input_tokens": 2**31 - 1,
        "output_tokens": 3,
        "cached_tokens": None,
        "reasoning_tokens": None,
    }
    receipt = verify.decode_token(signer.token(payload(signer, **counts)))
    assert verify.check_usage(receipt, body) == "match"
