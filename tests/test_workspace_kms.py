"""A workspace's own KMS key: its provider keys are wrapped under a key the customer
controls, and taking that key away stops that workspace — and only it — within the
documented bound.

Real parts throughout: moto's KMS server over HTTP through boto3, reached through a
small front (tests/kms_front.py) that refuses as AWS KMS does when access is gone;
a gateway process; the CLI; an embedded Postgres of the module's own. Two customer
keys and the deployment's own (RECOVEA_KMS_KEY_ID); a workspace's data keys are
cached for RECOVEA_WORKSPACE_DATA_KEY_TTL_S = 1 s here.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import orjson
import pytest
from botocore.exceptions import ClientError

from recovea_proxy.auth.envelope import context_for, open_sealed, seal
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.config import Settings
from tests.conftest import upstream_env
from tests.kms_front import KmsFront, Refusal
from tests.ledger_support import owner_query
from tests.support import (
    Gateway,
    MockServer,
    Postgres,
    cli,
    cli_json,
    metric_value,
    set_provider_key,
    wait_until,
)

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


@pytest.fixture(scope="module")
def world(mock: MockServer, workdir: Path) -> Iterator[World]:
    from moto.server import ThreadedMotoServer

    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto_server.start()
    host, port = moto_server.get_host_and_port()
    moto = f"http://{host}:{port}"
    client = boto3.client("kms", endpoint_url=moto, region_name="us-east-1", **CREDS)
    made = [client.create_key(Description=d)["KeyMetadata"] for d in ("deploy", "one", "two")]
    client.create_alias(AliasName="alias/recovea-customer-two", TargetKeyId=made[2]["KeyId"])
    keys = Keys(
        made[0]["KeyId"],
        made[1]["KeyId"],
        made[1]["Arn"],
        made[2]["KeyId"],
        made[2]["Arn"],
        "alias/recovea-customer-two",
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


@pytest.fixture(autouse=True)
def kms_answers(world: World) -> Iterator[None]:
    """Every test starts and ends with KMS answering everything."""
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


def test_the_workspace_data_key_bound_is_a_minute_by_default() -> None:
    """RECOVEA_WORKSPACE_DATA_KEY_TTL_S: 60 s unless set; a workspace's own key has its
    own, shorter bound than the deployment's data keys (300 s)."""
    assert Settings.from_env({}).workspace_data_key_ttl_s == 60.0
    assert (
        Settings.from_env({"RECOVEA_WORKSPACE_DATA_KEY_TTL_S": "5"}).workspace_data_key_ttl_s == 5
    )


def test_a_workspace_on_its_own_key_is_served_and_unwrapped_through_that_key_only(
    world: World,
) -> None:
    """After `kms set`, the workspace's rows are wrapped under its key's ARN, it is
    served on its own provider keys, every Decrypt of its data keys names that key, and
    `workspace show` reports the key available once a gateway has used it."""
    workspace = new_workspace(world, "own-key", key=world.keys.one)
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.one_arn}
    mark = world.front.mark()
    assert served(world, workspace)
    probe = uuid.uuid4().hex
    assert message(world, workspace, probe).status_code == 200
    assert received(world, probe)[0]["x-api-key"] == workspace.anthropic
    decrypts = [
        call
        for call in world.front.calls_since(mark)
        if call.operation == "Decrypt" and call.context.get("workspace") == workspace.id
    ]
    assert decrypts, "the gateway never unwrapped through KMS"
    assert {call.key_id for call in decrypts} == {world.keys.one_arn}
    shown = wait_until(
        lambda: (s := show(world, workspace.id))["kms"]["status"] == "available" and s,
        10,
        "show to report the key available",
    )
    assert shown["kms"]["key_id"] == world.keys.one
    assert shown["kms"]["key_arn"] == world.keys.one_arn
    assert {key["wrapped_by"] for key in shown["provider_keys"]} == {"workspace"}
    assert world.keys.one not in world.gateway.log_text()


@dataclass(frozen=True)
class Trio:
    """A workspace on customer key one, one on the deployment's key, one on key two."""

    mine: Workspace
    on_deployment: Workspace
    on_other_key: Workspace


@pytest.fixture(scope="module")
def trio(world: World) -> Trio:
    return Trio(
        new_workspace(world, "revoked", key=world.keys.one),
        new_workspace(world, "deployment"),
        new_workspace(world, "other-key", key=world.keys.two),
    )


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("DisabledException", "disabled"),
        ("KMSInvalidStateException", "disabled"),
        ("AccessDeniedException", "access_denied"),
        ("NotFoundException", "not_found"),
    ],
)
def test_taking_the_key_away_stops_that_workspace_alone_within_the_bound(
    world: World, trio: Trio, error: str, reason: str
) -> None:
    """When KMS refuses the workspace's key (disabled, pending deletion, grant or policy
    removed, deleted), the workspace gets 503 `provider_key_unavailable` in the
    provider's shape within the data-key TTL plus one KMS call, the provider never
    sees those requests, a workspace on the deployment key and one on another customer
    key are still served; each refused request is counted by reason, the refusal is
    logged once however often KMS refuses again, and `workspace show` reports it.
    When KMS answers again, the workspace is served again, with no restart."""
    mine, on_deployment, on_other_key = trio.mine, trio.on_deployment, trio.on_other_key
    for workspace in (mine, on_deployment, on_other_key):
        wait_until(lambda w=workspace: served(world, w), 10, "every workspace served")
    pid = world.gateway.process.pid
    log_mark = len(world.gateway.log_lines())
    before = metric_value(
        world.gateway.metrics(), "recovea_provider_key_unavailable_total", reason=reason
    )

    kms_mark = world.front.mark()
    world.front.refuse(Refusal(world.keys.one, error))
    pulled = time.monotonic()
    refusals: list[str] = []

    def refused_now() -> bool:
        probe = uuid.uuid4().hex
        response = chat(world, mine, probe)
        if response.status_code == 200:
            return False
        refusals.append(probe)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "provider_key_unavailable"
        assert response.json()["error"]["type"] == "api_error"
        return True

    wait_until(refused_now, TTL_S + SLACK_S + 5, "the workspace to be refused")
    assert time.monotonic() - pulled <= TTL_S + SLACK_S
    probe = uuid.uuid4().hex
    anthropic_shape = message(world, mine, probe)
    assert anthropic_shape.status_code == 503
    assert anthropic_shape.json()["type"] == "error"
    assert anthropic_shape.json()["error"]["code"] == "provider_key_unavailable"
    refusals.append(probe)

    def refused_by_kms_again() -> bool:
        # requests past the 1 s hold: KMS is asked, and refuses, again and again
        probe = uuid.uuid4().hex
        assert chat(world, mine, probe).status_code == 503
        refusals.append(probe)
        return sum(1 for call in world.front.calls_since(kms_mark) if call.refused) >= 3

    wait_until(refused_by_kms_again, 20, "KMS to refuse three times")
    assert served(world, on_deployment)
    assert served(world, on_other_key)
    assert all(received(world, probe) == [] for probe in refusals), "the provider was called"

    metrics = world.gateway.metrics()
    after = metric_value(metrics, "recovea_provider_key_unavailable_total", reason=reason)
    assert after - before == len(refusals)
    assert metric_value(metrics, "recovea_workspace_kms_keys_failing", reason=reason) == 1
    lines = unavailable_lines(world, mine.id, log_mark)
    assert [(line["reason"], line["kms_key_last_four"]) for line in lines] == [
        (reason, world.keys.one_arn[-4:])
    ]
    shown = wait_until(
        lambda: (s := show(world, mine.id))["kms"]["status"] == "unavailable" and s,
        10,
        "show to report the key unavailable",
    )
    assert shown["kms"]["reason"] == reason

    world.front.allow_all()
    restored = time.monotonic()
    wait_until(lambda: served(world, mine), 10, "the workspace to be served again")
    assert time.monotonic() - restored <= 1.0 + SLACK_S
    assert world.gateway.process.pid == pid and world.gateway.process.poll() is None
    wait_until(
        lambda: show(world, mine.id)["kms"]["status"] == "available",
        10,
        "show to report the key available again",
    )
    metrics = world.gateway.metrics()
    assert metric_value(metrics, "recovea_workspace_kms_keys_failing", reason=reason) == 0
    log = world.gateway.log_text()
    assert world.keys.one not in log
    assert "is not authorized" not in log and "does not exist" not in log


def test_an_unreachable_kms_stops_workspaces_on_their_own_key_within_the_bound(
    world: World,
) -> None:
    """With KMS unreachable (the front stopped), a workspace on its own key gets 503
    `provider_key_unavailable` (reason unreachable) once its data key expires, while a
    workspace on the deployment key is served from its cached data key; when KMS is
    back, so is the workspace."""
    mine = new_workspace(world, "unreachable", key=world.keys.one)
    on_deployment = new_workspace(world, "deployment-cached")
    assert served(world, mine) and served(world, on_deployment)
    before = metric_value(
        world.gateway.metrics(), "recovea_provider_key_unavailable_total", reason="unreachable"
    )
    world.front.stop()
    stopped = time.monotonic()
    wait_until(lambda: refused(chat(world, mine, "x")), TTL_S + SLACK_S + 10, "a 503")
    # a refused connection is retried once by boto3 (standard mode), within a second
    assert time.monotonic() - stopped <= TTL_S + SLACK_S + 1
    assert served(world, on_deployment)
    metrics = world.gateway.metrics()
    assert (
        metric_value(metrics, "recovea_provider_key_unavailable_total", reason="unreachable")
        > before
    )
    world.front.start()
    wait_until(lambda: served(world, mine), 10, "the workspace to be served again")


def test_kms_set_rewraps_existing_provider_keys_and_clear_puts_them_back(world: World) -> None:
    """`kms set` (given an alias) on a workspace that has provider keys re-wraps their
    data keys under the key's ARN: the stored wrapped keys change, the ciphertexts and
    the provider keys do not. A provider key stored afterwards is sealed under the
    workspace's key, `provider-key rotate` leaves them all there, and `kms clear`
    re-wraps them under the deployment's key."""
    workspace = new_workspace(world, "rewrap")
    assert served(world, workspace)
    before = sealed_rows(world, workspace.id)
    assert {row[4] for row in before} == {world.keys.deployment}

    result = kms_set(world, workspace.id, world.keys.two_alias)
    assert (result["rewrapped"], result["kms_key_arn"]) == (2, world.keys.two_arn)
    after = sealed_rows(world, workspace.id)
    for old, new in zip(before, after, strict=True):
        assert new[:3] == old[:3], "the ciphertext changed"
        assert new[3] != old[3], "the data key was not re-wrapped"
        assert new[4:] == (world.keys.two_arn, "kms")
    mark = world.front.mark()
    wait_until(lambda: served(world, workspace), 10, "served on the re-wrapped key")
    probe = uuid.uuid4().hex
    assert message(world, workspace, probe).status_code == 200
    assert received(world, probe)[0]["x-api-key"] == workspace.anthropic
    assert {
        call.key_id
        for call in world.front.calls_since(mark)
        if call.operation == "Decrypt" and call.context.get("workspace") == workspace.id
    } == {world.keys.two_arn}

    set_provider_key(world.env, workspace.id, "openrouter", "sk-or-v1-" + secrets.token_hex(16))
    cli_json("provider-key", "rotate", env=world.env)
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.two_arn}

    cleared = cli_json("workspace", "kms", "clear", "--workspace", workspace.id, env=world.env)
    assert cleared["rewrapped"] == 3
    back = sealed_rows(world, workspace.id)
    assert {row[4] for row in back} == {world.keys.deployment}
    assert [row[:3] for row in back if row[0] != "openrouter"] == [row[:3] for row in before]
    wait_until(lambda: served(world, workspace), 10, "served on the deployment key")
    assert show(world, workspace.id)["kms"]["key_arn"] is None


def test_a_rewrap_that_fails_halfway_changes_nothing(world: World) -> None:
    """`kms set` whose re-wrap fails at the second of two provider keys (the first
    already re-wrapped and written) rolls everything back: the stored keys are byte
    for byte as before, the workspace keeps its old key and is still served."""
    workspace = new_workspace(world, "halfway", key=world.keys.one)
    before = sealed_rows(world, workspace.id)
    world.front.refuse(
        Refusal(
            world.keys.two,
            "AccessDeniedException",
            operation="Encrypt",
            when_context=(("workspace", workspace.id), ("provider", "openai")),
        )
    )
    mark = world.front.mark()
    done = cli(
        "workspace",
        "kms",
        "set",
        "--workspace",
        workspace.id,
        "--key-id",
        world.keys.two,
        env=world.env,
    )
    assert done.returncode == 1
    assert "nothing was changed" in done.stderr and "access_denied" in done.stderr
    encrypts = [
        (call.context.get("provider"), call.refused)
        for call in world.front.calls_since(mark)
        if call.operation == "Encrypt" and "provider" in call.context
    ]
    assert encrypts == [("anthropic", None), ("openai", "AccessDeniedException")]
    assert sealed_rows(world, workspace.id) == before
    assert show(world, workspace.id)["kms"]["key_arn"] == world.keys.one_arn
    assert served(world, workspace)


def test_the_wrong_encryption_context_is_refused(world: World) -> None:
    """A data key wrapped under a customer key opens only under its own workspace,
    provider and key id (KMS refuses any other context)."""
    client = boto3.client("kms", endpoint_url=world.moto, region_name="us-east-1", **CREDS)
    master = KmsMasterKey(world.keys.one_arn, client, pinned=True)
    context = context_for("workspace-a", "openai", "key-1")
    sealed = seal(master, "sk-proj-ContextBound-0001", context)
    assert open_sealed(master.unwrap(sealed.wrapped_data_key, context), sealed, context) == (
        bytearray(b"sk-proj-ContextBound-0001")
    )
    for other in (
        context_for("workspace-b", "openai", "key-1"),
        context_for("workspace-a", "anthropic", "key-1"),
        context_for("workspace-a", "openai", "key-2"),
    ):
        with pytest.raises(ClientError, match="InvalidCiphertextException"):
            master.unwrap(sealed.wrapped_data_key, other)


def test_a_sealed_key_copied_from_another_workspace_on_the_same_key_is_refused(
    world: World,
) -> None:
    """Workspace B's sealed OpenAI key copied over A's row (both on the same customer
    key) does not unwrap under A's context: A's requests get 503
    `provider_key_unavailable` and B's key is never sent upstream for A."""
    a = new_workspace(world, "copy-target", key=world.keys.one)
    b = new_workspace(world, "copy-source", key=world.keys.one)
    assert served(world, a)
    owner_query(
        world.db_url,
        "UPDATE recovea.provider_keys AS dst SET ciphertext = src.ciphertext,"
        " nonce = src.nonce, wrapped_data_key = src.wrapped_data_key"
        " FROM recovea.provider_keys AS src WHERE src.customer_id = $1"
        " AND src.provider = 'openai' AND dst.customer_id = $2 AND dst.provider = 'openai'",
        uuid.UUID(b.id),
        uuid.UUID(a.id),
    )
    probes: list[str] = []

    def refused_for_a() -> bool:
        probes.append(uuid.uuid4().hex)
        response = chat(world, a, probes[-1])
        return response.status_code == 503 and (
            response.json()["error"]["code"] == "provider_key_unavailable"
        )

    wait_until(refused_for_a, 10, "A to be refused")
    sent = [h["authorization"] for p in probes for h in received(world, p)]
    assert f"Bearer {b.openai}" not in sent
    assert served(world, b)


def test_a_data_key_wrapped_by_the_deployment_key_is_not_unwrapped_for_a_workspace_on_its_own(
    world: World,
) -> None:
    """Once a workspace is on its own key, a data key wrapped by the deployment's key —
    even its own, with the right context, put back from before `kms set` — is not
    unwrapped (the Decrypt names the workspace's key, which did not wrap it): 503."""
    workspace = new_workspace(world, "pinned")
    old = owner_query(
        world.db_url,
        "SELECT wrapped_data_key, master_key_id, backend FROM recovea.provider_keys"
        " WHERE customer_id = $1 AND provider = 'openai'",
        uuid.UUID(workspace.id),
    )[0]
    kms_set(world, workspace.id, world.keys.one)
    assert served(world, workspace)
    owner_query(
        world.db_url,
        "UPDATE recovea.provider_keys SET wrapped_data_key = $2, master_key_id = $3,"
        " backend = $4 WHERE customer_id = $1 AND provider = 'openai'",
        uuid.UUID(workspace.id),
        old["wrapped_data_key"],
        old["master_key_id"],
        old["backend"],
    )
    mark = world.front.mark()
    wait_until(lambda: refused(chat(world, workspace, uuid.uuid4().hex)), 10, "a 503")
    for _ in range(3):
        probe = uuid.uuid4().hex
        assert refused(chat(world, workspace, probe))
        assert received(world, probe) == []
    assert {
        call.key_id
        for call in world.front.calls_since(mark)
        if call.operation == "Decrypt" and call.context.get("workspace") == workspace.id
    } == {world.keys.one_arn}


def test_the_admin_api_sets_shows_and_clears_the_workspace_key_for_admins_only(
    world: World,
) -> None:
    """`/admin/v1/workspace/kms`: member keys get 403; an admin key sets the key (a key
    the gateway cannot use is 400 and changes nothing), reads it, and clears it (503
    `provider_key_unavailable`, changing nothing, while the key refuses)."""
    workspace = new_workspace(world, "admin-api")
    env = world.env
    admin_key = cli_json("key", "create", "--workspace", workspace.id, "--role", "admin", env=env)[
        "key"
    ]

    def call(key: str, method: str, body: dict[str, str] | None = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{world.gateway.url}/admin/v1/workspace/kms",
            headers={"authorization": f"Bearer {key}"},
            json=body,
            timeout=60,
        )

    for method in ("GET", "PUT", "DELETE"):
        forbidden = call(workspace.rcv_key, method, {"key_id": world.keys.two})
        assert forbidden.status_code == 403, method
    assert show(world, workspace.id)["kms"]["key_arn"] is None

    unusable = call(admin_key, "PUT", {"key_id": str(uuid.uuid4())})
    assert unusable.status_code == 400, unusable.text
    assert "not_found" in unusable.json()["error"]["message"]
    assert call(admin_key, "GET").json()["key_arn"] is None

    put = call(admin_key, "PUT", {"key_id": world.keys.two})
    assert put.status_code == 200, put.text
    assert (put.json()["kms_key_arn"], put.json()["rewrapped"]) == (world.keys.two_arn, 2)
    assert call(admin_key, "GET").json()["key_arn"] == world.keys.two_arn
    assert served(world, workspace)

    before = sealed_rows(world, workspace.id)
    world.front.refuse(Refusal(world.keys.two, "DisabledException"))
    blocked = call(admin_key, "DELETE")
    assert blocked.status_code == 503, blocked.text
    assert blocked.json()["error"]["code"] == "provider_key_unavailable"
    assert sealed_rows(world, workspace.id) == before
    world.front.allow_all()

    cleared = call(admin_key, "DELETE")
    assert cleared.status_code == 200, cleared.text
    assert call(admin_key, "GET").json()["key_arn"] is None
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.deployment}
    wait_until(lambda: served(world, workspace), 10, "served on the deployment key")


def test_a_key_gone_for_good_is_cleared_only_by_dropping_the_provider_keys(world: World) -> None:
    """When the workspace's key is deleted, `kms clear` cannot re-wrap (it needs the
    key) and changes nothing; `kms clear --drop-provider-keys` deletes the provider
    keys that can no longer be opened and puts the workspace back on the deployment's
    key, where new provider keys are stored and served."""
    workspace = new_workspace(world, "gone", key=world.keys.one)
    before = sealed_rows(world, workspace.id)
    world.front.refuse(Refusal(world.keys.one, "NotFoundException"))
    done = cli("workspace", "kms", "clear", "--workspace", workspace.id, env=world.env)
    assert done.returncode == 1
    assert "not_found" in done.stderr and "nothing was changed" in done.stderr
    assert sealed_rows(world, workspace.id) == before
    wait_until(lambda: refused(chat(world, workspace, uuid.uuid4().hex)), 10, "a 503")

    dropped = cli_json(
        "workspace",
        "kms",
        "clear",
        "--workspace",
        workspace.id,
        "--drop-provider-keys",
        env=world.env,
    )
    assert (dropped["dropped"], dropped["kms_key_arn"]) == (2, None)
    assert sealed_rows(world, workspace.id) == []
    fresh = f"sk-proj-after-{secrets.token_hex(12)}"
    set_provider_key(world.env, workspace.id, "openai", fresh)
    assert {row[4] for row in sealed_rows(world, workspace.id)} == {world.keys.deployment}
    renewed = Workspace(workspace.id, workspace.rcv_key, fresh, workspace.anthropic)
    wait_until(lambda: served(world, renewed), 10, "served on the new provider key")
