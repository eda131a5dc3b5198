"""rcv_ keys: how they look, how they are stored, how they are found.

A key is `rcv_live_` or `rcv_test_` followed by 43 base64url characters (32 random
bytes). Only its SHA-256 and its last four characters are stored; the full key is
shown once, at creation.

A presented key is found by its SHA-256 digest (a dict in memory, a unique index in
Postgres), never compared with stored keys character by character: how long a
lookup takes depends on the digest, and learning anything about a stored digest
from it would not help an attacker find a key with that digest (a preimage of
SHA-256), so no constant-time comparison is needed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re

PREFIXES = {"live": "rcv_live_", "test": "rcv_test_"}
#: Postgres NOTIFY channel carrying the id of each revoked key
REVOCATIONS_CHANNEL = "recovea_key_revoked"
_RANDOM_BYTES = 32
_SHAPE = re.compile(r"rcv_(?:live|test)_[A-Za-z0-9_-]{43}")


def new_key(env: str) -> str:
    """A fresh rcv_ key for `env` (live or test)."""
    token = base64.urlsafe_b64encode(os.urandom(_RANDOM_BYTES)).rstrip(b"=").decode()
    return PREFIXES[env] + token


def key_hash(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(token: str) -> bool:
    """A token shaped exactly like a key `new_key` makes (a check before any lookup,
    not authentication)."""
    return _SHAPE.fullmatch(token) is not None


def last_four(secret: str) -> str:
    """The only part of a secret ever shown after creation."""
    return secret[-4:]
