"""Envelope encryption of provider keys (and report keys): AES-256-GCM under a fresh data key each,
the data key wrapped by the master key (local file or AWS KMS).

The workspace id, the provider and the key id are bound as associated data (and,
with KMS, as the encryption context), so a ciphertext moved to another row or
workspace no longer decrypts.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class MasterKey(Protocol):
    """Wraps and unwraps data keys."""

    backend: str
    key_id: str

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        """(plaintext data key, wrapped data key)."""
        ...

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        """The plaintext data key; raises if `context` differs from the wrapping one."""
        ...

    def wrap(self, data_key: bytes, context: dict[str, str]) -> bytes:
        """An existing data key wrapped under this master key (for rotation)."""
        ...


@dataclass(frozen=True, slots=True)
class Sealed:
    """A provider key at rest."""

    ciphertext: bytes
    nonce: bytes
    wrapped_data_key: bytes
    master_key_id: str
    backend: str


def context_for(workspace_id: str, provider: str, key_id: str) -> dict[str, str]:
    """The encryption context / associated data of one provider key."""
    return {"workspace": workspace_id, "provider": provider, "key_id": key_id}


def report_context_for(workspace_id: str, provider: str, key_id: str) -> dict[str, str]:
    """The encryption context / associated data of one report key (a provider's usage
    report key): a provider key's, plus its purpose, so neither opens as the other."""
    return {**context_for(workspace_id, provider, key_id), "purpose": "report"}


def associated_data(context: dict[str, str]) -> bytes:
    """The AEAD associated data that binds a ciphertext to its context."""
    return _aad(context)


def _aad(context: dict[str, str]) -> bytes:
    return "|".join(f"{k}={context[k]}" for k in sorted(context)).encode()


def seal(master: MasterKey, secret: str, context: dict[str, str]) -> Sealed:
    """Encrypt `secret` under a fresh data key wrapped by `master`."""
    data_key, wrapped = master.generate_data_key(context)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode(), _aad(context))
    return Sealed(ciphertext, nonce, wrapped, master.key_id, master.backend)


def open_sealed(data_key: bytes, sealed: Sealed, context: dict[str, str]) -> bytearray:
    """The plaintext key as a bytearray the caller overwrites after use."""
    return bytearray(AESGCM(data_key).decrypt(sealed.nonce, sealed.ciphertext, _aad(context)))


class LocalMasterKey:
    """A 256-bit key in a file (created 0600 on first use) that wraps data keys."""

    backend = "local"

    def __init__(self, key: bytes, key_id: str) -> None:
        self._aead = AESGCM(key)
        self.key_id = key_id

    @classmethod
    def load_or_create(cls, path: os.PathLike[str] | str) -> LocalMasterKey:
        """Read the key file, creating it (mode 0600) when it does not exist."""
        file = Path(path)
        if not file.exists():
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process created it first
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(AESGCM.generate_key(bit_length=256))
        return cls.load(file)

    @classmethod
    def load(cls, path: os.PathLike[str] | str) -> LocalMasterKey:
        """Read an existing key file."""
        key = Path(path).read_bytes()
        if len(key) != 32:
            raise ValueError(f"master key file {path} must hold exactly 32 bytes")
        return cls(key, "local:" + hashlib.sha256(key).hexdigest()[:16])

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        return data_key, self.wrap(data_key, context)

    def wrap(self, data_key: bytes, context: dict[str, str]) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, data_key, _aad(context))

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _aad(context))
