"""The receipt verifier's checkpoint checks: a `recovea-checkpoint-v1` is the Ed25519-
signed head of a receipt chain, and it vouches for every receipt of the chain up to
its seq — the unsigned receipts a gateway issues with RECOVEA_RECEIPT_SIGNING=checkpoint.

A checkpoint token is `base64url(canonical JSON) "." base64url(signature)` over
`{"chain", "head", "kid", "seq", "ts", "v": "recovea-checkpoint-v1"}`; `head` is the hex
SHA-256 of the canonical JSON of receipt `seq`. Receipt N is covered by checkpoint M
(M ≥ N) when the chain's receipts N..M link up (`verify_chain.check_chain`), receipt
M hashes to the signed `head`, and the signature holds with a published key whose
window holds the checkpoint's `ts`.

- `check_covered`: one receipt, the chain from it to its checkpoint, the checkpoint.
- `check_coverage`: a whole chain export and its checkpoints: every checkpoint that
  falls within the export signs the head it states; the receipts up to the last such
  checkpoint are covered; unsigned receipts after it are not yet (`Pending`).

Like `verify`, it needs only the standard library and `cryptography`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recovea_proxy.meter.verify import (
    KeySet,
    MalformedError,
    Pending,
    Receipt,
    VerifyError,
    b64url_decode,
    canonical_json,
    load_json,
    shown,
    verify_signed,
)

CHECKPOINT_VERSION = "recovea-checkpoint-v1"
_TYPES: dict[str, type] = {"chain": str, "head": str, "kid": str, "seq": int, "ts": int, "v": str}


@dataclass(frozen=True)
class Checkpoint:
    """One decoded checkpoint token: its payload, the signed bytes, the signature."""

    payload: dict[str, Any]
    canonical: bytes
    signature: bytes

    @property
    def seq(self) -> int:
        """The seq of the receipt whose hash it signs."""
        seq: int = self.payload["seq"]
        return seq


def _no_float(text: str) -> Any:
    raise MalformedError(f"checkpoint payload holds a non-integer number ({shown(text)})")


def decode_checkpoint(token: str) -> Checkpoint:
    """Decode a checkpoint token and check that its payload is a canonical checkpoint."""
    parts = token.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise MalformedError("checkpoint token is not <payload>.<signature>")
    canonical = b64url_decode(parts[0], "checkpoint payload")
    signature = b64url_decode(parts[1], "checkpoint signature")
    if len(signature) != 64:
        raise MalformedError("checkpoint signature is not 64 bytes")
    payload = load_json(
        canonical, "checkpoint payload", parse_float=_no_float, parse_constant=_no_float
    )
    if not isinstance(payload, dict) or payload.keys() != _TYPES.keys():
        raise MalformedError("checkpoint payload is not {chain, head, kid, seq, ts, v}")
    for name, kind in _TYPES.items():
        if type(payload[name]) is not kind:
            raise MalformedError(f"checkpoint field {name} has the wrong type")
    try:
        again = canonical_json(payload)
    except UnicodeEncodeError:
        raise MalformedError("checkpoint payload holds a lone surrogate escape") from None
    if again != canonical:
        raise MalformedError("checkpoint payload is not canonical JSON")
    return Checkpoint(payload, canonical, signature)


def check_checkpoint(checkpoint: Checkpoint, keys: KeySet) -> str:
    """The checkpoint's signature holds, with a key whose window holds its `ts`; the kid."""
    payload = checkpoint.payload
    try:
        kid = verify_signed(
            payload["kid"],
            checkpoint.canonical,
            checkpoint.signature,
            payload["ts"],
            keys,
            "checkpoint",
        )
    except VerifyError as exc:
        raise VerifyError(f"checkpoint seq {payload['seq']}: {exc}") from None
    if payload["v"] != CHECKPOINT_VERSION:
        raise VerifyError(f"unsupported checkpoint version {shown(repr(payload['v']))}")
    return kid


def _head_matches(checkpoint: Checkpoint, receipt: Receipt) -> None:
    if checkpoint.payload["head"] != receipt.digest:
        raise VerifyError(
            f"checkpoint seq {checkpoint.seq}: its head is not the hash of receipt seq"
            f" {checkpoint.seq}"
        )


def _of_chain(checkpoint: Checkpoint, chain: str) -> None:
    if checkpoint.payload["chain"] != chain:
        raise VerifyError(
            f"checkpoint seq {checkpoint.seq} is from chain"
            f" {shown(checkpoint.payload['chain'])}, not {shown(chain)}"
        )


def covering(seq: int, checkpoints: list[Checkpoint], end: int) -> Checkpoint | None:
    """The first checkpoint at or after `seq` that does not reach past `end`."""
    found = [cp for cp in checkpoints if seq <= cp.seq <= end]
    return min(found, key=lambda cp: cp.seq) if found else None


def check_covered(
    receipt: Receipt, receipts: list[Receipt], checkpoints: list[Checkpoint], keys: KeySet
) -> str:
    """The receipt is covered by a signed checkpoint: the ledger's receipts (whose links
    `check_chain` has checked) run from it to the checkpoint's seq, and the receipt
    there hashes to the checkpoint's signed head. `Pending` while no checkpoint at or
    after the receipt's seq is among `checkpoints` (within the ledger)."""
    chain, seq = receipt.payload["chain"], receipt.payload["seq"]
    by_seq = {other.payload["seq"]: other for other in receipts}
    if by_seq.get(seq) is None or by_seq[seq].canonical != receipt.canonical:
        raise VerifyError(f"the ledger's seq {seq} is not this receipt")
    ours = [cp for cp in checkpoints if cp.payload["chain"] == chain]
    found = covering(seq, ours, max(by_seq))
    if found is None:
        raise Pending(f"no checkpoint covers seq {seq} yet (give a ledger that reaches one)")
    missing = [n for n in range(seq, found.seq + 1) if n not in by_seq]
    if missing:
        raise VerifyError(
            f"the ledger lacks seq {missing[0]}, between the receipt and its checkpoint"
        )
    kid = check_checkpoint(found, keys)
    _head_matches(found, by_seq[found.seq])
    return f"ok (seq {seq} covered by checkpoint seq {found.seq}, kid {kid})"


def check_coverage(receipts: list[Receipt], checkpoints: list[Checkpoint], keys: KeySet) -> str:
    """Every checkpoint of the export signs the head it states; every receipt up to the
    last checkpoint within the export is covered. `Pending` names the unsigned receipts
    after it. Receipts must have passed `check_chain` (one chain, gapless, linked)."""
    chain = receipts[0].payload["chain"]
    by_seq = {receipt.payload["seq"]: receipt for receipt in receipts}
    first, last = receipts[0].payload["seq"], receipts[-1].payload["seq"]
    covered = 0
    for checkpoint in sorted(checkpoints, key=lambda cp: cp.seq):
        _of_chain(checkpoint, chain)
        check_checkpoint(checkpoint, keys)
        if first <= checkpoint.seq <= last:
            _head_matches(checkpoint, by_seq[checkpoint.seq])
            covered = checkpoint.seq
    after = [r.payload["seq"] for r in receipts if not r.signed and r.payload["seq"] > covered]
    if after:
        raise Pending(
            f"seq {after[0]}..{after[-1]} not yet covered by a checkpoint"
            + (f" (the last is seq {covered})" if covered else "")
        )
    if not covered:
        return "ok (every receipt is signed)"
    return f"ok (seq {first}..{covered} covered; the last checkpoint is seq {covered})"
