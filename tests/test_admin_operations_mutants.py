"""The admin operations behind the CLI and the admin API, on the owner connection — the
one row-level security does not bind, so every read and write here is scoped by the
code alone: a workspace's description, keys and provider keys are its own; a key is
revoked only within the workspace named; input that is not acceptable is refused with
a line that says why; names are reused (projects, teams) and never duplicated
(workspaces); `init` runs once.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import LocalMasterKey, Sealed, context_for, open_sealed
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import key_hash
from recovea_proxy.auth.kms import KmsMasterKey
from recovea_proxy.store.database import APP_ROLE, connect
from recovea_proxy.store.migrate import apply_migrations
from tests.support import Postgres, free_port


@pytest.fixture(scope="module")
def migrated(postgres: Postgres) -> str:
    async def migrate() -> None:
        conn = await connect(postgres.url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    return postgres.url


@pytest.fixture
async def owner(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect(migrated)
    yield conn
    await conn.close()


@pytest.fixture
async def app(migrated: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the gateway's pool has it: the app role, bound by row-level
    security (the admin API runs the operations on it)."""
    conn = await connect(migrated.replace("postgres:@", f"{APP_ROLE}@", 1))
    yield conn
    await conn.close()


@pytest.fixture
async def empty(postgres: Postgres, migrated: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner connection to a database of the test's own, migrated and empty (`init`
    and `provider-key rotate` see the whole database)."""
    database = f"ops_{uuid.uuid4().hex[:12]}"
    admin = await connect(migrated)
    await admin.execute(f"CREATE DATABASE {database}")
    conn = await connect(postgres.url.replace("/postgres?", f"/{database}?", 1))
    try:
        await apply_migrations(conn)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {database}")
        await admin.close()


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}"), {})


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def refusal(work: object) -> str:
    with pytest.raises(ops.OperationError) as caught:
        await work  # type: ignore[misc]
    return str(caught.value)


async def test_a_workspace_is_described_as_itself(owner: asyncpg.Connection) -> None:
    """Its id, name, plan, retention and creation time; another id is another
    workspace; an id that names none is refused."""
    mine = await ops.create_workspace(owner, name("desc"), "pro")
    theirs = await ops.create_workspace(owner, name("desc"))
    described = await ops.describe_workspace(owner, mine)
    assert described["id"] == mine
    assert (described["plan"], described["name"][:4]) == ("pro", "desc")
    assert described["retention_days"] is None or described["retention_days"] > 0
    assert datetime.fromisoformat(described["created_at"]) <= datetime.now(UTC)
    assert (await ops.describe_workspace(owner, theirs))["plan"] == "free"
    missing = str(uuid.uuid4())
    assert await refusal(ops.describe_workspace(owner, missing)) == f"no workspace {missing}"


async def test_workspace_input_is_checked(owner: asyncpg.Connection) -> None:
    """A plan other than free or pro, an empty or unprintable or overlong name, and a
    name already taken are refused, each with its reason; a name is trimmed."""
    assert await refusal(ops.create_workspace(owner, "x", "gold")) == "plan must be free or pro"
    for bad in ("", "   ", "a\nb", "x" * 101):
        assert await refusal(ops.create_workspace(owner, bad)) == (
            "workspace name must be 1 to 100 printable characters"
        )
    taken = name("taken")
    workspace = await ops.create_workspace(owner, f"  {taken}  ")
    assert (await ops.describe_workspace(owner, workspace))["name"] == taken
    assert await refusal(ops.create_workspace(owner, taken)) == (
        f"a workspace named {taken!r} already exists"
    )
    assert await ops.create_workspace(owner, (uuid.uuid4().hex + "y" * 100)[:100])


async def test_a_key_list_is_the_workspaces_own(owner: asyncpg.Connection) -> None:
    """Keys in creation order with role, env, project and team names and last four
    characters; revoked ones marked; none of another workspace; never the secret."""
    mine = await ops.create_workspace(owner, name("keys"))
    theirs = await ops.create_workspace(owner, name("keys"))
    admin = await ops.create_key(owner, mine, role="admin", env="test")
    member = await ops.create_key(owner, mine, project="web", team="core")
    await ops.create_key(owner, theirs)
    await ops.revoke_key(owner, admin.id)
    listed = await ops.list_keys(owner, mine)
    assert [k["id"] for k in listed] == [admin.id, member.id]
    assert (listed[0]["role"], listed[0]["env"], listed[0]["project"]) == ("admin", "test", None)
    assert listed[0]["revoked_at"] is not None and listed[1]["revoked_at"] is None
    assert (listed[1]["project"], listed[1]["team"]) == ("web", "core")
    assert listed[1]["last_four"] == member.secret[-4:] == member.last_four
    assert member.secret not in str(listed)
    datetime.fromisoformat(listed[1]["created_at"])


async def test_a_key_is_stored_as_its_hash_with_its_project_and_team(
    owner: asyncpg.Connection,
) -> None:
    """A new key is shown once; the store holds its SHA-256 and last four only; a project
    or team is created on first use and reused after."""
    workspace = await ops.create_workspace(owner, name("hash"))
    first = await ops.create_key(owner, workspace, project="web", team="core")
    second = await ops.create_key(owner, workspace, project="web", team="core")
    assert first.secret.startswith("rcv_live_") and first.workspace_id == workspace
    rows = await owner.fetch(
        "SELECT key_sha256, last_four, project_id, team_id, role, env FROM recovea.rcv_keys"
        " WHERE customer_id = $1 ORDER BY created_at",
        uuid.UUID(workspace),
    )
    assert rows[0]["key_sha256"] == key_hash(first.secret)
    assert (rows[0]["role"], rows[0]["env"]) == ("member", "live")
    assert rows[0]["project_id"] == rows[1]["project_id"] is not None
    assert rows[0]["team_id"] == rows[1]["team_id"] is not None
    assert rows[0]["project_id"] != rows[0]["team_id"]
    assert second.secret != first.secret


async def test_key_input_is_checked(owner: asyncpg.Connection) -> None:
    """An unknown role or env, a workspace id that is not a UUID, a workspace that does
    not exist, and an unprintable project name are refused, each with its reason."""
    workspace = await ops.create_workspace(owner, name("input"))
    missing = str(uuid.uuid4())
    assert await refusal(ops.create_key(owner, workspace, role="owner")) == (
        "role must be admin or member"
    )
    assert await refusal(ops.create_key(owner, workspace, env="prod")) == (
        "env must be live or test"
    )
    assert await refusal(ops.create_key(owner, "w1")) == "workspace id must be a UUID, not 'w1'"
    assert await refusal(ops.create_key(owner, missing)) == f"no workspace {missing}"
    assert await refusal(ops.create_key(owner, workspace, team="a\tb")) == (
        "name must be 1 to 100 printable characters"
    )


async def test_a_key_is_revoked_only_within_the_workspace_named(
    owner: asyncpg.Connection, migrated: str
) -> None:
    """Revoking with a workspace named leaves another workspace's key alone (False); the
    workspace's own key is revoked once (True, then False); every gateway is told."""
    mine = await ops.create_workspace(owner, name("revoke"))
    theirs = await ops.create_workspace(owner, name("revoke"))
    their_key = await ops.create_key(owner, theirs)
    my_key = await ops.create_key(owner, mine)
    heard: list[str] = []
    notified = asyncio.Event()

    def on_notice(*args: object) -> None:
        heard.append(str(args[-1]))
        notified.set()

    listener = await connect(migrated)
    await listener.add_listener("recovea_key_revoked", on_notice)
    try:
        assert await ops.revoke_key(owner, their_key.id, mine) is False
        assert await ops.revoke_key(owner, my_key.id, mine) is True
        assert await ops.revoke_key(owner, my_key.id, mine) is False
        await asyncio.wait_for(notified.wait(), 10)
        assert heard == [my_key.id]
    finally:
        await listener.close()
    still = await owner.fetchval(
        "SELECT revoked_at FROM recovea.rcv_keys WHERE id = $1", uuid.UUID(their_key.id)
    )
    assert still is None
    assert await refusal(ops.revoke_key(owner, "k1")) == "key id must be a UUID, not 'k1'"


async def test_a_provider_key_list_is_the_workspaces_own(
    owner: asyncpg.Connection, keyring: Keyring
) -> None:
    """Provider keys by provider, last four characters and backend; none of another
    workspace; never the secret."""
    mine = await ops.create_workspace(owner, name("pk"))
    theirs = await ops.create_workspace(owner, name("pk"))
    await ops.set_provider_key(owner, keyring, mine, "openai", "  sk-mine-openai-1234  ")
    await ops.set_provider_key(owner, keyring, mine, "anthropic", "sk-ant-mine-5678")
    await ops.set_provider_key(owner, keyring, theirs, "openrouter", "sk-or-theirs-9999")
    listed = await ops.list_provider_keys(owner, mine)
    assert [(k["provider"], k["last_four"], k["backend"]) for k in listed] == [
        ("anthropic", "5678", "local"),
        ("openai", "1234", "local"),
    ]
    assert "sk-mine" not in str(listed)
    datetime.fromisoformat(listed[0]["created_at"])


async def test_a_provider_key_is_sealed_under_its_rows_context(
    owner: asyncpg.Connection, keyring: Keyring
) -> None:
    """The stored ciphertext opens with its data key under its own row's context (trimmed
    secret), and a replacement takes the row's place."""
    workspace = await ops.create_workspace(owner, name("seal"))
    first = await ops.set_provider_key(owner, keyring, workspace, "openai", " sk-first-0001 ")
    second = await ops.set_provider_key(owner, keyring, workspace, "openai", "sk-second-0002")
    assert first != second
    row = await owner.fetchrow(
        "SELECT id, ciphertext, nonce, wrapped_data_key, master_key_id, backend, last_four"
        " FROM recovea.provider_keys WHERE customer_id = $1",
        uuid.UUID(workspace),
    )
    assert (str(row["id"]), row["last_four"], row["master_key_id"]) == (
        second,
        "0002",
        keyring.current.key_id,
    )
    context = context_for(workspace, "openai", second)
    data_key = keyring.current.unwrap(row["wrapped_data_key"], context)
    sealed = Sealed(
        row["ciphertext"], row["nonce"], row["wrapped_data_key"], row["master_key_id"], "local"
    )
    assert open_sealed(data_key, sealed, context) == bytearray(b"sk-second-0002")


async def test_provider_key_input_is_checked(owner: asyncpg.Connection, keyring: Keyring) -> None:
    """An unknown provider, and a key that is too short, too long, unprintable or has a
    space, are refused with their reason; so is a workspace that does not exist."""
    workspace = await ops.create_workspace(owner, name("pkin"))
    assert await refusal(ops.set_provider_key(owner, keyring, workspace, "azure", "k" * 20)) == (
        "provider must be one of openai, anthropic, openrouter"
    )
    for bad in ("short", "k" * 513, "sk-key\x00-0123", "sk-key 0123456"):
        assert await refusal(ops.set_provider_key(owner, keyring, workspace, "openai", bad)) == (
            "the provider key must be 8 to 512 printable characters, no spaces"
        )
    assert await ops.set_provider_key(owner, keyring, workspace, "openai", "k" * 8)
    assert await ops.set_provider_key(owner, keyring, workspace, "openai", "k" * 512)
    missing = str(uuid.uuid4())
    assert await refusal(ops.set_provider_key(owner, keyring, missing, "openai", "k" * 9)) == (
        f"no workspace {missing}"
    )
    assert await refusal(ops.set_provider_key(owner, keyring, "w1", "openai", "k" * 9)) == (
        "workspace id must be a UUID, not 'w1'"
    )


async def test_init_runs_once(migrated: str) -> None:
    """`init` creates workspace `default` and its admin key; a second `init` is refused
    and changes nothing."""
    conn = await connect(migrated)
    try:
        existing = await conn.fetchval(
            "SELECT customer_id FROM recovea.workspaces WHERE name = 'default'"
        )
        if existing is None:
            workspace, key = await ops.init(conn)
            assert (key.role, key.env, key.workspace_id) == ("admin", "live", workspace)
        assert (await refusal(ops.init(conn))).startswith(
            "already initialized: workspace 'default' exists"
        )
    finally:
        await conn.close()


async def test_the_admin_api_operations_act_within_the_callers_workspace_on_the_app_role(
    app: asyncpg.Connection, owner: asyncpg.Connection, keyring: Keyring
) -> None:
    """On the gateway's own connection (row-level security binds it) a workspace is
    created, given a key and a provider key, and its key revoked: each operation scopes
    itself to the workspace it names, so it sees that workspace's rows and no other's."""
    mine = await ops.create_workspace(app, name("app"))
    theirs = await ops.create_workspace(owner, name("app"))
    key = await ops.create_key(app, mine, project="web")
    their_key = await ops.create_key(owner, theirs)
    assert key.workspace_id == mine
    assert await ops.set_provider_key(app, keyring, mine, "openai", "sk-app-role-4321")
    assert [k["last_four"] for k in await ops.list_provider_keys(owner, mine)] == ["4321"]
    assert await ops.revoke_key(app, their_key.id, mine) is False
    assert await ops.revoke_key(app, key.id, mine) is True
    listed = await ops.list_keys(owner, mine)
    assert [(k["id"], k["revoked_at"] is not None) for k in listed] == [(key.id, True)]
    assert (await ops.list_keys(owner, theirs))[0]["revoked_at"] is None


async def test_a_one_character_name_is_a_name(owner: asyncpg.Connection) -> None:
    """Names are 1 to 100 characters: a project or team called `w` is kept as `w`."""
    workspace = await ops.create_workspace(owner, name("short"))
    await ops.create_key(owner, workspace, project="w", team="t")
    assert [(k["project"], k["team"]) for k in await ops.list_keys(owner, workspace)] == [
        ("w", "t")
    ]


async def test_an_id_that_is_not_a_uuid_is_quoted_back_cut_at_40_characters(
    owner: asyncpg.Connection,
) -> None:
    """The refusal echoes at most 40 characters of what was typed (a pasted secret or a
    page of text is not printed back whole)."""
    pasted = "z" * 39 + "!tail-of-a-long-paste"
    assert await refusal(ops.revoke_key(owner, pasted)) == (
        f"key id must be a UUID, not {pasted[:40]!r}"
    )


async def put_on_kms(owner: asyncpg.Connection, workspace: str, arn: str) -> None:
    """What `recovea workspace kms set` records (after it has tried the key)."""
    await owner.execute(
        "UPDATE recovea.workspaces SET kms_key_id = $2, kms_key_arn = $2, kms_set_at = now()"
        " WHERE customer_id = $1",
        uuid.UUID(workspace),
        arn,
    )


async def test_a_provider_key_of_a_workspace_whose_own_kms_key_is_unreachable_is_not_stored(
    app: asyncpg.Connection,
    owner: asyncpg.Connection,
    keyring: Keyring,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A workspace on its own KMS key has its provider keys sealed under that key and no
    other: when KMS cannot be reached the key is refused (503 `unreachable`, with a line
    that says so) and nothing is stored — never sealed under the deployment's key
    instead."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    workspace = await ops.create_workspace(owner, name("kms"))
    await put_on_kms(owner, workspace, "arn:aws:kms:us-east-1:111122223333:key/ops-test")
    with pytest.raises(ops.KmsRefusedError) as caught:
        await ops.set_provider_key(app, keyring, workspace, "openai", "sk-never-stored-0001")
    assert str(caught.value) == (
        "the workspace's KMS key refused or could not be reached (unreachable);"
        " the key was not stored"
    )
    assert (caught.value.reason, caught.value.status) == ("unreachable", 503)
    assert await ops.list_provider_keys(owner, workspace) == []


class _SlowMaster(LocalMasterKey):
    """The deployment's master key, while an operator puts the workspace on its own KMS
    key between the read of the workspace and the write of the sealed key."""

    meanwhile: Callable[[], Coroutine[Any, Any, None]]
    loop: asyncio.AbstractEventLoop

    def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        asyncio.run_coroutine_threadsafe(self.meanwhile(), self.loop).result(10)
        return super().generate_data_key(context)


async def test_a_provider_key_sealed_while_the_workspace_moved_to_its_own_kms_key_is_refused(
    owner: asyncpg.Connection, migrated: str
) -> None:
    """A key sealed under the deployment's master while `workspace kms set` put the
    workspace on its own key is not stored (it would sit outside the key the customer
    controls); the operator is told to store it again."""
    workspace = await ops.create_workspace(owner, name("moved"))
    other = await connect(migrated)
    master = _SlowMaster(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    master.loop = asyncio.get_running_loop()
    master.meanwhile = lambda: put_on_kms(other, workspace, "arn:aws:kms:eu-west-1:1:key/moved")
    try:
        assert await refusal(
            ops.set_provider_key(owner, Keyring(master, {}), workspace, "openai", "sk-moved-0001")
        ) == ("the workspace's KMS key changed meanwhile; store the key again")
    finally:
        await other.close()
    assert await ops.list_provider_keys(owner, workspace) == []


async def test_init_makes_workspace_default_on_the_free_plan_with_one_live_admin_key(
    empty: asyncpg.Connection,
) -> None:
    """On a new database `init` makes workspace `default` (free plan) and one live admin
    key, stored as its hash; a second `init` is refused with a pointer to `key create`."""
    workspace, key = await ops.init(empty)
    described = await ops.describe_workspace(empty, workspace)
    assert (described["name"], described["plan"]) == ("default", "free")
    assert (key.workspace_id, key.role, key.env) == (workspace, "admin", "live")
    assert key.secret.startswith("rcv_live_")
    listed = await ops.list_keys(empty, workspace)
    assert [(k["id"], k["role"], k["env"]) for k in listed] == [(key.id, "admin", "live")]
    stored = await empty.fetchval(
        "SELECT key_sha256 FROM recovea.rcv_keys WHERE id = $1", uuid.UUID(key.id)
    )
    assert stored == key_hash(key.secret)
    assert await refusal(ops.init(empty)) == (
        "already initialized: workspace 'default' exists"
        " (create more keys with `recovea key create`)"
    )


async def test_rotation_rewraps_every_provider_key_under_the_current_master_but_own_kms_ones(
    empty: asyncpg.Connection,
) -> None:
    """`provider-key rotate` re-wraps each stored data key under the current master key
    (the ciphertext stays, and opens with the re-wrapped key under its own row's
    context), counts the rows it rewrote, and leaves the rows of a workspace on its own
    KMS key exactly as they were."""
    old = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    new = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    before = Keyring(old, {})
    one = await ops.create_workspace(empty, name("rot"))
    two = await ops.create_workspace(empty, name("rot"))
    own = await ops.create_workspace(empty, name("rot"))
    secrets = {
        (one, "openai"): "sk-one-openai-0001",
        (one, "anthropic"): "sk-one-anthropic-0002",
        (two, "openai"): "sk-two-openai-0003",
    }
    for (workspace, provider), secret in secrets.items():
        await ops.set_provider_key(empty, before, workspace, provider, secret)
    await ops.set_provider_key(empty, before, own, "openai", "sk-own-openai-0004")
    await put_on_kms(empty, own, "arn:aws:kms:us-east-1:111122223333:key/own")
    query = (
        "SELECT id, customer_id, provider, ciphertext, nonce, wrapped_data_key,"
        " master_key_id, backend FROM recovea.provider_keys"
    )
    was = {(str(r["customer_id"]), r["provider"]): r for r in await empty.fetch(query)}

    assert await ops.rewrap_provider_keys(empty, Keyring(new, {old.key_id: old})) == 3

    now = {(str(r["customer_id"]), r["provider"]): r for r in await empty.fetch(query)}
    assert now[(own, "openai")] == was[(own, "openai")]
    for (workspace, provider), secret in secrets.items():
        row = now[(workspace, provider)]
        assert (row["master_key_id"], row["backend"]) == (new.key_id, "local")
        assert row["ciphertext"] == was[(workspace, provider)]["ciphertext"]
        context = context_for(workspace, provider, str(row["id"]))
        sealed = Sealed(
            row["ciphertext"], row["nonce"], row["wrapped_data_key"], new.key_id, "local"
        )
        assert open_sealed(new.unwrap(row["wrapped_data_key"], context), sealed, context) == (
            bytearray(secret.encode())
        )


@pytest.fixture
def kms_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[KmsMasterKey]:
    """A key in moto's KMS server (over HTTP, through boto3), which the process's KMS
    clients reach by the usual AWS environment."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("kms", region_name="us-east-1")
    yield KmsMasterKey(client.create_key(Description="ops")["KeyMetadata"]["Arn"], client)
    server.stop()


async def test_rotation_moves_keys_off_a_kms_key_the_deployment_no_longer_names(
    empty: asyncpg.Connection, kms_key: KmsMasterKey
) -> None:
    """A provider key stored while RECOVEA_KMS_KEY_ID was set is still read through that
    KMS key after it is unset (the row names its backend and key), and `rotate` moves it
    under the local master."""
    workspace = await ops.create_workspace(empty, name("unkms"))
    await ops.set_provider_key(empty, Keyring(kms_key, {}), workspace, "openai", "sk-kms-era-0001")
    local = LocalMasterKey(os.urandom(32), f"local:{uuid.uuid4().hex[:16]}")
    assert await ops.rewrap_provider_keys(empty, Keyring(local, {})) == 1
    row = await empty.fetchrow(
        "SELECT id, ciphertext, nonce, wrapped_data_key, master_key_id, backend"
        " FROM recovea.provider_keys WHERE customer_id = $1",
        uuid.UUID(workspace),
    )
    assert (row["master_key_id"], row["backend"]) == (local.key_id, "local")
    context = context_for(workspace, "openai", str(row["id"]))
    sealed = Sealed(row["ciphertext"], row["nonce"], row["wrapped_data_key"], local.key_id, "local")
    assert open_sealed(local.unwrap(row["wrapped_data_key"], context), sealed, context) == (
        bytearray(b"sk-kms-era-0001")
    )
