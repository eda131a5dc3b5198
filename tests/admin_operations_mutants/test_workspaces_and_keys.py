"""A workspace's description, keys and provider keys are its own; a key is revoked only
within the workspace named; input that is not acceptable is refused with a line that
says why; names are reused (projects, teams) and never duplicated (workspaces);
`init` runs once; the admin API's operations act within the caller's workspace."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from recovea_proxy.admin import operations as ops
from recovea_proxy.auth.envelope import Sealed, context_for, open_sealed
from recovea_proxy.auth.keyring import Keyring
from recovea_proxy.auth.keys import key_hash
from recovea_proxy.store.database import connect
from tests.admin_operations_mutants.support import name, refusal


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
