"""Helpers for the ledger tests: a workspace with keys, reading rows back over the
gateway's API, and owner-side SQL for checks the API does not expose."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY
from tests.support import Gateway, cli_json, set_provider_key, wait_until


@dataclass
class Tenant:
    """A workspace with one rcv_ key and provider keys for OpenAI and Anthropic."""

    workspace: str
    key: str
    key_id: str

    @property
    def bearer(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


def make_tenant(
    env: dict[str, str],
    name: str,
    *,
    key_env: str = "live",
    plan: str = "free",
    project: str | None = None,
    team: str | None = None,
) -> Tenant:
    workspace = cli_json("workspace", "create", name, "--plan", plan, env=env)["workspace_id"]
    extra = []
    if project:
        extra += ["--project", project]
    if team:
        extra += ["--team", team]
    created = cli_json("key", "create", "--workspace", workspace, "--env", key_env, *extra, env=env)
    set_provider_key(env, workspace, "openai", FAKE_OPENAI_KEY)
    set_provider_key(env, workspace, "anthropic", FAKE_ANTHROPIC_KEY)
    return Tenant(workspace, created["key"], created["key_id"])


def stored(gateway: Gateway, tenant: Tenant, what: str, request_id: str) -> dict[str, Any]:
    """GET /v1/recovea/{what}/{id}, waiting for the drainer to have written it."""

    def fetch() -> dict[str, Any] | None:
        response = httpx.get(f"{gateway.url}/v1/recovea/{what}/{request_id}", headers=tenant.bearer)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    found: dict[str, Any] = wait_until(fetch, 15, f"{what} {request_id}")
    return found


def owner_query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query as the database owner (checks the API cannot make)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())
