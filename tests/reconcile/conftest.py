"""The fixtures of the reconciliation tests: a mock of each module's own (its reports
are made of what it served), a gateway that never polls on its own, and a workspace
with both report keys and five requests through the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import upstream_env
from tests.ledger_support import Tenant, make_tenant
from tests.reconcile.support import (
    ANTHROPIC_REPORT_KEY,
    OPENAI_REPORT_KEY,
    send_traffic,
    set_report_key,
)
from tests.support import Gateway, MockServer


@pytest.fixture(scope="module")
def report_mock() -> Iterator[MockServer]:
    """A mock of this module's own: its reports are made of what it served."""
    server = MockServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def env(report_mock: MockServer, db_env: dict[str, str]) -> dict[str, str]:
    return {
        **upstream_env(report_mock),
        **db_env,
        "RECOVEA_RECONCILE_RETRY_BASE_S": "0.05",
        "RECOVEA_RECONCILE_ATTEMPTS": "3",
    }


@pytest.fixture(scope="module")
def gateway(env: dict[str, str], workdir: Path) -> Iterator[Gateway]:
    gw = Gateway({**env, "RECOVEA_RECONCILE_INTERVAL_S": "0"}, workdir)
    yield gw
    gw.stop()


@pytest.fixture
def mock_reports(report_mock: MockServer) -> Iterator[MockServer]:
    """The mock's report book emptied and its switches off, before and after."""
    httpx.delete(f"{report_mock.url}/_mock/usage-reports")
    yield report_mock
    httpx.delete(f"{report_mock.url}/_mock/usage-reports")


@pytest.fixture
def tenant(env: dict[str, str], gateway: Gateway, mock_reports: MockServer) -> Tenant:
    """A workspace with both report keys and five requests through the gateway."""
    tenant = make_tenant(env, f"reconcile-{time.monotonic_ns()}")
    set_report_key(env, tenant, "openai", OPENAI_REPORT_KEY)
    set_report_key(env, tenant, "anthropic", ANTHROPIC_REPORT_KEY)
    send_traffic(gateway, tenant, env)
    return tenant
