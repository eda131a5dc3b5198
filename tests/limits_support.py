"""What the limit tests share: their windows, a tenant with an admin key to set its
limits (`Limited`), a chat request, and OpenAI's reset durations read back."""

from __future__ import annotations

from typing import Any

import httpx

from tests.ledger_support import Tenant, make_tenant
from tests.support import Gateway, cli_json

#: a short "minute" for the tests where the SDKs wait out a refusal
FAST_WINDOW_S = 2
#: a long one where the buckets must not refill noticeably during a test
SLOW_WINDOW_S = 36000


class Limited:
    """A tenant with an admin key to set its limits over the admin API."""

    def __init__(self, env: dict[str, str], name: str, **tenant: Any) -> None:
        self.tenant: Tenant = make_tenant(env, name, **tenant)
        made = cli_json(
            "key", "create", "--workspace", self.tenant.workspace, "--role", "admin", env=env
        )
        self.admin = {"authorization": f"Bearer {made['key']}"}

    def set(self, gateway: Gateway, **limit: Any) -> dict[str, Any]:
        response = httpx.put(f"{gateway.url}/admin/v1/limits", headers=self.admin, json=limit)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()["limit"]
        return result


def duration_s(text: str) -> float:
    """Seconds in OpenAI's reset format (`250ms`, `1.5s`, `6m0s`)."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    minutes, _, seconds = text[:-1].rpartition("m")
    return float(minutes or 0) * 60 + float(seconds)


def chat(
    gateway: Gateway,
    tenant: Tenant,
    *,
    model: str = "gpt-4o-mini",
    prompt: str = "hello",
    headers: dict[str, str] | None = None,
    **body: Any,
) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": prompt}], **body},
        headers={**tenant.bearer, **(headers or {})},
        timeout=30,
    )
