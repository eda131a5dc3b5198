"""Receipt signing keys: Ed25519 keys kept in the database, the private half sealed
under the master key (like a provider key), so every replica signs with a key its
clients can fetch from `/.well-known/recovea-receipt-keys`.

At most one key is active; rotating retires it (it stays published, so old
receipts still verify) and creates the next. The key id is `rk_` + the first 16
hex digits of the SHA-256 of the raw public key, so a client can check it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recovea_proxy.auth.envelope import Sealed, open_sealed, seal
from recovea_proxy.auth.keyring import Keyring

_ACTIVE = (
    "SELECT kid, ciphertext, nonce, wrapped_data_key, master_key_id, backend"
    " FROM recovea.receipt_keys WHERE retired_at IS NULL"
)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The active key: its id and private half."""

    kid: str
    private: Ed25519PrivateKey


def key_id(public_raw: bytes) -> str:
    """`rk_` + 16 hex digits of the public key's SHA-256."""
    return "rk_" + hashlib.sha256(public_raw).hexdigest()[:16]


def _context(kid: str) -> dict[str, str]:
    return {"purpose": "receipt-signing", "kid": kid}


def _public_raw(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def _insert_new(conn: asyncpg.Connection, keyring: Keyring) -> None:
    private = Ed25519PrivateKey.generate()
    public = _public_raw(private)
    kid = key_id(public)
    secret = private.private_bytes_raw().hex()
    sealed = await asyncio.to_thread(seal, keyring.current, secret, _context(kid))
    await conn.execute(
        "INSERT INTO recovea.receipt_keys (kid, public_key, ciphertext, nonce, wrapped_data_key,"
        " master_key_id, backend) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        kid,
        public,
        sealed.ciphertext,
        sealed.nonce,
        sealed.wrapped_data_key,
        sealed.master_key_id,
        sealed.backend,
    )


async def active_signing_key(conn: asyncpg.Connection, keyring: Keyring) -> SigningKey:
    """The active key, created on first use (replicas racing here end up with one)."""
    row = await conn.fetchrow(_ACTIVE)
    if row is None:
        try:
            await _insert_new(conn, keyring)
        except asyncpg.UniqueViolationError:
            pass  # another replica created it first
        row = await conn.fetchrow(_ACTIVE)
        assert row is not None
    sealed = Sealed(
        row["ciphertext"],
        row["nonce"],
        row["wrapped_data_key"],
        row["master_key_id"],
        row["backend"],
    )
    context = _context(row["kid"])
    master = keyring.reader(sealed.backend, sealed.master_key_id)
    data_key = await asyncio.to_thread(master.unwrap, sealed.wrapped_data_key, context)
    secret = open_sealed(data_key, sealed, context)
    try:
        private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret.decode()))
    finally:
        secret[:] = bytes(len(secret))
    if key_id(_public_raw(private)) != row["kid"]:
        raise ValueError(f"receipt key {row['kid']} does not match its stored private key")
    return SigningKey(row["kid"], private)


async def rotate_signing_key(conn: asyncpg.Connection, keyring: Keyring) -> str:
    """Retire the active key and create the next; the new key id. Gateways switch to the
    new key at their next maintenance round; the retired one stays published."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE recovea.receipt_keys SET retired_at = now() WHERE retired_at IS NULL"
        )
        await _insert_new(conn, keyring)
    kid: str = await conn.fetchval("SELECT kid FROM recovea.receipt_keys WHERE retired_at IS NULL")
    return kid


async def published_keys(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, Any]:
    """The public keys document: every key, active and retired."""
    rows = await conn.fetch(
        "SELECT kid, public_key, created_at, retired_at FROM recovea.receipt_keys"
        " ORDER BY created_at"
    )
    return {
        "keys": [
            {
                "kid": row["kid"],
                "alg": "Ed25519",
                "public_key": base64.urlsafe_b64encode(row["public_key"]).rstrip(b"=").decode(),
                "created_at": row["created_at"].isoformat(),
                "retired_at": row["retired_at"].isoformat() if row["retired_at"] else None,
            }
            for row in rows
        ]
    }


class PublishedKeys:
    """The public keys document, rendered once and served from memory, so
    `/.well-known/recovea-receipt-keys` costs no query however often it is fetched.

    Loaded at startup, reloaded every maintenance round (with the signing key), and,
    when it is older than `MAX_AGE_S`, by the first fetch that finds it so (one at a
    time; the others are served the copy in hand). A failed reload keeps the copy.
    """

    MAX_AGE_S = 60.0

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._loaded_at = 0.0
        self._reloading = False
        #: the rendered document (JSON bytes); empty until the first load succeeds
        self.body = b""

    async def reload(self) -> None:
        """Read the keys now; raises when the database cannot be read."""
        self.body = orjson.dumps(await published_keys(self._pool))
        self._loaded_at = time.monotonic()

    async def current(self) -> bytes:
        """The document, reloaded first when it is stale and no reload is under way."""
        if self._reloading or time.monotonic() - self._loaded_at < self.MAX_AGE_S:
            return self.body
        self._reloading = True
        try:
            await self.reload()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._loaded_at = time.monotonic()  # try again after MAX_AGE_S, not per fetch
        finally:
            self._reloading = False
        return self.body
