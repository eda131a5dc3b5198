"""A workspace chooses its cache policy (`recovea cache set`, `PUT /admin/v1/cache`):
`off` turns off the exact cache and singleflight, `all` shares answers whatever the
temperature; a change reaches running gateways at once, with no restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, MockServer, cli, cli_json, wait_until


@pytest.fixture(scope="module")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    gw = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gw
    gw.stop()


def ask(gateway: Gateway, tenant: Tenant, prompt: str, temperature: float) -> httpx.Response:
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
            "temperature": temperature,
        },
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200
    return response


def heard(gateway: Gateway, tenant: Tenant) -> int:
    """How many revocation notices for the tenant's key this gateway has received."""
    return sum(
        1
        for line in gateway.log_lines()
        if line.get("event") == "key_revocation_received" and line.get("key_id") == tenant.key_id
    )


def set_policy(env: dict[str, str], tenant: Tenant, gateway: Gateway, *args: str) -> Any:
    before = heard(gateway, tenant)
    result = cli_json("cache", "set", "--workspace", tenant.workspace, *args, env=env)
    wait_until(lambda: heard(gateway, tenant) > before, 10, "the policy change to arrive")
    return result


def test_policy_off_and_all_take_effect_without_a_restart(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """`off`: a deterministic request asked twice goes upstream twice (`skip`); `all`:
    a request at temperature 1 asked twice is a hit the second time."""
    tenant = make_tenant(db_env, "cache-policy")
    ask(gateway, tenant, "policy-warm", 0)  # the key is resolved and cached
    assert set_policy(db_env, tenant, gateway, "--policy", "off")["policy"] == "off"
    for _ in range(2):
        assert ask(gateway, tenant, "policy-off", 0).headers["x-recovea-cache"] == "skip"

    set_policy(db_env, tenant, gateway, "--policy", "all", "--ttl", "600")
    assert ask(gateway, tenant, "policy-all", 1).headers["x-recovea-cache"] == "miss"
    assert ask(gateway, tenant, "policy-all", 1).headers["x-recovea-cache"] == "hit"


def test_the_admin_api_reads_and_sets_the_policy_for_admin_keys_only(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """GET shows the workspace's policy; PUT (admin keys) changes what it is given and
    refuses a bad value with 400; a member key gets 403."""
    tenant = make_tenant(db_env, "cache-policy-api")
    admin = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    as_admin = {"authorization": f"Bearer {admin['key']}"}
    url = f"{gateway.url}/admin/v1/cache"
    assert httpx.get(url, headers=as_admin).json() == {
        "policy": "deterministic",
        "ttl_s": 3600,
        "tool_calls": False,
    }
    changed = httpx.put(url, headers=as_admin, json={"ttl_s": 120, "tool_calls": True})
    assert changed.status_code == 200
    assert (changed.json()["policy"], changed.json()["ttl_s"]) == ("deterministic", 120)
    assert httpx.get(url, headers=as_admin).json()["tool_calls"] is True
    for bad in ({"policy": "sometimes"}, {"ttl_s": 0}, {"ttl_s": "long"}, {"tool_calls": "yes"}):
        refused = httpx.put(url, headers=as_admin, json=bad)
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["code"] == "invalid_request"
    assert httpx.put(url, headers=tenant.bearer, json={"policy": "off"}).status_code == 403


def test_the_cli_refuses_a_bad_ttl_with_one_line(db_env: dict[str, str]) -> None:
    """A TTL outside 1 s .. 30 days is refused (exit 1) with the reason on one line."""
    tenant = make_tenant(db_env, "cache-policy-cli")
    done = cli(
        "cache",
        "set",
        "--workspace",
        tenant.workspace,
        "--policy",
        "all",
        "--ttl",
        "0",
        env=db_env,
    )
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "ttl" in done.stderr


def test_a_purge_leaves_the_workspaces_stored_answers_unserved(
    gateway: Gateway, db_env: dict[str, str]
) -> None:
    """`recovea cache purge` and `POST /admin/v1/cache/purge` (admin keys only): the
    running gateway serves none of the workspace's stored answers again (the same
    request goes upstream, and its new answer is stored again); another workspace's
    answer to the same question is still served."""
    tenant = make_tenant(db_env, "cache-purge")
    other = make_tenant(db_env, "cache-purge-other")
    for who in (tenant, other):
        ask(gateway, who, "purge-me", 0)
        assert ask(gateway, who, "purge-me", 0).headers["x-recovea-cache"] == "hit"

    before = heard(gateway, tenant)
    purged = cli_json("cache", "purge", "--workspace", tenant.workspace, env=db_env)
    assert (purged["purged"], purged["generation"]) == (True, 1)
    wait_until(lambda: heard(gateway, tenant) > before, 10, "the purge to arrive")
    assert ask(gateway, tenant, "purge-me", 0).headers["x-recovea-cache"] == "miss"
    assert ask(gateway, tenant, "purge-me", 0).headers["x-recovea-cache"] == "hit"
    assert ask(gateway, other, "purge-me", 0).headers["x-recovea-cache"] == "hit"

    admin = cli_json(
        "key", "create", "--workspace", tenant.workspace, "--role", "admin", env=db_env
    )
    url = f"{gateway.url}/admin/v1/cache/purge"
    assert httpx.post(url, headers=tenant.bearer).status_code == 403  # a member key
    before = heard(gateway, tenant)
    again = httpx.post(url, headers={"authorization": f"Bearer {admin['key']}"})
    assert again.status_code == 200
    assert again.json() == {"workspace_id": tenant.workspace, "purged": True, "generation": 2}
    wait_until(lambda: heard(gateway, tenant) > before, 10, "the purge to arrive")
    assert ask(gateway, tenant, "purge-me", 0).headers["x-recovea-cache"] == "miss"
    assert ask(gateway, other, "purge-me", 0).headers["x-recovea-cache"] == "hit"


def test_purging_an_unknown_workspace_is_refused_with_one_line(db_env: dict[str, str]) -> None:
    done = cli("cache", "purge", "--workspace", "00000000-0000-4000-8000-000000000000", env=db_env)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0
    assert "no workspace" in done.stderr
