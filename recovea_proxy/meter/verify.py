"""The receipt verifier: everything needed to check a `recovea-receipt-v1` from public data.

A receipt token is `base64url(canonical JSON) "." base64url(Ed25519 signature)`. This
module decodes tokens, loads the published keys, and checks a receipt's signature, its
request and response hashes, its token counts against the usage the provider reported,
and a chain of receipts. It imports only the standard library and `cryptography`, so it
can be read, and trusted, on its own. Every failed check raises `VerifyError` with one
line that names what failed; `MalformedError` marks input that is not a receipt at all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VERSION = "recovea-receipt-v1"
ZERO_HASH = "0" * 64
COUNTS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
FIELDS = frozenset(
    "v kid request_id ts customer_id rcv_key_id provider baseline_model realized_model"
    " input_tokens output_tokens cached_tokens reasoning_tokens cache_hit status"
    " request_sha256 response_sha256 chain seq prev".split()
)
# The types of the fields the checks below rely on; the others are covered by the signature.
TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("v", "kid", "request_sha256", "response_sha256", "chain", "prev"), (str,)),
    **dict.fromkeys(COUNTS, (int, type(None))),
    "seq": (int,),
}
_B64 = re.compile(r"[A-Za-z0-9_-]+")
# The gateway's last SSE line: `: recovea-receipt-v1 <token>` and its blank line.
_RECEIPT_LINE = re.compile(rb"(?:\A|(?<=\n)): recovea-receipt-v1 ([A-Za-z0-9_.-]+)\n\n\Z")


class VerifyError(ValueError):
    """A check failed; the message names what, on one line."""


class MalformedError(VerifyError):
    """The input is not a well-formed token, keys document or ledger."""


@dataclass(frozen=True)
class Receipt:
    """One decoded token: its payload, the exact signed bytes, and the signature."""

    payload: dict[str, Any]
    canonical: bytes
    signature: bytes

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the canonical bytes (what the next receipt's `prev` holds)."""
        return hashlib.sha256(self.canonical).hexdigest()


class KeySet(dict[str, Ed25519PublicKey]):
    """Usable public keys by kid; `rejected` maps a kid to why its key was refused."""

    rejected: dict[str, str]

    def __init__(self) -> None:
        super().__init__()
        self.rejected = {}


def b64url_decode(text: str, what: str) -> bytes:
    """Strict unpadded base64url: the alphabet only, and it must re-encode to itself."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedError(f"{what} is not valid base64url") from None
    if not _B64.fullmatch(text) or base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise MalformedError(f"{what} is not valid base64url")
    return raw


def canonical_json(obj: Any) -> bytes:
    """The receipt's canonical form: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_float(text: str) -> Any:
    raise MalformedError(f"receipt payload holds a non-integer number ({text})")


def decode_token(token: str) -> Receipt:
    """Decode a token and check that its payload is a canonical, complete receipt."""
    parts = token.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise MalformedError("token is not <payload>.<signature>")
    canonical = b64url_decode(parts[0], "token payload")
    signature = b64url_decode(parts[1], "token signature")
    if len(signature) != 64:
        raise MalformedError("token signature is not 64 bytes")
    try:
        payload = json.loads(canonical.decode(), parse_float=_no_float, parse_constant=_no_float)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedError("token payload is not UTF-8 JSON") from None
    if not isinstance(payload, dict):
        raise MalformedError("token payload is not a JSON object")
    if missing := sorted(FIELDS - payload.keys()):
        raise MalformedError(f"receipt is missing {', '.join(missing)}")
    if extra := sorted(payload.keys() - FIELDS):
        raise MalformedError(f"receipt has unknown fields {', '.join(extra)}")
    for name, types in TYPES.items():
        if type(payload[name]) not in types:
            raise MalformedError(f"receipt field {name} has the wrong type")
    if canonical_json(payload) != canonical:
        raise MalformedError("token payload is not canonical JSON")
    return Receipt(payload, canonical, signature)


def kid_of(raw_public_key: bytes) -> str:
    """The key id the gateway derives from a raw Ed25519 public key."""
    return "rk_" + hashlib.sha256(raw_public_key).hexdigest()[:16]


def load_keys(document: bytes | dict[str, Any]) -> KeySet:
    """Public keys from a keys document; a key whose kid does not match it is refused."""
    if isinstance(document, bytes):
        try:
            document = json.loads(document)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedError("keys document is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise MalformedError('keys document has no "keys" list')
    keys = KeySet()
    for entry in entries:
        kid = str(entry.get("kid")) if isinstance(entry, dict) else "?"
        try:
            raw = b64url_decode(str(entry["public_key"]), f"public key {kid}")
            if entry.get("alg") != "Ed25519" or len(raw) != 32:
                raise MalformedError("not a raw 32-byte Ed25519 key")
        except (MalformedError, KeyError, TypeError) as exc:
            keys.rejected[kid] = f"unusable public key ({exc})"
            continue
        if kid_of(raw) != kid:
            keys.rejected[kid] = "its kid does not match the hash of its public key"
            continue
        keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def check_signature(receipt: Receipt, keys: dict[str, Ed25519PublicKey]) -> str:
    """Verify the Ed25519 signature with the key the receipt names; returns that kid."""
    kid = receipt.payload["kid"]
    key = keys.get(kid)
    if key is None:
        why = getattr(keys, "rejected", {}).get(kid)
        raise VerifyError(f"key {kid} was refused: {why}" if why else f"no key {kid} in the keys")
    try:
        key.verify(receipt.signature, receipt.canonical)
    except InvalidSignature:
        raise VerifyError(f"signature does not verify with key {kid}") from None
    if receipt.payload["v"] != VERSION:
        raise VerifyError(f"unsupported receipt version {receipt.payload['v']!r}")
    return str(kid)


def check_request(receipt: Receipt, body: bytes) -> None:
    """The request file is the body the receipt was issued for."""
    if hashlib.sha256(body).hexdigest() != receipt.payload["request_sha256"]:
        raise VerifyError("request_sha256 does not match the request file")


def split_response(body: bytes) -> tuple[bytes, str | None]:
    """The response bytes before a trailing receipt line, and that line's token."""
    match = _RECEIPT_LINE.search(body)
    if match is None:
        return body, None
    return body[: match.start()], match.group(1).decode()


def receipt_from_response(body: bytes) -> str | None:
    """The token of the receipt line a streamed response ends with, if any."""
    return split_response(body)[1]


def check_response(receipt: Receipt, body: bytes) -> bytes:
    """The response file (less its receipt line) is the one the receipt covers; returns it."""
    stripped = split_response(body)[0]
    if hashlib.sha256(stripped).hexdigest() != receipt.payload["response_sha256"]:
        raise VerifyError("response_sha256 does not match the response file")
    return stripped


def _get(obj: Any, *path: str) -> Any:
    for name in path:
        obj = obj.get(name) if isinstance(obj, dict) else None
    return obj


def _count(obj: Any, *path: str) -> int | None:
    value = _get(obj, *path)
    return value if type(value) is int and value >= 0 else None


def _openai_usage(usage: Any, responses: bool) -> dict[str, int | None]:
    inp, out = ("input", "output") if responses else ("prompt", "completion")
    return {
        "input_tokens": _count(usage, f"{inp}_tokens"),
        "output_tokens": _count(usage, f"{out}_tokens"),
        "cached_tokens": _count(usage, f"{inp}_tokens_details", "cached_tokens"),
        "reasoning_tokens": _count(usage, f"{out}_tokens_details", "reasoning_tokens"),
    }


def _anthropic_usage(updates: list[Any]) -> dict[str, int | None]:
    seen: dict[str, int] = {}
    for usage in updates:  # later non-null values override earlier ones
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
            if (value := _count(usage, name)) is not None:
                seen[name] = value
        if (value := _count(usage, "output_tokens")) is not None:
            seen["output_tokens"] = value
    base, cached = seen.get("input_tokens"), seen.get("cache_read_input_tokens")
    created = seen.get("cache_creation_input_tokens", 0)
    return {
        "input_tokens": None if base is None else base + created + (cached or 0),
        "output_tokens": seen.get("output_tokens"),
        "cached_tokens": cached,
        "reasoning_tokens": None,
    }


def _sse_data(body: bytes) -> list[Any]:
    """The JSON objects of an SSE stream's `data:` fields, in order."""
    found = []
    for event in re.split(r"\r?\n\r?\n", body.decode(errors="replace")):
        lines = [line[5:].removeprefix(" ") for line in event.splitlines() if line[:5] == "data:"]
        try:
            found.append(json.loads("\n".join(lines)))
        except json.JSONDecodeError:
            continue  # no data, `[DONE]`, or not JSON
    return [obj for obj in found if isinstance(obj, dict)]


def usage_of(body: bytes) -> dict[str, int | None] | None:
    """The token counts a JSON or SSE response reported to the client, None if none."""
    try:
        docs = [json.loads(body)]
    except (UnicodeDecodeError, json.JSONDecodeError):
        docs = _sse_data(body)
    anthropic: list[Any] = []
    found = None
    for doc in docs:
        kind = _get(doc, "type")
        if kind in ("message", "message_delta"):
            anthropic.append(_get(doc, "usage"))
        elif kind == "message_start":
            anthropic.append(_get(doc, "message", "usage"))
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            found = _openai_usage(_get(doc, "response", "usage"), responses=True)
        elif isinstance(_get(doc, "usage"), dict):
            found = _openai_usage(doc["usage"], responses=doc.get("object") == "response")
    if any(isinstance(usage, dict) for usage in anthropic):
        return _anthropic_usage(anthropic)
    return found


def check_usage(receipt: Receipt, response_body: bytes) -> str:
    """Compare the receipt's counts with the response's usage: "match" or "not checkable"."""
    reported = usage_of(split_response(response_body)[0])
    if reported is None:
        return "not checkable"
    for name in COUNTS:
        if receipt.payload[name] != reported[name]:
            raise VerifyError(
                f"{name} is {receipt.payload[name]} in the receipt"
                f" but {reported[name]} in the response usage"
            )
    return "match"


def check_chain(receipts: list[Receipt], keys: dict[str, Ed25519PublicKey]) -> None:
    """Every receipt is signed, in one chain, seq +1 each, prev the hash of the one before."""
    if not receipts:
        raise VerifyError("the ledger holds no receipts")
    chain = receipts[0].payload["chain"]
    for receipt in receipts:
        seq, its_chain = receipt.payload["seq"], receipt.payload["chain"]
        try:
            check_signature(receipt, keys)
        except VerifyError as exc:
            raise VerifyError(f"receipt seq {seq}: {exc}") from None
        if its_chain != chain:
            raise VerifyError(f"receipt seq {seq} is from chain {its_chain}, not {chain}")
    if receipts[0].payload["seq"] == 1 and receipts[0].payload["prev"] != ZERO_HASH:
        raise VerifyError("receipt seq 1: prev is not 64 zeros")
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
