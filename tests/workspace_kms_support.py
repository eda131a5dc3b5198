"""The world of the workspace-KMS tests: moto's KMS server over HTTP (through boto3),
reached through the refusing front (tests/kms_front.py); two customer keys and the
deployment's own (RECOVEA_KMS_KEY_ID); an embedded Postgres of its own; a gateway
whose workspace data keys live RECOVEA_WORKSPACE_DATA_KEY_TTL_S = 1 s; and the
helpers the tests read like sentences with (a workspace served, a request refused,
the stored sealed rows, `workspace show`)."""

from __future__ import annotations

import contextlib
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson

from tests.conftest import upstream_env
from tests.kms_front import KmsFront
from tests.ledger_support import owner_query
from tests.support import Gateway, MockServer, Postgres, cli_json, set_provider_key

#: RECOVEA_WORKSPACE_DATA_KEY_TTL_S of the module's gateway
TTL_S = 1.0
#: what this machine may add to the bound (one KMS round trip, a busy shared CPU)
SLACK_S = 2.0
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
MESSAGE = orjson.dumps(
    {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
)
SEALED = ("provider", "ciphertext", "nonce", "wrapped_data_key", "master_key_id", "backend")


@dataclass(frozen=True)
class Keys:
    """The deployment's key and two customer keys (ids and ARNs), the second with an
    alias."""

    deployment: str
    one: str
    one_arn: str
    two: str
    two_arn: str
    two_alias: str


@dataclass
class World:
    """Everything a test of this world talks to."""

    front: KmsFront
    moto: str
    keys: Keys
    db_url: str
    env: dict[str, str]
    gateway: Gateway
    mock: MockServer


@dataclass(frozen=True)
class Workspace:
    """A workspace with an rcv_ key and its own OpenAI and Anthropic keys."""

    id: str
    rcv_key: str
    openai: str
    anthropic: str


@contextlib.contextmanager
def open_world(mock: MockServer, workdir: Path) -> Iterator[World]:
    """moto's KMS server with the three keys, the front, a Postgres of its own and a
    gateway in front of the mock provider; stopped in reverse."""
    from moto.server import ThreadedMotoServer

    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_server.start()
    host, port = moto_server.get_host_and_port()
    moto = f"http://{host}:{port}"
    client = boto3.client("kms", endpoint_url=moto, region_name="us-east-1", **CREDS)
    made = [client.create_key(Description=d)["KeyMetadata"] for d in ("deploy", "one", "two")]
    # moto's backend is shared by every server in the process: an alias of this world's
    alias = f"alias/recovea-customer-two-{secrets.token_hex(4)}"
    client.create_alias(AliasName=alias, TargetKeyId=made[2]["KeyId"])
    keys = Keys(
        made[0]["KeyId"],
        made[1]["KeyId"],
        made[1]["Arn"],
        made[2]["KeyId"],
        made[2]["Arn"],
        alias,
    )
    front = KmsFront(moto)
    database = Postgres()
    env = {
        **AWS_ENV,
        "AWS_ENDPOINT_URL_KMS": front.url,
        "RECOVEA_DATABASE_URL": database.url,
        "RECOVEA_MASTER_KEY_FILE": str(database.data_dir / "master.key"),
        "RECOVEA_KMS_KEY_ID": keys.deployment,
    }
    gateway = Gateway(
        {
            **upstream_env(mock),
            **env,
            "RECOVEA_WORKSPACE_DATA_KEY_TTL_S": str(TTL_S),
            # rows re-read within a second (a tampered row is seen soon)
            "RECOVEA_KEY_CACHE_TTL_S": "1",
        },
        workdir,
    )
    yield World(front, moto, keys, database.url, env, gateway, mock)
    gateway.stop()
    front.stop()
    database.stop()
    moto_server.stop()


@contextlib.contextmanager
def kms_answering(world: World) -> Iterator[None]:
    """KMS answers everything before and after (a test's refusals end with it)."""
    world.front.allow_all()
    yield
    world.front.allow_all()
    if not world.front.running:
        world.front.start()


def new_workspace(world: World, name: str, *, key: str | None = None) -> Workspace:
    env = world.env
    workspace = cli_json("workspace", "create", f"{name}-{secrets.token_hex(3)}", env=env)
    workspace_id = workspace["workspace_id"]
    rcv_key = cli_json("key", "create", "--workspace", workspace_id, env=env)["key"]
    openai_key = f"sk-proj-{name}-{secrets.token_hex(12)}"
    anthropic_key = f"sk-ant-api03-{name}-{secrets.token_hex(12)}"
    set_provider_key(env, workspace_id, "openai", openai_key)
    set_provider_key(env, workspace_id, "anthropic", anthropic_key)
    if key is not None:
        kms_set(world, workspace_id, key)
    return Workspace(workspace_id, rcv_key, openai_key, anthropic_key)


def kms_set(world: World, workspace_id: str, key: str) -> dict[str, Any]:
    return cli_json(
        "workspace", "kms", "set", "--workspace", workspace_id, "--key-id", key, env=world.env
    )


def chat(world: World, workspace: Workspace, probe: str) -> httpx.Response:
    """One chat completion on the workspace's rcv_ key, tagged `probe` for the mock."""
    return httpx.post(
        f"{world.gateway.url}/v1/chat/completions",
        content=CHAT,
        headers={"authorization": f"Bearer {workspace.rcv_key}", "x-kms-probe": probe},
        timeout=30,
    )


def message(world: World, workspace: Workspace, probe: str) -> httpx.Response:
    """One Anthropic message on the workspace's rcv_ key, tagged `probe`."""
    return httpx.post(
        f"{world.gateway.url}/v1/messages",
        content=MESSAGE,
        headers={
            "x-api-key": workspace.rcv_key,
            "anthropic-version": "2023-06-01",
            "x-kms-probe": probe,
        },
        timeout=30,
    )


def received(world: World, probe: str) -> list[dict[str, str]]:
    """The headers of every request tagged `probe` that reached the provider."""
    return [
        entry["headers"]
        for entry in world.mock.requests()
        if entry["headers"].get("x-kms-probe") == probe
    ]


def served(world: World, workspace: Workspace) -> bool:
    """The workspace is served, upstream, on its own OpenAI key."""
    probe = uuid.uuid4().hex
    response = chat(world, workspace, probe)
    if response.status_code != 200:
        return False
    assert [h["authorization"] for h in received(world, probe)] == [f"Bearer {workspace.openai}"]
    return True


def refused(response: httpx.Response) -> bool:
    return response.status_code == 503


def sealed_rows(world: World, workspace_id: str) -> list[tuple[Any, ...]]:
    rows = owner_query(
        world.db_url,
        f"SELECT {', '.join(SEALED)} FROM recovea.provider_keys WHERE customer_id = $1"
        " ORDER BY provider",
        uuid.UUID(workspace_id),
    )
    return [tuple(row) for row in rows]


def show(world: World, workspace_id: str) -> dict[str, Any]:
    return cli_json("workspace", "show", workspace_id, env=world.env)


def unavailable_lines(world: World, workspace_id: str, since: int) -> list[dict[str, Any]]:
    return [
        line
        for line in world.gateway.log_lines()[since:]
        if line.get("event") == "workspace_kms_key_unavailable"
        and line.get("workspace_id") == workspace_id
    ]
