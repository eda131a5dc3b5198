"""The hostile-input suite's fixtures: a gateway of its own (so whatever is thrown at it
cannot disturb the rest of the session), a workspace to send normal traffic with,
and the invariants every hostile test checks afterwards."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, upstream_env
from tests.hostile.rawhttp import RawResponse
from tests.ledger_support import Tenant, make_tenant, stored
from tests.support import Gateway, MockServer


@pytest.fixture(scope="module")
def target(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """A gateway (passthrough on) that this module alone attacks."""
    gateway = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def victim(db_env: dict[str, str], request: pytest.FixtureRequest) -> Tenant:
    """A workspace whose normal requests must keep being served and metered."""
    return make_tenant(db_env, f"hostile-{request.module.__name__.rsplit('.', 1)[-1]}")


def normal_request(gateway: Gateway, tenant: Tenant) -> str:
    """A normal chat request; it must be served and get its row. Its request id."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers=tenant.bearer,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["x-request-id"]
    stored(gateway, tenant, "requests", request_id)
    return request_id


def assert_unharmed(gateway: Gateway, tenant: Tenant) -> None:
    """The invariants after an attack: still ready, never a 500 of its own, no
    traceback and no key in its log, and the next normal request is served and
    metered."""
    assert httpx.get(f"{gateway.url}/readyz", timeout=10).status_code == 200
    normal_request(gateway, tenant)
    log = gateway.log_text()
    assert "Traceback" not in log
    assert '"internal_error"' not in log
    for secret in (FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY, tenant.key):
        assert secret not in log


def rss_kib(gateway: Gateway) -> int:
    """The gateway process's resident memory (KiB)."""
    with open(f"/proc/{gateway.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def from_provider(headers: Mapping[str, str]) -> bool:
    """Whether a response is the provider's: the gateway names the provider's request id
    on those only (its own errors carry none)."""
    return "x-recovea-upstream-request-id" in headers


def gateway_code(response: RawResponse | httpx.Response) -> str:
    """The code of one of the gateway's own errors (in either surface's shape)."""
    body = response.json()
    assert isinstance(body, dict), body
    code: str = body["error"]["code"]
    return code
