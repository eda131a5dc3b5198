"""The AWS KMS master key (RECOVEA_KMS_KEY_ID, or a workspace's own key): data keys
come from GenerateDataKey and are unwrapped with Decrypt, both under an
EncryptionContext of workspace, provider and key id, so KMS itself refuses a
ciphertext moved elsewhere.

A *pinned* key names itself in every Decrypt (`KeyId`), so KMS refuses a data key
wrapped under any other key: a workspace's own key is pinned, and its data keys are
unwrapped through it or not at all.

boto3 is blocking: callers run these methods off the event loop. boto3 reads the
usual AWS settings (credentials, region, AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import os
from typing import Any

#: a workspace key's calls: connect and read timeouts (seconds) and attempts in all,
#: so an unreachable KMS fails a request in seconds rather than boto3's minutes
WORKSPACE_CONNECT_TIMEOUT_S = 2.0
WORKSPACE_READ_TIMEOUT_S = 5.0
WORKSPACE_ATTEMPTS = 2


def new_client(*, bounded: bool = False) -> Any:
    """A boto3 KMS client (thread-safe; share it). `bounded`: the workspace keys'
    short timeouts and few attempts instead of boto3's defaults."""
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = None
    if bounded:
        config = Config(
            connect_timeout=WORKSPACE_CONNECT_TIMEOUT_S,
            read_timeout=WORKSPACE_READ_TIMEOUT_S,
            retries={"mode": "standard", "total_max_attempts": WORKSPACE_ATTEMPTS},
        )
    return boto3.client("kms", region_name=region or "us-east-1", config=config)


class KmsMasterKey:
    """Wraps data keys with an AWS KMS key."""

    backend = "kms"

    def __init__(self, key_id: str, client: Any | None = None, *, pinned: bool = False) -> None:
        self._client = new_client() if client is None else client
        self.key_id = key_id
        self._pinned = pinned

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        answer = self._client.generate_data_key(
            KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context
        )
        return bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        pin = {"KeyId": self.key_id} if self._pinned else {}
        answer = self._client.decrypt(CiphertextBlob=wrapped, EncryptionContext=context, **pin)
        return bytes(answer["Plaintext"])

    def wrap(self, data_key: bytes, context: dict[str, str]) -> bytes:
        answer = self._client.encrypt(
            KeyId=self.key_id, Plaintext=data_key, EncryptionContext=context
        )
        return bytes(answer["CiphertextBlob"])

    def check(self, context: dict[str, str]) -> str:
        """Use the key as the gateway will (GenerateDataKey, Decrypt naming the key,
        Encrypt) and return its ARN; raises what KMS raises when one is refused."""
        generated = self._client.generate_data_key(
            KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context
        )
        arn = str(generated["KeyId"])
        opened = self._client.decrypt(
            CiphertextBlob=generated["CiphertextBlob"], EncryptionContext=context, KeyId=arn
        )
        if bytes(opened["Plaintext"]) != bytes(generated["Plaintext"]):
            raise ValueError("the KMS key did not give back the data key it generated")
        self._client.encrypt(KeyId=arn, Plaintext=opened["Plaintext"], EncryptionContext=context)
        return arn
