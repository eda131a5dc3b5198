"""Fixtures: a mock provider on a real socket, and clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest

from recovea_proxy.mock_provider import (
    start_mock,
)
from tests.mock_provider.helpers import KEY


@pytest.fixture
async def url() -> AsyncIterator[str]:
    runner, port = await start_mock("127.0.0.1", 0)
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def oai(url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def ant(url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=url, api_key=KEY, max_retries=0, timeout=10
    ) as client:
        yield client
