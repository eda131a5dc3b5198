"""The receipt verifier: everything needed to check a `recovea-receipt-v1` from public data.

A receipt token is `base64url(canonical JSON) "." base64url(Ed25519 signature)`, or,
from a gateway that signs checkpoints, `base64url(canonical JSON) "."`: an unsigned
receipt, covered by a signed chain head (`verify_checkpoint`). This
module decodes tokens, loads the published keys, and checks a receipt's signature (with
a key whose validity window holds the receipt's `ts`), its request and response hashes,
and its token counts against the usage the provider reported; `verify_chain` checks a
chain of receipts. Both import only the standard library and `cryptography`, so they
can be read, and trusted, on their own. Every failed check raises `VerifyError` with one
line that names what failed; `MalformedError` marks input that is not a receipt, keys
document or JSON at all, however it is malformed (too deep, numbers too long, lone
surrogates included).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

VERSION = "recovea-receipt-v1"
ZERO_HASH = "0" * 64
COUNTS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")
#: the gateway clamps a reported count to this (as `providers.usage.COUNT_MAX` does)
COUNT_MAX = 2**31 - 1
FIELDS = frozenset(
    "v kid request_id ts customer_id rcv_key_id provider baseline_model realized_model"
    " input_tokens output_tokens cached_tokens reasoning_tokens cache_hit status"
    " request_sha256 response_sha256 chain seq prev".split()
)
# Every field is a JSON scalar; these are the types the checks below rely on. The
# others' values are covered by the signature.
SCALARS: tuple[type, ...] = (str, int, bool, type(None))
TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("v", "kid", "request_sha256", "response_sha256", "chain", "prev"), (str,)),
    **dict.fromkeys(COUNTS, (int, type(None))),
    "seq": (int,),
    "ts": (int,),
}
#: How far outside a key's published window (created_at .. retired_at) a receipt's `ts`
#: may lie. Gateways switch keys only at their next maintenance round
#: (RECOVEA_MAINTENANCE_INTERVAL_S, 300 s by default, later when a round fails), `ts` is
#: the request's arrival while signing happens at its end (a long stream: minutes), and
#: the gateway's clock (`ts`) and the database's (the window) differ a little.
KEY_GRACE_S = 3600
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_B64 = re.compile(r"[A-Za-z0-9_-]+")
# The gateway's last SSE line: `: recovea-receipt-v1 <token>` and its blank line.
_RECEIPT_LINE = re.compile(rb"(?:\A|(?<=\n)): recovea-receipt-v1 ([A-Za-z0-9_.-]+)\n\n\Z")


class VerifyError(ValueError):
    """A check failed; the message names what, on one line."""


class MalformedError(VerifyError):
    """The input is not a well-formed token, keys document or ledger."""


class Pending(Exception):
    """A check that has not failed but cannot pass yet: an unsigned receipt whose
    covering checkpoint is not at hand (not yet signed, published, or given)."""


@dataclass(frozen=True)
class Receipt:
    """One decoded token: its payload, the exact signed bytes, and the signature (empty
    for an unsigned receipt, which a checkpoint covers)."""

    payload: dict[str, Any]
    canonical: bytes
    signature: bytes

    @property
    def signed(self) -> bool:
        """Whether the token carries its own signature."""
        return bool(self.signature)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the canonical bytes (what the next receipt's `prev` holds)."""
        return hashlib.sha256(self.canonical).hexdigest()


@dataclass(frozen=True)
class PublishedKey:
    """A usable public key and its window: epoch ms of created_at and retired_at."""

    public: Ed25519PublicKey
    created_ms: int
    retired_ms: int | None


class KeySet(dict[str, PublishedKey]):
    """Usable public keys by kid. `rejected`: kid → why its key was refused (it is not
    the key its kid names); `unusable`: kid → why its entry cannot be read (a receipt
    naming it cannot be checked); `grace_ms`: how far outside its window a key still
    verifies a receipt."""

    rejected: dict[str, str]
    unusable: dict[str, str]
    grace_ms: int

    def __init__(self, grace_s: int = KEY_GRACE_S) -> None:
        super().__init__()
        self.rejected = {}
        self.unusable = {}
        self.grace_ms = grace_s * 1000


def shown(value: str, limit: int = 80) -> str:
    """An untrusted string fit for a one-line message: non-printables escaped, bounded."""
    if not value.isprintable():
        value = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in value)
    return value if len(value) <= limit else value[:limit] + "..."


def load_json(data: bytes, what: str, **options: Any) -> Any:
    """Parse UTF-8 JSON; every way it can fail is a MalformedError naming `what`."""
    try:
        return json.loads(data.decode(), **options)
    except MalformedError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise MalformedError(f"{what} is not UTF-8 JSON") from None
    except RecursionError:
        raise MalformedError(f"{what} is nested too deeply") from None
    except ValueError:  # an integer beyond Python's conversion limit
        raise MalformedError(f"{what} holds a number too long to read") from None


def b64url_decode(text: str, what: str) -> bytes:
    """Strict unpadded base64url: the alphabet only, and it must re-encode to itself."""
    if not _B64.fullmatch(text):
        raise MalformedError(f"{what} is not valid base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise MalformedError(f"{what} is not valid base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise MalformedError(f"{what} is not valid base64url")
    return raw


def canonical_json(obj: Any) -> bytes:
    """The receipt's canonical form: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _no_float(text: str) -> Any:
    raise MalformedError(f"receipt payload holds a non-integer number ({shown(text)})")


def decode_token(token: str) -> Receipt:
    """Decode a token and check that its payload is a canonical, complete receipt. An
    empty signature part (`<payload>.`) is an unsigned receipt that a checkpoint covers."""
    parts = token.strip().split(".")
    if len(parts) != 2 or not parts[0]:
        raise MalformedError("token is not <payload>.<signature>")
    canonical = b64url_decode(parts[0], "token payload")
    signature = b64url_decode(parts[1], "token signature") if parts[1] else b""
    if parts[1] and len(signature) != 64:
        raise MalformedError("token signature is not 64 bytes")
    payload = load_json(canonical, "token payload", parse_float=_no_float, parse_constant=_no_float)
    if not isinstance(payload, dict):
        raise MalformedError("token payload is not a JSON object")
    if missing := sorted(FIELDS - payload.keys()):
        raise MalformedError(f"receipt is missing {', '.join(missing)}")
    if extra := sorted(payload.keys() - FIELDS):
        raise MalformedError(f"receipt has unknown fields {shown(', '.join(extra))}")
    for name in sorted(FIELDS):
        if type(payload[name]) not in TYPES.get(name, SCALARS):
            raise MalformedError(f"receipt field {name} has the wrong type")
    try:
        again = canonical_json(payload)
    except UnicodeEncodeError:  # a lone surrogate escape such as "\ud800"
        raise MalformedError("token payload holds a lone surrogate escape") from None
    if again != canonical:
        raise MalformedError("token payload is not canonical JSON")
    return Receipt(payload, canonical, signature)


def kid_of(raw_public_key: bytes) -> str:
    """The key id the gateway derives from a raw Ed25519 public key."""
    return "rk_" + hashlib.sha256(raw_public_key).hexdigest()[:16]


def _epoch_ms(value: Any, name: str) -> int:
    """An ISO 8601 time with a UTC offset, as integer epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return (moment - _EPOCH) // _MS
    except (TypeError, ValueError, OverflowError):
        raise MalformedError(f"{name} is not an ISO 8601 time with a UTC offset") from None


def _moment(epoch_ms: int) -> str:
    try:
        return (_EPOCH + epoch_ms * _MS).isoformat(timespec="milliseconds")
    except OverflowError:
        return f"{epoch_ms} ms after the epoch"


def _published_key(entry: dict[str, Any]) -> PublishedKey:
    """The entry's key and window; MalformedError says why it cannot be read."""
    public = entry.get("public_key")
    raw = b64url_decode(public, "its public_key") if isinstance(public, str) else b""
    if entry.get("alg") != "Ed25519" or len(raw) != 32:
        raise MalformedError("it is not a raw 32-byte Ed25519 public key")
    created = _epoch_ms(entry.get("created_at"), "its created_at")
    retired = entry.get("retired_at")
    retired_ms = None if retired is None else _epoch_ms(retired, "its retired_at")
    try:
        key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise MalformedError("its public_key is not an Ed25519 point") from None
    return PublishedKey(key, created, retired_ms)


def load_keys(document: bytes | dict[str, Any], grace_s: int = KEY_GRACE_S) -> KeySet:
    """Public keys from a keys document, each with its validity window. An entry that
    cannot be read is set aside as unusable (a later format's key may be one), one whose
    kid is not the hash of its key is refused; the other keys still verify."""
    if isinstance(document, bytes):
        document = load_json(document, "keys document")
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise MalformedError('keys document has no "keys" list')
    keys = KeySet(grace_s)
    for number, entry in enumerate(entries, 1):
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str):
            raise MalformedError(f"keys document entry {number} is not an object with a kid")
        try:
            key = _published_key(entry)
        except MalformedError as exc:
            keys.unusable[kid] = str(exc)
            continue
        raw = key.public.public_bytes_raw()
        if kid_of(raw) != kid:
            keys.rejected[kid] = "its kid does not match the hash of its public key"
            continue
        keys[kid] = key
    return keys


def _check_window(ts: int, kid: str, key: PublishedKey, grace_ms: int, what: str) -> None:
    grace = f"{grace_ms // 1000} s"
    if ts < key.created_ms - grace_ms:
        raise VerifyError(
            f"key {shown(kid)} was created at {_moment(key.created_ms)}: {what} ts"
            f" {_moment(ts)} is more than {grace} before that"
        )
    if key.retired_ms is not None and ts > key.retired_ms + grace_ms:
        raise VerifyError(
            f"key {shown(kid)} was retired at {_moment(key.retired_ms)}: {what} ts"
            f" {_moment(ts)} is more than {grace} after that"
        )


def check_signature(receipt: Receipt, keys: KeySet) -> str:
    """Verify the Ed25519 signature with the key the receipt names, and that the
    receipt's `ts` lies in that key's window (give or take the grace); returns the kid.
    An unsigned receipt raises `Pending`: only its checkpoint can vouch for it."""
    if not receipt.signed:
        raise Pending("the receipt is unsigned: it is covered by a checkpoint not yet checked")
    kid = receipt.payload["kid"]
    key = _key(kid, keys)
    _verify(key, kid, receipt.signature, receipt.canonical)
    if receipt.payload["v"] != VERSION:
        raise VerifyError(f"unsupported receipt version {shown(repr(receipt.payload['v']))}")
    _check_window(receipt.payload["ts"], kid, key, keys.grace_ms, "receipt")
    return str(kid)


def verify_signed(
    kid: str, canonical: bytes, signature: bytes, ts: int, keys: KeySet, what: str
) -> str:
    """Verify an Ed25519 signature over `canonical` with the published key `kid`, and that
    `ts` (of the signed `what`) lies in that key's window, give or take the grace."""
    key = _key(kid, keys)
    _verify(key, kid, signature, canonical)
    _check_window(ts, kid, key, keys.grace_ms, what)
    return kid


def _key(kid: str, keys: KeySet) -> PublishedKey:
    key = keys.get(kid)
    if key is None:
        if kid in keys.unusable:
            raise MalformedError(f"key {shown(kid)} is unusable: {keys.unusable[kid]}")
        why = keys.rejected.get(kid)
        name = shown(kid)
        raise VerifyError(f"key {name} was refused: {why}" if why else f"no key {name} in the keys")
    return key


def _verify(key: PublishedKey, kid: str, signature: bytes, canonical: bytes) -> None:
    try:
        key.public.verify(signature, canonical)
    except InvalidSignature:
        raise VerifyError(f"signature does not verify with key {shown(kid)}") from None


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
    return min(value, COUNT_MAX) if type(value) is int and value >= 0 else None


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
        except (ValueError, RecursionError):
            continue  # no data, `[DONE]`, or not JSON (or JSON Python cannot read)
    return [obj for obj in found if isinstance(obj, dict)]


def usage_of(body: bytes) -> dict[str, int | None] | None:
    """The token counts a JSON or SSE response reported to the client, None if none."""
    try:
        docs = [json.loads(body)]
    except (ValueError, RecursionError):  # not JSON (too deep, numbers too long): SSE?
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
