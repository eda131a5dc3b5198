"""Which master key wraps new data keys, and which can unwrap the stored ones.

New provider keys are wrapped by the current master: AWS KMS when
RECOVEA_KMS_KEY_ID is set, otherwise the local key file. Stored keys are
unwrapped by the backend and key id recorded with them, so switching backends or
rotating the local file keeps old rows readable until `provider-key rotate`
re-wraps them.

A workspace on its own KMS key (`recovea workspace kms set`) is the exception: its
data keys are wrapped by that key and unwrapped through it alone (`workspace_key`,
pinned), whatever master the deployment has.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recovea_proxy.auth.envelope import LocalMasterKey, MasterKey
from recovea_proxy.config import Settings

if TYPE_CHECKING:
    from recovea_proxy.auth.kms import KmsMasterKey

RETIRED_SUFFIX = ".retired-"


class Keyring:
    """The current master key plus every key that may still unwrap stored rows."""

    def __init__(self, current: MasterKey, readers: dict[str, MasterKey]) -> None:
        self.current = current
        self._readers = {current.key_id: current, **readers}
        self._workspace_keys: dict[str, KmsMasterKey] = {}
        self._workspace_client: Any = None
        self._lock = threading.Lock()

    def workspace_key(self, key_arn: str) -> KmsMasterKey:
        """A workspace's own KMS key (by the ARN stored for it), pinned, on the one
        client (short timeouts) every workspace key shares. Blocking the first time
        (boto3 set-up)."""
        from recovea_proxy.auth.kms import KmsMasterKey

        with self._lock:
            found = self._workspace_keys.get(key_arn)
            if found is None:
                found = KmsMasterKey(key_arn, self._client(), pinned=True)
                self._workspace_keys[key_arn] = found
            return found

    def trial_key(self, key_id: str) -> KmsMasterKey:
        """A key a workspace asks to be put on (id, ARN or alias), to try before it is
        stored; not kept. Blocking the first time (boto3 set-up)."""
        from recovea_proxy.auth.kms import KmsMasterKey

        with self._lock:
            return KmsMasterKey(key_id, self._client())

    def _client(self) -> Any:
        if self._workspace_client is None:
            from recovea_proxy.auth.kms import new_client

            self._workspace_client = new_client(bounded=True)
        return self._workspace_client

    def master_for(self, kms_key_arn: str | None) -> MasterKey:
        """The master that wraps a workspace's data keys: its own key when it has one
        (`workspaces.kms_key_arn`), else the deployment's current one."""
        return self.current if kms_key_arn is None else self.workspace_key(kms_key_arn)

    def reader(self, backend: str, key_id: str) -> MasterKey:
        """The master key that wrapped a stored row; KeyError when it is not available."""
        found = self._readers.get(key_id)
        if found is None and backend == "kms":
            from recovea_proxy.auth.kms import KmsMasterKey

            found = self._readers[key_id] = KmsMasterKey(key_id)
        if found is None:
            raise KeyError(f"master key {key_id} ({backend}) is not available")
        return found


def master_key_path(settings: Settings) -> Path:
    return settings.master_key_file or settings.data_dir / "master.key"


def load_keyring(settings: Settings) -> Keyring:
    """Blocking (file reads, boto3 set-up): call it off the event loop."""
    path = master_key_path(settings)
    readers: dict[str, MasterKey] = {}
    for retired in sorted(path.parent.glob(path.name + RETIRED_SUFFIX + "*")):
        key = LocalMasterKey.load(retired)
        readers[key.key_id] = key
    current: MasterKey
    if settings.kms_key_id:
        from recovea_proxy.auth.kms import KmsMasterKey

        current = KmsMasterKey(settings.kms_key_id)
        if path.exists():
            local = LocalMasterKey.load(path)
            readers[local.key_id] = local
    else:
        current = LocalMasterKey.load_or_create(path)
    return Keyring(current, readers)


def retire_local_key(settings: Settings) -> LocalMasterKey:
    """Move the local master key aside (still readable) and create a new one."""
    import time

    path = master_key_path(settings)
    if path.exists():
        path.rename(path.with_name(f"{path.name}{RETIRED_SUFFIX}{int(time.time())}"))
    return LocalMasterKey.load_or_create(path)
