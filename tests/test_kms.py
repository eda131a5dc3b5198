"""Provider keys wrapped by AWS KMS (moto's KMS in server mode, over real HTTP via boto3)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from recovea_proxy.auth.envelope import context_for, open_sealed, seal
from recovea_proxy.auth.kms import KmsMasterKey
from tests.support import Gateway, MockServer, Postgres, cli_json, set_provider_key

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def kms_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def kms_key(kms_endpoint: str) -> str:
    client = boto3.client("kms", endpoint_url=kms_endpoint, region_name="us-east-1", **_creds())
    key_id: str = client.create_key(Description="recovea tests")["KeyMetadata"]["KeyId"]
    return key_id


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def kms_master(endpoint: str, key_id: str) -> KmsMasterKey:
    client = boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1", **_creds())
    return KmsMasterKey(key_id, client)


def test_seal_and_open_through_kms(kms_endpoint: str, kms_key: str) -> None:
    """A provider key sealed under KMS opens with the same context."""
    master = kms_master(kms_endpoint, kms_key)
    context = context_for("ws-1", "openai", "key-1")
    sealed = seal(master, "sk-kms-secret-0001", context)
    assert sealed.backend == "kms"
    data_key = master.unwrap(sealed.wrapped_data_key, context)
    assert open_sealed(data_key, sealed, context) == bytearray(b"sk-kms-secret-0001")


def test_kms_refuses_a_different_encryption_context(kms_endpoint: str, kms_key: str) -> None:
    """KMS will not unwrap a data key moved to another workspace or provider."""
    master = kms_master(kms_endpoint, kms_key)
    sealed = seal(master, "sk-kms-secret-0002", context_for("ws-1", "openai", "k"))
    with pytest.raises(ClientError, match="InvalidCiphertextException"):
        master.unwrap(sealed.wrapped_data_key, context_for("ws-2", "openai", "k"))


@pytest.fixture
def own_db(workdir: Path) -> Iterator[dict[str, str]]:
    """A Postgres of the test's own: rotation rewrites every row of a database."""
    server = Postgres()
    yield {
        "RECOVEA_DATABASE_URL": server.url,
        "RECOVEA_MASTER_KEY_FILE": str(server.data_dir / "master.key"),
    }
    server.stop()


def test_gateway_serves_with_a_kms_wrapped_key_and_rotation_moves_keys_to_kms(
    start_gateway: Callable[..., Gateway],
    mock: MockServer,
    own_db: dict[str, str],
    kms_endpoint: str,
    kms_key: str,
) -> None:
    """A key stored under the local master is re-wrapped under KMS by `rotate`, and the
    gateway (KMS configured) keeps serving with it."""
    local_env = {**own_db, **AWS_ENV, "AWS_ENDPOINT_URL_KMS": kms_endpoint}
    workspace = cli_json("workspace", "create", "kms-rotate", env=local_env)["workspace_id"]
    set_provider_key(local_env, workspace, "openai", "sk-proj-RotateMeToKms-7777")
    key = cli_json("key", "create", "--workspace", workspace, env=local_env)["key"]
    kms_env = {**local_env, "RECOVEA_KMS_KEY_ID": kms_key}
    rotated = cli_json("provider-key", "rotate", env=kms_env)
    assert rotated["rewrapped"] >= 1
    assert rotated["master_key_id"] == kms_key
    gw = start_gateway(**kms_env)
    mock.clear()
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    seen = [r for r in mock.requests() if r["path"] == "/v1/chat/completions"][-1]
    assert seen["headers"]["authorization"] == "Bearer sk-proj-RotateMeToKms-7777"


def test_new_local_master_key_keeps_old_rows_readable(
    start_gateway: Callable[..., Gateway], own_db: dict[str, str], workdir: Path
) -> None:
    """Rotating the local master key re-wraps every row; the old file is kept, retired."""
    env = {**own_db, "RECOVEA_MASTER_KEY_FILE": str(workdir / "rotating" / "master.key")}
    workspace = cli_json("workspace", "create", "local-rotate", env=env)["workspace_id"]
    set_provider_key(env, workspace, "openai", "sk-proj-LocalRotation-8888")
    before = (workdir / "rotating" / "master.key").read_bytes()
    rotated = cli_json("provider-key", "rotate", "--new-local-key", env=env)
    assert rotated["rewrapped"] >= 1
    assert (workdir / "rotating" / "master.key").read_bytes() != before
    assert oct(os.stat(workdir / "rotating" / "master.key").st_mode & 0o777) == "0o600"
    key = cli_json("key", "create", "--workspace", workspace, env=env)["key"]
    gw = start_gateway(**env)
    response = httpx.post(
        f"{gw.url}/v1/chat/completions",
        content=b'{"model":"gpt-4o","messages":[]}',
        headers={"authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
