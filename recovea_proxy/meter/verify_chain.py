"""The receipt verifier's chain checks: a `recovea-chain-v1`, the ordered receipts of one
chain, as a ledger export gives them.

- `check_chain`: every signed receipt's signature holds (within its key's window; an
  unsigned one is left to its checkpoint, `verify_checkpoint`), all of one chain,
  `seq` +1 each, every `prev` the hash of the receipt before; nothing was removed,
  inserted, reordered or edited between the first and the last.
- `check_start`: they start at seq 1 with a genesis `prev` (or at a seq the caller
  accepts, for a chain pruned by retention); the head is there.
- `check_end`: they run to the `last_seq` the export states; the tail is there, as far
  as the server says.
- `check_member`: a receipt the client holds is among them, byte for byte; the tail
  reaches at least that far, whatever the server says.

Like `verify`, it needs only the standard library and `cryptography` (through `verify`).
"""

from __future__ import annotations

from itertools import pairwise

from recovea_proxy.meter.verify import (
    ZERO_HASH,
    KeySet,
    Receipt,
    VerifyError,
    check_signature,
    shown,
)


def _seqs(receipts: list[Receipt]) -> tuple[int, int]:
    if not receipts:
        raise VerifyError("the ledger holds no receipts")
    return receipts[0].payload["seq"], receipts[-1].payload["seq"]


def check_chain(receipts: list[Receipt], keys: KeySet) -> None:
    """Every signed receipt's signature holds (unsigned ones are left to their
    checkpoints), in one chain, seq +1 each, prev the hash of the one before."""
    _seqs(receipts)
    chain = receipts[0].payload["chain"]
    for receipt in receipts:
        seq, its_chain = receipt.payload["seq"], receipt.payload["chain"]
        try:
            if receipt.signed:
                check_signature(receipt, keys)
        except VerifyError as exc:
            raise VerifyError(f"receipt seq {seq}: {exc}") from None
        if its_chain != chain:
            raise VerifyError(
                f"receipt seq {seq} is from chain {shown(its_chain)}, not {shown(chain)}"
            )
    pairs = [(a.payload["seq"], b.payload["seq"], a, b) for a, b in pairwise(receipts)]
    for last, seq, _, _ in pairs:  # reordering first, so a swap is not reported as a gap
        if seq <= last:
            why = "duplicate" if seq == last else "out of order"
            raise VerifyError(f"seq {seq} follows seq {last} ({why})")
    for last, seq, before, receipt in pairs:
        if seq != last + 1:
            raise VerifyError(f"seq {seq} follows seq {last} (gap)")
        if receipt.payload["prev"] != before.digest:
            raise VerifyError(f"receipt seq {seq}: prev does not match the hash of seq {last}")


def check_start(receipts: list[Receipt], first_seq: int = 1) -> str:
    """The receipts start at seq 1, whose prev is 64 zeros, or at `first_seq` when the
    caller accepts a chain whose head is gone (pruned by retention)."""
    start = _seqs(receipts)[0]
    if start != first_seq:
        if first_seq == 1:
            raise VerifyError(
                f"the ledger starts at seq {start}, not 1: its head is missing"
                f" (if retention pruned it, accept it with --first-seq {start})"
            )
        raise VerifyError(f"the ledger starts at seq {start}, not at the accepted seq {first_seq}")
    if start != 1:
        return f"ok (seq {start}, as accepted; its prev cannot be checked against genesis)"
    if receipts[0].payload["prev"] != ZERO_HASH:
        raise VerifyError("receipt seq 1: prev is not 64 zeros")
    return "ok (seq 1, prev is 64 zeros)"


def check_end(receipts: list[Receipt], last_seq: int | None) -> str:
    """The receipts run to `last_seq`, the chain's last seq as the export states it."""
    end = _seqs(receipts)[1]
    if last_seq is None:
        return "not checkable (the export states no last_seq)"
    if end < last_seq:
        raise VerifyError(
            f"the ledger ends at seq {end} but the export's last_seq is {last_seq}:"
            " its tail is missing"
        )
    if end > last_seq:
        raise VerifyError(f"the ledger ends at seq {end}, after the export's last_seq {last_seq}")
    return f"ok (seq {end}, the export's last_seq)"


def check_member(receipt: Receipt, receipts: list[Receipt]) -> str:
    """The receipt is in the ledger: its chain, its seq there, the same canonical bytes."""
    _seqs(receipts)
    end = max(other.payload["seq"] for other in receipts)
    chain, seq = receipt.payload["chain"], receipt.payload["seq"]
    ledger_chain = receipts[0].payload["chain"]
    if chain != ledger_chain:
        raise VerifyError(
            f"the receipt is from chain {shown(chain)}, the ledger from chain {shown(ledger_chain)}"
        )
    same_seq = [other for other in receipts if other.payload["seq"] == seq]
    if not same_seq:
        tail = ": its tail is missing" if seq > end else ""
        raise VerifyError(f"receipt seq {seq} is not in the ledger (it ends at seq {end}){tail}")
    if all(other.canonical != receipt.canonical for other in same_seq):
        raise VerifyError(f"the ledger's seq {seq} is not this receipt")
    return f"ok (chain {shown(chain)}, seq {seq})"
