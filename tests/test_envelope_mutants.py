"""Envelope encryption's fixed points, beside tests/test_envelope.py: the names under
which a provider key's context is bound (the associated data of every stored row and
the KMS encryption context that key policies and audit logs name), and the local
master key file (created with its directories, owner-only; refused, naming the file,
when it does not hold a key).

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recovea_proxy.auth.envelope import LocalMasterKey, associated_data, context_for


def test_the_context_names_the_workspace_provider_and_key_id() -> None:
    """The context (KMS's EncryptionContext) is exactly these three names: a key policy
    condition on `kms:EncryptionContext:workspace` and every row already stored depend
    on them; the associated data is the same names, sorted."""
    context = context_for("w-1", "openai", "k-1")
    assert context == {"workspace": "w-1", "provider": "openai", "key_id": "k-1"}
    assert associated_data(context) == b"key_id=k-1|provider=openai|workspace=w-1"


def test_the_master_key_file_is_created_with_its_directories(tmp_path: Path) -> None:
    """A master key file in directories that do not exist yet: they are created (owner
    only), the file holds 32 bytes readable by its owner only, and loads again."""
    path = tmp_path / "a" / "b" / "master.key"
    created = LocalMasterKey.load_or_create(path)
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert LocalMasterKey.load(path).key_id == created.key_id


def test_a_file_that_is_not_a_master_key_is_refused_by_name(tmp_path: Path) -> None:
    """A master key file of the wrong size is refused, naming the file."""
    path = tmp_path / "master.key"
    path.write_bytes(b"short")
    with pytest.raises(ValueError) as caught:
        LocalMasterKey.load(path)
    assert str(caught.value) == f"master key file {path} must hold exactly 32 bytes"
