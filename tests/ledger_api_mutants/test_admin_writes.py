"""The admin API's writes through the same wrappers: keys made and revoked, provider keys
stored and sent upstream from the next request, bodies refused when bad or oversized,
workspaces created by the operator only.

Written while reviewing the surviving mutants of `make mutate`
(mutation-survivors.md); each test states the behaviour a user would notice.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from recovea_proxy.asgi import Message
from recovea_proxy.headers import split_request_headers
from recovea_proxy.providers import PROVIDERS
from tests.ledger_api_mutants.support import (
    Ledger,
    World,
    _app,
    get,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

# --- the admin API's writes, through the same wrappers --------------------------------


async def test_an_admin_creates_and_revokes_a_key_of_its_workspace(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """POST /admin/v1/keys shows the new key once (201) with its role, env and last
    four; the key works; DELETE revokes it (and only once)."""
    created = await ledger.client.post(
        "/admin/v1/keys",
        json={"role": "member", "env": "test", "project": "api"},
        headers=scratch,
    )
    assert created.status_code == 201
    key = created.json()
    assert (key["role"], key["env"], key["last_four"]) == ("member", "test", key["key"][-4:])
    assert key["key"].startswith("rcv_test_")
    uses = await ledger.client.get(
        "/v1/recovea/ledger", headers={"authorization": f"Bearer {key['key']}"}
    )
    assert uses.status_code == 200
    revoked = await ledger.client.delete(f"/admin/v1/keys/{key['id']}", headers=scratch)
    assert (revoked.status_code, revoked.json()) == (200, {"id": key["id"], "revoked": True})
    again = await ledger.client.delete(f"/admin/v1/keys/{key['id']}", headers=scratch)
    assert again.status_code == 404
    assert again.json()["error"]["message"] == "No active key with that id in this workspace."
    malformed = await ledger.client.delete("/admin/v1/keys/k1", headers=scratch)
    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "invalid_request")


async def test_an_admin_stores_a_provider_key_for_its_workspace(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """PUT /admin/v1/provider-keys/{provider} stores the key (last four back, never the
    key), listed for the workspace; an unknown provider is 404."""
    stored = await ledger.client.put(
        "/admin/v1/provider-keys/anthropic",
        json={"key": " sk-ant-admin-api-4321 "},
        headers=scratch,
    )
    assert (stored.status_code, stored.json()) == (
        200,
        {"provider": "anthropic", "last_four": "4321"},
    )
    listed = (await ledger.client.get("/admin/v1/provider-keys", headers=scratch)).json()["data"]
    assert ("anthropic", "4321") in [(k["provider"], k["last_four"]) for k in listed]
    unknown = await ledger.client.put(
        "/admin/v1/provider-keys/azure", json={"key": "k" * 20}, headers=scratch
    )
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    short = await ledger.client.put(
        "/admin/v1/provider-keys/openai", json={"key": "short"}, headers=scratch
    )
    assert short.status_code == 400
    assert short.json()["error"]["message"] == (
        "the provider key must be 8 to 512 printable characters, no spaces"
    )


async def test_a_key_asked_for_with_no_body_is_a_live_member_key(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """POST /admin/v1/keys with no body at all makes a live member key of no project or
    team; each of role, env, project and team, when given, is the key's."""
    plain = await ledger.client.post("/admin/v1/keys", headers=scratch)
    assert plain.status_code == 201
    key = plain.json()
    assert (key["role"], key["env"]) == ("member", "live")
    assert key["key"].startswith("rcv_live_")
    given = await ledger.client.post(
        "/admin/v1/keys",
        json={"role": "admin", "env": "test", "project": "app", "team": "ops"},
        headers=scratch,
    )
    assert given.status_code == 201
    assert (given.json()["role"], given.json()["env"]) == ("admin", "test")
    listed = (await ledger.client.get("/admin/v1/keys", headers=scratch)).json()["data"]
    shown = {k["id"]: (k["role"], k["env"], k["project"], k["team"]) for k in listed}
    assert shown[key["id"]] == ("member", "live", None, None)
    assert shown[given.json()["id"]] == ("admin", "test", "app", "ops")


async def test_revoking_a_key_that_is_not_there_says_so(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """DELETE of an unknown key id is 404 `not_found`; of a malformed one, 400 naming
    the key id."""
    unknown = await ledger.client.delete(f"/admin/v1/keys/{uuid.uuid4()}", headers=scratch)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    malformed = await ledger.client.delete("/admin/v1/keys/k1", headers=scratch)
    assert malformed.json()["error"]["message"] == "key id must be a UUID, not 'k1'"


async def test_a_replaced_provider_key_is_used_from_the_next_request(
    world: World, ledger: Ledger, scratch: dict[str, str]
) -> None:
    """After PUT /admin/v1/provider-keys/openai replaces the workspace's key, this
    gateway sends the new key upstream at once, not the one it had in memory."""
    headers = split_request_headers([(b"authorization", scratch["authorization"].encode())])
    openai = PROVIDERS["openai"]

    async def upstream_key() -> tuple[tuple[str, str], ...]:
        auth = world.runtime.auth
        principal = auth.known_principal(headers, openai)
        principal = principal or await auth.load_principal(headers, openai)
        return principal.upstream_credentials

    for secret in ("sk-first-0123456789", "sk-second-0123456789"):
        stored = await ledger.client.put(
            "/admin/v1/provider-keys/openai", json={"key": secret}, headers=scratch
        )
        assert stored.status_code == 200
        assert await upstream_key() == (("authorization", f"Bearer {secret}"),)


async def test_an_unknown_provider_is_a_404_that_names_the_known_ones(
    ledger: Ledger, scratch: dict[str, str]
) -> None:
    """PUT for a provider the gateway does not serve is 404 naming the ones it does."""
    answer = await ledger.client.put(
        "/admin/v1/provider-keys/azure", json={"key": "k" * 20}, headers=scratch
    )
    assert answer.status_code == 404
    message = answer.json()["error"]["message"]
    assert message.startswith("Unknown provider; use one of")
    assert all(name in message for name in ("openai", "anthropic", "openrouter"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The body must be a JSON object."),
        (b"[1, 2]", "The body must be a JSON object."),
        (b'{"role": "member", "colour": "red", "bogus": 1}', "Unknown field(s): bogus, colour."),
        (b'{"role": 7}', "role must be a string, or null."),
    ],
)
async def test_a_bad_admin_body_is_a_400_that_says_why(
    ledger: Ledger, body: bytes, message: str
) -> None:
    """A body that is not a JSON object, has unknown fields or a non-string value is
    refused 400 with what is wrong; nothing is created."""
    before = len((await get(ledger, "/admin/v1/keys")).json()["data"])
    answer = await ledger.client.post(
        "/admin/v1/keys",
        content=body,
        headers={**ledger.mine.auth(), "content-type": "application/json"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "message": message,
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_request",
    }
    assert len((await get(ledger, "/admin/v1/keys")).json()["data"]) == before


async def test_an_admin_body_over_64_kb_is_refused_413(ledger: Ledger) -> None:
    """Over 64 KB, announced or streamed, the body is refused 413 before it is read;
    exactly 64 KB is read (and judged on its content)."""
    big = b'{"role": "' + b"m" * (64 * 1024) + b'"}'

    async def streamed() -> AsyncIterator[bytes]:
        for at in range(0, len(big), 4096):
            yield big[at : at + 4096]

    for content in (big, streamed()):
        answer = await ledger.client.post(
            "/admin/v1/keys", content=content, headers=ledger.mine.auth()
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "request_too_large"
    exactly = b'{"project": "' + b"p" * (64 * 1024 - 15) + b'"}'
    assert len(exactly) == 64 * 1024
    answer = await ledger.client.post("/admin/v1/keys", content=exactly, headers=ledger.mine.auth())
    assert answer.status_code == 400  # read, then refused for the project name's length


async def test_a_body_announced_over_64_kb_is_refused_unread(world: World) -> None:
    """A request whose Content-Length is over 64 KB is refused 413 before any of its
    body is read."""
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/admin/v1/keys",
        "raw_path": b"/admin/v1/keys",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway"),
            (b"authorization", world.mine.auth()["authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(64 * 1024 + 1).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("gateway", 80),
    }
    await _app(world.runtime)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["error"] == {
        "message": "Request body is larger than 64 KB.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_too_large",
    }
    assert reads == 0


async def test_unknown_fields_are_named_up_to_200_characters(ledger: Ledger) -> None:
    """However many unknown fields a body has, the 400 names them (sorted) in at most
    200 characters."""
    fields = {f"field_{i:03}": "x" for i in range(40)}
    answer = await ledger.client.post("/admin/v1/keys", json=fields, headers=ledger.mine.auth())
    assert answer.status_code == 400
    named = ", ".join(sorted(fields))
    assert answer.json()["error"]["message"] == f"Unknown field(s): {named[:200]}."


async def test_a_workspace_needs_a_name_and_is_on_the_free_plan_by_default(
    ledger: Ledger,
) -> None:
    """POST /admin/v1/workspaces without a name is 400 and creates nothing; without a
    plan, the new workspace is on `free`. An admin of any other workspace is 403
    `forbidden`."""
    operator = {"authorization": f"Bearer {ledger.operator.secret}"}
    nameless = await ledger.client.post("/admin/v1/workspaces", json={}, headers=operator)
    assert nameless.status_code == 400
    assert nameless.json()["error"]["message"] == "name is required."
    name = f"planless-{uuid.uuid4().hex[:8]}"
    created = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name}, headers=operator
    )
    assert created.status_code == 201
    first = {"authorization": f"Bearer {created.json()['admin_key']}"}
    described = (await ledger.client.get("/admin/v1/workspace", headers=first)).json()
    assert (described["name"], described["plan"]) == (name, "free")
    refused = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": f"x-{name}"}, headers=ledger.mine.auth()
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "forbidden")


async def test_only_the_operator_creates_workspaces(ledger: Ledger) -> None:
    """POST /admin/v1/workspaces: 403 for an admin of any other workspace; the
    operator's (`default`) gets the new workspace and its first admin key, which works."""
    name = f"created-{uuid.uuid4().hex[:8]}"
    refused = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name}, headers=ledger.mine.auth()
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "Only the operator workspace creates workspaces."
    operator = {"authorization": f"Bearer {ledger.operator.secret}"}
    created = await ledger.client.post(
        "/admin/v1/workspaces", json={"name": name, "plan": "pro"}, headers=operator
    )
    assert created.status_code == 201
    body = created.json()
    first = {"authorization": f"Bearer {body['admin_key']}"}
    described = (await ledger.client.get("/admin/v1/workspace", headers=first)).json()
    assert (described["id"], described["name"], described["plan"]) == (body["id"], name, "pro")
    keys = (await ledger.client.get("/admin/v1/keys", headers=first)).json()["data"]
    assert [(k["id"], k["role"], k["env"]) for k in keys] == [
        (body["admin_key_id"], "admin", "live")
    ]
    taken = await ledger.client.post("/admin/v1/workspaces", json={"name": name}, headers=operator)
    assert taken.status_code == 400
