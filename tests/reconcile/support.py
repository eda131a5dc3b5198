"""What the reconciliation tests share: the report keys they set, the traffic they
send through the gateway, and how they run `recovea reconcile` and read its result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tests.ledger_support import Tenant, owner_query
from tests.support import Gateway, MockServer, cli, cli_json, wait_until

OPENAI_REPORT_KEY = "sk-admin-Rp7Qw2Lx9Vb4Nc8Mz1Kd5Hs3Tf6Gy0Ju"
ANTHROPIC_REPORT_KEY = "sk-ant-admin01-Wq4Er7Ty1Ui9Op3As6Df2Gh8Jk5Lz0Xc"
NOT_AN_ADMIN_KEY = "sk-proj-NotAnAdminKey7Hd2Ks9Lq4Wz1Xc"
TODAY = datetime.now(UTC).date().isoformat()


def switch(mock: MockServer, **switches: Any) -> None:
    response = httpx.put(f"{mock.url}/_mock/usage-reports", content=orjson.dumps(switches))
    assert response.status_code == 200


def set_report_key(env: dict[str, str], tenant: Tenant, provider: str, key: str) -> Any:
    return cli_json(
        "report-key",
        "set",
        "--workspace",
        tenant.workspace,
        "--provider",
        provider,
        env=env,
        stdin=key + "\n",
    )


def send_traffic(gateway: Gateway, tenant: Tenant, env: dict[str, str]) -> int:
    """Three OpenAI and two Anthropic requests (with cache reads and writes); waits for
    their rows. How many requests were sent."""
    sent = 0
    for cached in ("0", "4", "8"):
        response = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": cached}]},
            headers={**tenant.bearer, "x-mock-cached-tokens": cached},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        sent += 1
    for write in ("0", "10"):
        response = httpx.post(
            f"{gateway.url}/v1/messages",
            json={
                "model": "claude-haiku-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": write}],
            },
            headers={
                **tenant.bearer,
                "anthropic-version": "2023-06-01",
                "x-mock-input-tokens": "40",
                "x-mock-cached-tokens": "20",
                "x-mock-cache-write-5m-tokens": write,
            },
            timeout=30,
        )
        assert response.status_code == 200, response.text
        sent += 1
    wait_until(
        lambda: (
            owner_query(
                env["RECOVEA_DATABASE_URL"],
                "SELECT count(*) AS n FROM recovea.request_events WHERE customer_id = $1::uuid",
                tenant.workspace,
            )[0]["n"]
            == sent
        ),
        15,
        "the rows to be written",
    )
    return sent


def reconcile(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    done = cli("reconcile", *args, "--json", env=env)
    return done.returncode, orjson.loads(done.stdout), done.stderr


def rows_of(result: dict[str, Any], workspace: str) -> dict[tuple[str, str], dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    return {(row["provider"], row["model"]): row for row in found["data"]}


def rows_list(result: dict[str, Any], workspace: str) -> list[dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    data: list[dict[str, Any]] = found["data"]
    return data


def provider_usage(env: dict[str, str], workspace: str) -> list[tuple[Any, ...]]:
    records = owner_query(
        env["RECOVEA_DATABASE_URL"],
        "SELECT provider, day, model, api_key_id, project_id, requests, input_tokens,"
        " cached_tokens, output_tokens, cost_usd FROM recovea.provider_usage"
        " WHERE customer_id = $1::uuid ORDER BY 1, 2, 3, 4, 5",
        workspace,
    )
    return [tuple(r) for r in records]


def rows_of_polls(result: dict[str, Any], workspace: str) -> list[dict[str, Any]]:
    (found,) = [w for w in result["workspaces"] if w["workspace_id"] == workspace]
    polls: list[dict[str, Any]] = found["polls"]
    return polls
