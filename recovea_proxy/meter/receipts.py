"""Signs `recovea-receipt-v1` receipts and keeps this process's chains.

A receipt is the canonical JSON (sorted keys, no spaces, UTF-8, integers only) of
a request's body-free facts, the SHA-256 of the request and response bodies, and
its place in a chain, signed with Ed25519. One chain per (workspace, process):
`seq` counts from 1 and `prev` is the SHA-256 of the previous receipt's canonical
JSON (64 zeros for the first). Token: base64url(canonical) "." base64url(signature),
unpadded. `recovea_proxy.meter.verify` checks all of it from public data.
"""

from __future__ import annotations

import hashlib
import os
from binascii import b2a_base64

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign

from recovea_proxy.meter.event import status_of
from recovea_proxy.meter.receipt_keys import SigningKey
from recovea_proxy.record import RequestRecord

VERSION = "recovea-receipt-v1"
GENESIS = "0" * 64
#: the SSE comment a streamed response ends with (then the token and a blank line)
SSE_PREFIX = b": recovea-receipt-v1 "


class _Chain:
    __slots__ = ("id", "prev", "seq")

    def __init__(self) -> None:
        self.id = os.urandom(16).hex()
        self.seq = 0
        self.prev = GENESIS


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> bytes:
    """base64url without padding."""
    return b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _libsodium_secret(key: SigningKey) -> bytes:
    """The key as libsodium's 64-byte secret key (seed then public key)."""
    public = key.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key.private.private_bytes_raw() + public


class ReceiptSigner:
    """Signs each billed request's receipt, in chain order.

    Signing uses libsodium (PyNaCl): on the hot path it is about 1.3x faster than
    OpenSSL's Ed25519 here, and Ed25519 signatures are deterministic, so any
    verifier (the `cryptography`-only one included) checks them the same way.
    """

    def __init__(self, key: SigningKey) -> None:
        self._chains: dict[str, _Chain] = {}
        self.use(key)

    def use(self, key: SigningKey) -> None:
        """Sign with another key from now on (after a rotation); chains continue."""
        self.kid = key.kid
        self._secret = _libsodium_secret(key)

    def sign(self, record: RequestRecord, response_sha256: str) -> bytes:
        """Sign the record's receipt, store it on the record (as text, for the ledger),
        return the token (as bytes, for the response)."""
        workspace = record.workspace_id
        assert workspace is not None
        chain = self._chains.get(workspace)
        if chain is None:
            chain = self._chains[workspace] = _Chain()
        chain.seq += 1
        usage = record.usage
        model = record.model
        # Keys in sorted order already (canonical form), so orjson need not sort them.
        canonical = orjson.dumps(
            {
                "baseline_model": model,
                "cache_hit": record.cache_hit,
                "cached_tokens": usage.cached_tokens,
                "chain": chain.id,
                "customer_id": workspace,
                "input_tokens": usage.input_tokens,
                "kid": self.kid,
                "output_tokens": usage.output_tokens,
                "prev": chain.prev,
                "provider": record.provider,
                "rcv_key_id": record.rcv_key_id,
                "realized_model": record.realized_model or model,
                "reasoning_tokens": usage.reasoning_tokens,
                "request_id": record.request_id,
                "request_sha256": record.request_sha256,
                "response_sha256": response_sha256,
                "seq": chain.seq,
                "status": status_of(record),
                "ts": record.ts_epoch_ms,
                "v": VERSION,
            }
        )
        chain.prev = hashlib.sha256(canonical).hexdigest()
        signature = crypto_sign(canonical, self._secret)[:64]
        token = _b64(canonical) + b"." + _b64(signature)
        record.receipt = token.decode("ascii")
        record.receipt_place = (chain.id, chain.seq, self.kid)
        return token

    def sse_line(self, token: bytes) -> bytes:
        """The closing SSE comment that carries a streamed response's receipt."""
        return SSE_PREFIX + token + b"\n\n"
