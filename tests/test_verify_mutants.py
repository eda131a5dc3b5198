"""The receipt verifier's one-line answers, held to the letter: each refusal names what
failed (the text a user of `recovea verify-receipt` reads), untrusted strings are shown
escaped and bounded, the canonical form is exactly sorted keys, and the usage check reads
every shape of response the gateway can have counted (zeros, a missing count, multi-line
and unspaced SSE data, comment events, every final Responses event).

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from recovea_proxy.meter import verify, verify_chain
from recovea_proxy.meter.verify import MalformedError, VerifyError
from tests.receipt_support import (
    ANTHROPIC_USAGE,
    REQUEST,
    Signer,
    b64,
    canonical,
    chain_payloads,
    keys_doc,
    payload,
    receipts,
    sha,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def token_of(body: bytes, signature: bytes = b"\x00" * 64) -> str:
    return b64(body) + "." + b64(signature)


def refusal(token: str) -> str:
    with pytest.raises(MalformedError) as caught:
        verify.decode_token(token)
    return str(caught.value)


# --- what a malformed token is told ----------------------------------------------


def test_each_malformed_token_is_told_what_is_wrong(signer: Signer) -> None:
    """Every way a token can be malformed gets its own one-line reason."""
    good = canonical(payload(signer))
    fields = payload(signer)
    missing = {k: v for k, v in fields.items() if k not in ("seq", "chain")}
    extra = {**fields, "zeta": 1, "alpha": 2}
    assert refusal("no-dot-here") == "token is not <payload>.<signature>"
    assert refusal(b64(good) + ".!!") == "token signature is not valid base64url"
    assert refusal(b64(good) + ".AB") == "token signature is not valid base64url"
    assert refusal(token_of(good, b"\x00" * 63)) == "token signature is not 64 bytes"
    assert refusal(token_of(b"[1,2]")) == "token payload is not a JSON object"
    assert refusal(token_of(canonical(missing))) == "receipt is missing chain, seq"
    assert refusal(token_of(canonical(extra))) == "receipt has unknown fields alpha, zeta"
    surrogate = good.replace(b'"provider":"openai"', b'"provider":"\\ud800"')
    assert refusal(token_of(surrogate)) == "token payload holds a lone surrogate escape"
    spaced = json.dumps(fields, sort_keys=True).encode()
    assert refusal(token_of(spaced)) == "token payload is not canonical JSON"


def test_a_payload_whose_keys_are_not_sorted_is_not_canonical(signer: Signer) -> None:
    """Canonical means sorted keys: the same fields in another order are refused, even
    when compact and validly signed."""
    fields = payload(signer)
    reordered = dict(reversed(list(fields.items())))
    body = json.dumps(reordered, separators=(",", ":"), ensure_ascii=False).encode()
    assert refusal(b64(body) + "." + b64(signer.private.sign(body))) == (
        "token payload is not canonical JSON"
    )


def test_canonical_base64url_decodes_whatever_its_last_character() -> None:
    """Every canonical unpadded base64url text decodes, whatever character it ends in."""
    for last in ALPHABET:
        text = "AAA" + last
        assert verify.b64url_decode(text, "x") == bytes([0, 0, ALPHABET.index(last)]), text


def test_non_canonical_base64url_is_refused_with_what_it_was() -> None:
    """Padding, a wrong alphabet or spare bits: refused, naming the part it was."""
    for text in ("AB", "AAA=", "AA+/", "A"):
        with pytest.raises(MalformedError, match=r"^its public_key is not valid base64url$"):
            verify.b64url_decode(text, "its public_key")


# --- untrusted strings in a message ----------------------------------------------


def unknown_kid_message(signer: Signer, kid: str) -> str:
    receipt = verify.decode_token(signer.token(payload(signer, kid=kid)))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(receipt, verify.load_keys(keys_doc(signer.entry())))
    return str(caught.value)


def test_an_untrusted_string_is_shown_whole_up_to_80_characters(signer: Signer) -> None:
    """A kid of exactly 80 characters is shown whole; one of 81 is cut at 80, marked."""
    exact, longer = "k" * 80, "k" * 81
    assert unknown_kid_message(signer, exact) == f"no key {exact} in the keys"
    assert unknown_kid_message(signer, longer) == f"no key {'k' * 80}... in the keys"


def test_an_untrusted_string_keeps_its_printable_characters_and_escapes_the_rest(
    signer: Signer,
) -> None:
    """Printable characters (accented ones included) are shown as they are; control
    characters are escaped, so the message stays on one line."""
    assert unknown_kid_message(signer, "clé\n\x1b") == "no key clé\\n\\x1b in the keys"


def test_a_refused_key_is_named_with_why(signer: Signer) -> None:
    """A receipt naming a key the keys document lists under a kid that is not its hash is
    refused with that reason (not reported as an unknown key)."""
    other = Signer()
    keys = verify.load_keys(keys_doc(signer.entry(kid=other.kid)))
    receipt = verify.decode_token(other.token(payload(other)))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(receipt, keys)
    assert str(caught.value) == (
        f"key {other.kid} was refused: its kid does not match the hash of its public key"
    )


def test_an_unsupported_version_is_named(signer: Signer) -> None:
    """A correctly signed receipt of another version is refused, naming the version."""
    receipt = verify.decode_token(signer.token(payload(signer, v="recovea-receipt-v2")))
    keys = verify.load_keys(keys_doc(signer.entry()))
    with pytest.raises(VerifyError) as caught:
        verify.check_signature(receipt, keys)
    assert str(caught.value) == "unsupported receipt version 'recovea-receipt-v2'"


def test_a_keys_document_that_is_not_an_object_is_malformed() -> None:
    """A keys document that is a JSON list (or any non-object) is malformed, said so."""
    for document in (b"[]", b'"keys"', b"3"):
        with pytest.raises(MalformedError) as caught:
            verify.load_keys(document)
        assert str(caught.value) == 'keys document has no "keys" list'


def test_a_receipt_at_the_very_edge_of_the_grace_verifies(signer: Signer) -> None:
    """Key windows are read in whole milliseconds, like `ts`: a receipt exactly at the
    grace's edge before a key created a fraction of a millisecond into that millisecond
    verifies."""
    created = "2026-11-01T00:00:00.000500+00:00"
    keys = verify.load_keys(keys_doc(signer.entry(created_at=created)), grace_s=1)
    created_ms = 1_793_491_200_000
    assert keys[signer.kid].created_ms == created_ms
    receipt = verify.decode_token(signer.token(payload(signer, ts=created_ms - 1000)))
    assert verify.check_signature(receipt, keys) == signer.kid


# --- the usage check -------------------------------------------------------------


def checked(signer: Signer, counts: dict[str, Any], body: bytes) -> str:
    receipt = verify.decode_token(signer.token(payload(signer, **counts)))
    return verify.check_usage(receipt, body)


def counts(inp: int | None, out: int | None, cached: int | None = None) -> dict[str, Any]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cached_tokens": cached,
        "reasoning_tokens": None,
    }


def test_zero_counts_match_zeros_in_the_response(signer: Signer) -> None:
    """A response that reported zero tokens matches a receipt that counted zero."""
    body = json.dumps(
        {"object": "chat.completion", "usage": {"prompt_tokens": 0, "completion_tokens": 0}}
    ).encode()
    assert checked(signer, counts(0, 0), body) == "match"


def test_anthropic_usage_without_cache_counters(signer: Signer) -> None:
    """An Anthropic response without cache counters: input is the input count alone."""
    body = json.dumps({"type": "message", "usage": {"input_tokens": 6, "output_tokens": 5}})
    assert checked(signer, counts(6, 5), body.encode()) == "match"


def test_anthropic_usage_without_an_input_count(signer: Signer) -> None:
    """An Anthropic stream that reported output only: the input count is None."""
    body = b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":5}}\n\n'
    assert checked(signer, counts(None, 5), body) == "match"


def test_anthropic_usage_with_cache_creation_but_no_cache_read(signer: Signer) -> None:
    """Cache writes count as input; no cache read means no cached tokens."""
    usage = {**ANTHROPIC_USAGE}
    del usage["cache_read_input_tokens"]
    body = json.dumps({"type": "message", "usage": usage}).encode()
    assert checked(signer, counts(8, 5), body) == "match"


def test_sse_data_without_a_space_and_over_several_lines_is_read(signer: Signer) -> None:
    """`data:{...}` with no space, a JSON object split over two `data:` lines, and a
    comment-only event before them: each is read as SSE says."""
    body = (
        b": keep-alive\n\n"
        b'data:{"object":"chat.completion.chunk","choices":[],\n'
        b'data: "usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
        b"data: [DONE]\n\n"
    )
    assert checked(signer, counts(3, 2), body) == "match"


@pytest.mark.parametrize("final", ["response.incomplete", "response.failed"])
def test_every_final_responses_event_carries_usage(signer: Signer, final: str) -> None:
    """A Responses stream that ends incomplete or failed still reports its usage."""
    usage = {"input_tokens": 7, "output_tokens": 2}
    event = {"type": final, "response": {"usage": usage}}
    body = f"event: {final}\ndata: {json.dumps(event)}\n\n".encode()
    assert checked(signer, counts(7, 2), body) == "match"


# --- chains of one, and chains that mix ------------------------------------------


def test_a_chain_of_one_receipt_verifies_and_holds_it(signer: Signer) -> None:
    """A chain with a single receipt is a whole chain; the receipt is found in it."""
    keys = verify.load_keys(keys_doc(signer.entry()))
    [only] = receipts(signer, chain_payloads(signer, 1))
    verify_chain.check_chain([only], keys)
    assert verify_chain.check_member(only, [only]) == f"ok (chain {'a' * 32}, seq 1)"


def test_a_receipt_from_another_chain_is_named_by_its_seq(signer: Signer) -> None:
    """The first receipt sets the chain: a later one from another chain is the one
    reported."""
    keys = verify.load_keys(keys_doc(signer.entry()))
    first = receipts(signer, chain_payloads(signer, 1))
    second = receipts(signer, chain_payloads(signer, 2, chain="b" * 32))[1:]
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_chain(first + second, keys)
    assert str(caught.value) == f"receipt seq 2 is from chain {'b' * 32}, not {'a' * 32}"


def test_a_receipt_checked_against_another_chain_names_both(signer: Signer) -> None:
    """A client's receipt from one chain against a ledger of another: both chains named."""
    mine = receipts(signer, chain_payloads(signer, 1, chain="b" * 32))[0]
    ledger = receipts(signer, chain_payloads(signer, 2))
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_member(mine, ledger)
    assert str(caught.value) == (
        f"the receipt is from chain {'b' * 32}, the ledger from chain {'a' * 32}"
    )


def test_request_hash_names_the_file_it_does_not_match(signer: Signer) -> None:
    """A request file that is not the signed body is reported as such."""
    receipt = verify.decode_token(signer.token(payload(signer, request_sha256=sha(b"x"))))
    with pytest.raises(VerifyError, match=re.escape("request_sha256 does not match")):
        verify.check_request(receipt, REQUEST)
