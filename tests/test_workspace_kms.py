"""A workspace's own KMS key, served: its data keys are unwrapped only through that
key, and taking the key away stops that workspace — and only it — within the
documented bound (RECOVEA_WORKSPACE_DATA_KEY_TTL_S, 1 s here), visibly, until the key
comes back.

Real parts throughout (tests/workspace_kms_support.py): moto's KMS server over HTTP
through boto3, behind a front that refuses as AWS KMS does when access is gone; a
gateway process; the CLI; an embedded Postgres of the module's own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from recovea_proxy.auth.envelope import context_for, open_sealed, seal
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.config import Settings
from tests.kms_front import Refusal
from tests.ledger_support import owner_query
from tests.support import MockServer, metric_value, wait_until
from tests.workspace_kms_support import (
    CREDS,
    SLACK_S,
    TTL_S,
    Workspace,
    World,
    chat,
    kms_answering,
    kms_set,
    message,
    new_workspace,
    open_world,
    received,
    refused,
    sealed_rows,
    served,
    show,
    unavailable_lines,
)


@pytest.fixture(scope="module")
def world(mock: MockServer, workdir: Path) -> Iterator[World]:
    with open_world(mock, workdir) as opened:
        yield opened


@pytest.fixture(autouse=True)
def kms_answers(world: World) -> Iterator[None]:
    """Every test starts and ends with KMS answering everything."""
    with kms_answering(world):
        yield


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
    wait_until(
        lambda: all(served(world, w) for w in (mine, on_deployment, on_other_key)),
        10,
        "every workspace served",
    )
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
