"""The verifier on chains: consecutive seq and prev links, a start at seq 1 (or where the
caller says), an end at the export's last_seq, the client's newest receipt found in it,
and each receipt checked against its key's window."""

from __future__ import annotations

import base64
import json

import pytest

from recovea_proxy.meter import verify, verify_chain
from recovea_proxy.meter.verify import VerifyError
from tests.receipt_support import (
    HOUR_MS,
    RETIRED_MS,
    Signer,
    b64,
    canonical,
    chain_payloads,
    keys_doc,
    receipts,
    sha,
)

# --- chains ---------------------------------------------------------------------------


def test_valid_chain(signer: Signer) -> None:
    keys = verify.load_keys(keys_doc(signer.entry()))
    verify_chain.check_chain(receipts(signer, chain_payloads(signer, 5)), keys)


def test_a_chain_starts_at_seq_1(signer: Signer) -> None:
    """A whole chain starts at seq 1 with a genesis prev."""
    chain = receipts(signer, chain_payloads(signer, 5))
    assert verify_chain.check_start(chain) == "ok (seq 1, prev is 64 zeros)"


def test_a_truncated_head_fails_the_start_check(signer: Signer) -> None:
    """Receipts that begin after seq 1 are a chain whose head is missing; the links of
    what is left still hold, so only the start check can tell."""
    keys = verify.load_keys(keys_doc(signer.entry()))
    headless = receipts(signer, chain_payloads(signer, 5)[2:])
    verify_chain.check_chain(headless, keys)
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_start(headless)
    assert str(caught.value) == (
        "the ledger starts at seq 3, not 1: its head is missing"
        " (if retention pruned it, accept it with --first-seq 3)"
    )


def test_a_pruned_head_is_accepted_only_where_the_caller_says(signer: Signer) -> None:
    """With first_seq given, the chain may start there; its prev cannot be checked
    against genesis, and the result says so. Any other start still fails."""
    headless = receipts(signer, chain_payloads(signer, 5)[2:])
    assert verify_chain.check_start(headless, first_seq=3) == (
        "ok (seq 3, as accepted; its prev cannot be checked against genesis)"
    )
    for accepted in (2, 4):
        with pytest.raises(VerifyError) as caught:
            verify_chain.check_start(headless, first_seq=accepted)
        expected = f"the ledger starts at seq 3, not at the accepted seq {accepted}"
        assert str(caught.value) == expected


def test_a_truncated_tail_fails_the_end_check(signer: Signer) -> None:
    """The receipts must run to the last_seq the export states."""
    chain = receipts(signer, chain_payloads(signer, 5))
    assert verify_chain.check_end(chain, 5) == "ok (seq 5, the export's last_seq)"
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_end(chain[:3], 5)
    assert str(caught.value) == (
        "the ledger ends at seq 3 but the export's last_seq is 5: its tail is missing"
    )
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_end(chain, 4)
    assert str(caught.value) == "the ledger ends at seq 5, after the export's last_seq 4"
    assert verify_chain.check_end(chain, None) == "not checkable (the export states no last_seq)"


def test_the_newest_receipt_proves_the_tail(signer: Signer) -> None:
    """A receipt the client holds must be in the ledger, byte for byte: a ledger cut
    before it (even one whose stated last_seq was cut with it) fails."""
    payloads = chain_payloads(signer, 5)
    chain = receipts(signer, payloads)
    newest = chain[-1]
    assert verify_chain.check_member(newest, chain) == f"ok (chain {'a' * 32}, seq 5)"
    assert verify_chain.check_member(chain[1], chain) == f"ok (chain {'a' * 32}, seq 2)"
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_member(newest, chain[:3])
    assert str(caught.value) == (
        "receipt seq 5 is not in the ledger (it ends at seq 3): its tail is missing"
    )
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_member(chain[2], chain[:2] + chain[3:])
    assert str(caught.value) == "receipt seq 3 is not in the ledger (it ends at seq 5)"


def test_a_different_receipt_at_the_same_seq_is_not_in_the_ledger(signer: Signer) -> None:
    """Membership is byte for byte and per chain: same seq is not enough."""
    payloads = chain_payloads(signer, 3)
    chain = receipts(signer, payloads)
    other = verify.decode_token(signer.token({**payloads[2], "output_tokens": 99}))
    with pytest.raises(VerifyError, match=r"^the ledger's seq 3 is not this receipt$"):
        verify_chain.check_member(other, chain)
    stranger = receipts(signer, chain_payloads(signer, 3, chain="b" * 32))[2]
    with pytest.raises(VerifyError, match=f"^the receipt is from chain {'b' * 32}, the ledger"):
        verify_chain.check_member(stranger, chain)


def test_chain_signed_across_a_key_rotation(signer: Signer) -> None:
    """Receipts from a retired key and its successor verify as one chain."""
    after = Signer()
    payloads = chain_payloads(signer, 4)
    payloads[2:] = [{**p, "kid": after.kid} for p in payloads[2:]]
    payloads[2]["prev"] = sha(canonical(payloads[1]))
    payloads[3]["prev"] = sha(canonical(payloads[2]))
    chain = receipts(signer, payloads[:2]) + receipts(after, payloads[2:])
    keys = verify.load_keys(keys_doc(signer.entry(retired=True), after.entry()))
    verify_chain.check_chain(chain, keys)


def chain_error(signer: Signer, chain: list[verify.Receipt]) -> str:
    keys = verify.load_keys(keys_doc(signer.entry()))
    with pytest.raises(VerifyError) as caught:
        verify_chain.check_chain(chain, keys)
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
    with pytest.raises(VerifyError, match=r"^receipt seq 1: prev is not 64 zeros$"):
        verify_chain.check_start(receipts(signer, payloads))


def test_retired_key_in_a_chain_is_checked_per_receipt(signer: Signer) -> None:
    """Each receipt of a chain is held to its key's window: a retired key's receipt
    later than the grace fails the chain, naming its seq."""
    payloads = chain_payloads(signer, 3)
    payloads[2]["ts"] = RETIRED_MS + 2 * HOUR_MS
    keys = verify.load_keys(keys_doc(signer.entry(retired=True)))
    with pytest.raises(VerifyError, match=f"^receipt seq 3: key {signer.kid} was retired at "):
        verify_chain.check_chain(receipts(signer, payloads), keys)


def test_empty_ledger(signer: Signer) -> None:
    """Every chain check says the ledger is empty rather than failing some other way."""
    assert chain_error(signer, []) == "the ledger holds no receipts"
    for check in (verify_chain.check_start, lambda r: verify_chain.check_end(r, 3)):
        with pytest.raises(VerifyError, match=r"^the ledger holds no receipts$"):
            check([])
    with pytest.raises(VerifyError, match=r"^the ledger holds no receipts$"):
        verify_chain.check_member(receipts(signer, chain_payloads(signer, 1))[0], [])
