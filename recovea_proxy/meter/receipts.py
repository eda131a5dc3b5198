"""Signs `recovea-receipt-v1` receipts and keeps this process's chains.

A receipt is the canonical JSON (sorted keys, no spaces, UTF-8, integers only) of
a request's body-free facts, the SHA-256 of the request and response bodies, and
its place in a chain, signed with Ed25519. One chain per (workspace, process):
`seq` counts from 1 and `prev` is the SHA-256 of the previous receipt's canonical
JSON (64 zeros for the first). Token: base64url(canonical) "." base64url(signature),
unpadded. `recovea_proxy.meter.verify` checks all of it from public data.

`CheckpointSigner` (RECOVEA_RECEIPT_SIGNING=checkpoint) issues the same receipts
unsigned — token `base64url(canonical) "."`, an empty signature part — and instead
signs `recovea-checkpoint-v1` chain heads off the hot path (`meter.checkpoints`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from binascii import b2a_base64

import orjson
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nacl.bindings import crypto_sign

from recovea_proxy.meter.event import status_of
from recovea_proxy.meter.receipt_keys import SigningKey
from recovea_proxy.record import RequestRecord

VERSION = "recovea-receipt-v1"
CHECKPOINT_VERSION = "recovea-checkpoint-v1"
GENESIS = "0" * 64
#: the SSE comment a streamed response ends with (then the token and a blank line)
SSE_PREFIX = b": recovea-receipt-v1 "


class _Chain:
    __slots__ = ("id", "prev", "seq", "signed")

    def __init__(self) -> None:
        self.id = os.urandom(16).hex()
        self.seq = 0
        self.prev = GENESIS
        #: the seq of the chain's last signed checkpoint (checkpoint signing only)
        self.signed = 0


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
        chain, canonical = self._next(record, response_sha256)
        signature = crypto_sign(canonical, self._secret)[:64]
        token = _b64(canonical) + b"." + _b64(signature)
        record.receipt = token.decode("ascii")
        record.receipt_place = (chain.id, chain.seq, self.kid)
        return token

    def _next(self, record: RequestRecord, response_sha256: str) -> tuple[_Chain, bytes]:
        """The record's receipt, canonical, as the next of its workspace's chain."""
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
        return chain, canonical

    def sse_line(self, token: bytes) -> bytes:
        """The closing SSE comment that carries a streamed response's receipt."""
        return SSE_PREFIX + token + b"\n\n"


class CheckpointSigner(ReceiptSigner):
    """Issues receipts unsigned (token `base64url(canonical) "."`) and signs chain heads
    instead: `checkpoints()` signs one `recovea-checkpoint-v1` for each chain that moved
    since its last one. The hot path pays for the canonical JSON, its SHA-256 (the next
    `prev`) and a comparison; `due` is set when a chain has `every` receipts unsigned,
    so the checkpoint task signs it soon (never inline)."""

    def __init__(self, key: SigningKey, every: int) -> None:
        super().__init__(key)
        self._every = every
        #: set when a chain has `every` receipts not yet covered by a checkpoint
        self.due = asyncio.Event()

    def sign(self, record: RequestRecord, response_sha256: str) -> bytes:
        """The record's receipt, unsigned: covered by the chain's next checkpoint."""
        chain, canonical = self._next(record, response_sha256)
        token = _b64(canonical) + b"."
        record.receipt = token.decode("ascii")
        record.receipt_place = (chain.id, chain.seq, self.kid)
        if chain.seq - chain.signed >= self._every:
            self.due.set()
        return token

    def checkpoints(self) -> list[tuple[str, str, int, str, int, str]]:
        """Sign the head of every chain that moved since its last checkpoint: for each,
        (workspace, chain, seq, kid, ts epoch ms, token)."""
        signed = []
        ts = time.time_ns() // 1_000_000
        for workspace, chain in self._chains.items():
            if chain.seq == chain.signed:
                continue
            # Keys in sorted order (canonical form).
            canonical = orjson.dumps(
                {
                    "chain": chain.id,
                    "head": chain.prev,
                    "kid": self.kid,
                    "seq": chain.seq,
                    "ts": ts,
                    "v": CHECKPOINT_VERSION,
                }
            )
            signature = crypto_sign(canonical, self._secret)[:64]
            token = (_b64(canonical) + b"." + _b64(signature)).decode("ascii")
            chain.signed = chain.seq
            signed.append((workspace, chain.id, chain.seq, self.kid, ts, token))
        return signed
