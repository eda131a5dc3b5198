"""The fixtures of the auth mutation tests: the key store (per module), one process's
auth on it, and moto's KMS server behind the refusing front (per module)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import boto3
import pytest

from recovea_proxy.auth.resolver import KeyResolver
from tests.auth_mutants.support import (
    Kms,
    Store,
    _prepare,
    close_auth,
    open_auth,
)
from tests.kms_front import KmsFront
from tests.support import Postgres, short_tmpdir


@pytest.fixture(scope="module")
def store(postgres: Postgres) -> Store:
    master_file = short_tmpdir() / "master.key"
    return asyncio.run(_prepare(postgres.url, master_file))


@pytest.fixture
async def auth(store: Store) -> AsyncIterator[KeyResolver]:
    gateway = await open_auth(store)
    yield gateway.resolver
    await close_auth(gateway)


@pytest.fixture(scope="module")
def kms() -> Iterator[Kms]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    moto = f"http://{host}:{port}"
    front = KmsFront(moto)
    creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_ENDPOINT_URL_KMS", front.url)
            patch.setenv("AWS_ACCESS_KEY_ID", creds["aws_access_key_id"])
            patch.setenv("AWS_SECRET_ACCESS_KEY", creds["aws_secret_access_key"])
            patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
            client = boto3.client("kms", endpoint_url=moto, region_name="us-east-1", **creds)
            yield Kms(front, client)
    finally:
        front.stop()
        server.stop()
