"""The AWS KMS master key (RECOVEA_KMS_KEY_ID): data keys come from GenerateDataKey
and are unwrapped with Decrypt, both under an EncryptionContext of workspace,
provider and key id, so KMS itself refuses a ciphertext moved elsewhere.

boto3 is blocking: callers run these methods off the event loop. boto3 reads the
usual AWS settings (credentials, region, AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import os
from typing import Any


class KmsMasterKey:
    """Wraps data keys with an AWS KMS key."""

    backend = "kms"

    def __init__(self, key_id: str, client: Any | None = None) -> None:
        if client is None:
            import boto3

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            client = boto3.client("kms", region_name=region or "us-east-1")
        self._client = client
        self.key_id = key_id

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        answer = self._client.generate_data_key(
            KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context
        )
        return bytes(answer["Plaintext"]), bytes(answer["CiphertextBlob"])

    def unwrap(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        answer = self._client.decrypt(CiphertextBlob=wrapped, EncryptionContext=context)
        return bytes(answer["Plaintext"])

    def wrap(self, data_key: bytes, context: dict[str, str]) -> bytes:
        answer = self._client.encrypt(
            KeyId=self.key_id, Plaintext=data_key, EncryptionContext=context
        )
        return bytes(answer["CiphertextBlob"])
