"""Envelope encryption binds a provider key to its row: the workspace, the provider and
the key id are the associated data of both the data key's wrapping and the key's own
encryption, so a sealed key opens under its own context and under no other.

These are the unit promises behind DESIGN.md's Secrets section; the end-to-end one (a
row copied into another workspace is refused, never served) is in
`test_provider_key_binding.py`.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from recovea_proxy.auth.envelope import (
    LocalMasterKey,
    Sealed,
    associated_data,
    context_for,
    open_sealed,
    seal,
)

SECRET = "sk-envelope-test-0123456789abcdef"
WORKSPACE = "6f1c2a9e-0000-4000-8000-00000000000a"
OTHER_WORKSPACE = "6f1c2a9e-0000-4000-8000-00000000000b"
KEY_ID = "0b7d4e1f-0000-4000-8000-000000000001"
OTHER_KEY_ID = "0b7d4e1f-0000-4000-8000-000000000002"

CONTEXT = context_for(WORKSPACE, "openai", KEY_ID)
#: the row's context with one field changed: each is another row the ciphertext
#: could be copied to
OTHER_CONTEXTS = {
    "workspace": context_for(OTHER_WORKSPACE, "openai", KEY_ID),
    "provider": context_for(WORKSPACE, "anthropic", KEY_ID),
    "key_id": context_for(WORKSPACE, "openai", OTHER_KEY_ID),
}


@pytest.fixture
def master() -> LocalMasterKey:
    """A local master key of the test's own."""
    return LocalMasterKey(AESGCM.generate_key(bit_length=256), "local:test")


def opened(master: LocalMasterKey, sealed: Sealed, context: dict[str, str]) -> str:
    """The secret, unwrapped and decrypted under `context` (raises when it does not fit)."""
    data_key = master.unwrap(sealed.wrapped_data_key, context)
    return open_sealed(data_key, sealed, context).decode()


def flip_last_byte(value: bytes) -> bytes:
    return value[:-1] + bytes([value[-1] ^ 0x01])


def test_a_sealed_key_opens_under_its_own_context(master: LocalMasterKey) -> None:
    """Sealing then opening with the same context gives the secret back, and the row
    records which master key wrapped it."""
    sealed = seal(master, SECRET, CONTEXT)
    assert SECRET == opened(master, sealed, CONTEXT)
    assert ("local:test", "local") == (sealed.master_key_id, sealed.backend)
    assert SECRET.encode() not in sealed.ciphertext


def test_every_seal_uses_a_fresh_data_key_and_nonce(master: LocalMasterKey) -> None:
    """The same secret sealed twice shares no data key, wrapped key, nonce or ciphertext."""
    first = seal(master, SECRET, CONTEXT)
    second = seal(master, SECRET, CONTEXT)
    first_key = master.unwrap(first.wrapped_data_key, CONTEXT)
    second_key = master.unwrap(second.wrapped_data_key, CONTEXT)
    assert first_key != second_key
    assert first.wrapped_data_key != second.wrapped_data_key
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext


@pytest.mark.parametrize("changed", sorted(OTHER_CONTEXTS))
def test_associated_data_differs_for_each_field_of_the_context(changed: str) -> None:
    """Changing the workspace, the provider or the key id alone changes the associated
    data, and none of them is ever left out of it (it is never empty)."""
    assert associated_data(CONTEXT) != associated_data(OTHER_CONTEXTS[changed])
    assert associated_data(CONTEXT) != b""


@pytest.mark.parametrize("changed", sorted(OTHER_CONTEXTS))
def test_the_data_key_does_not_unwrap_under_another_context(
    master: LocalMasterKey, changed: str
) -> None:
    """The local master key refuses to unwrap a data key for another workspace, provider
    or key id than the one it was wrapped for."""
    _, wrapped = master.generate_data_key(CONTEXT)
    with pytest.raises(InvalidTag):
        master.unwrap(wrapped, OTHER_CONTEXTS[changed])


def test_a_rewrapped_data_key_keeps_its_binding(master: LocalMasterKey) -> None:
    """`wrap` (used by rotation) binds the data key to the context it is given, like
    `generate_data_key` does."""
    data_key = AESGCM.generate_key(bit_length=256)
    wrapped = master.wrap(data_key, CONTEXT)
    assert data_key == master.unwrap(wrapped, CONTEXT)
    for other in OTHER_CONTEXTS.values():
        with pytest.raises(InvalidTag):
            master.unwrap(wrapped, other)


@pytest.mark.parametrize("changed", sorted(OTHER_CONTEXTS))
def test_the_ciphertext_does_not_open_under_another_context(
    master: LocalMasterKey, changed: str
) -> None:
    """Even holding the right data key, the provider key does not decrypt under another
    workspace, provider or key id: the ciphertext itself is bound, not only the wrap."""
    sealed = seal(master, SECRET, CONTEXT)
    data_key = master.unwrap(sealed.wrapped_data_key, CONTEXT)
    with pytest.raises(InvalidTag):
        open_sealed(data_key, sealed, OTHER_CONTEXTS[changed])


@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
def test_a_tampered_ciphertext_or_nonce_does_not_open(master: LocalMasterKey, field: str) -> None:
    """One flipped bit in the stored ciphertext (or its tag) or nonce is refused, never
    decrypted to something else."""
    sealed = seal(master, SECRET, CONTEXT)
    if field == "ciphertext":
        tampered = replace(sealed, ciphertext=flip_last_byte(sealed.ciphertext))
    else:
        tampered = replace(sealed, nonce=flip_last_byte(sealed.nonce))
    data_key = master.unwrap(sealed.wrapped_data_key, CONTEXT)
    with pytest.raises(InvalidTag):
        open_sealed(data_key, tampered, CONTEXT)


@pytest.mark.parametrize("where", ["nonce", "body"])
def test_a_tampered_wrapped_data_key_does_not_unwrap(master: LocalMasterKey, where: str) -> None:
    """A wrapped data key altered in its nonce (first 12 bytes) or its body is refused."""
    _, wrapped = master.generate_data_key(CONTEXT)
    at = 0 if where == "nonce" else len(wrapped) - 1
    tampered = wrapped[:at] + bytes([wrapped[at] ^ 0x01]) + wrapped[at + 1 :]
    with pytest.raises(InvalidTag):
        master.unwrap(tampered, CONTEXT)


def test_another_master_key_cannot_unwrap(master: LocalMasterKey) -> None:
    """A data key wrapped by one master key does not unwrap under another, even with the
    right context."""
    other = LocalMasterKey(AESGCM.generate_key(bit_length=256), "local:other")
    sealed = seal(master, SECRET, CONTEXT)
    with pytest.raises(InvalidTag):
        other.unwrap(sealed.wrapped_data_key, CONTEXT)
