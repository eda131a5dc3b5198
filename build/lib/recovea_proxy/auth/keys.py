"""rcv_ keys: how they look, how they are stored, how they are compared.

A key is `rcv_live_` or `rcv_test_` followed by 43 base64url characters (32 random
bytes). Only its SHA-256 and its last four characters are stored; the full key is
shown once, at creation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

PREFIXES = {"live": "rcv_live_", "test": "rcv_test_"}
#: Postgres NOTIFY channel carrying the id of each revoked key
REVOCATIONS_CHANNEL = "recovea_key_revoked"
_RANDOM_BYTES = 32


def new_key(env: str) -> str:
    """A fresh rcv_ key for `env` (live or test)."""
    token = base64.urlsafe_b64encode(os.urandom(_RANDOM_BYTES)).rstrip(b"=").decode()
    return PREFIXES[env] + token


def key_hash(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(token: str) -> bool:
    """A token with an rcv_ prefix and a plausible length (cheap pre-check, not auth)."""
    return token.startswith(("rcv_live_", "rcv_test_")) and 40 <= len(token) <= 128


def same_hash(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two key hashes."""
    return hmac.compare_digest(a, b)


def last_four(secret: str) -> str:
    """The only part of a secret ever shown after creation."""
    return secret[-4:]
