"""The drainer mutation tests' workspaces (one per module, and another beside it)."""

from __future__ import annotations

import asyncio

import pytest

from tests.drain_support import prepare
from tests.support import Postgres


@pytest.fixture(scope="module")
def workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["drain-mutants"]))[0]


@pytest.fixture(scope="module")
def other_workspace(postgres: Postgres) -> str:
    return asyncio.run(prepare(postgres.url, ["drain-mutants-other"]))[0]
