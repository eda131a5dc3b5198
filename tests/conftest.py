"""Session fixtures: the mock provider and a gateway process in front of it."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import anthropic
import openai
import pytest

from tests.node_support import install_node_sdks
from tests.receipt_support import Signer
from tests.redis_support import RedisServer, SilentServer
from tests.support import Gateway, MockServer, Postgres, short_tmpdir

FAKE_OPENAI_KEY = "sk-test-Zq3J8x1RkD5mV0aLpN7uYc2Wf9Tb4HsE"
FAKE_ANTHROPIC_KEY = "sk-ant-test-Hq8ZfK2nR5tW1xYbV7mC3pL9sD4gJ0eA"


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def mock() -> Iterator[MockServer]:
    server = MockServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One embedded Postgres for the session (tests that stop Postgres start their own)."""
    server = Postgres()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A Postgres of the test's own, which it may stop and start."""
    server = Postgres()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def db_env(postgres: Postgres, workdir: Path) -> dict[str, str]:
    """Environment for the gateway and the CLI: the session's database, a fixed master key."""
    return {
        "RECOVEA_DATABASE_URL": postgres.url,
        "RECOVEA_MASTER_KEY_FILE": str(workdir / "master.key"),
    }


def upstream_env(mock: MockServer) -> dict[str, str]:
    return {
        "RECOVEA_UPSTREAM_OPENAI": mock.url,
        "RECOVEA_UPSTREAM_ANTHROPIC": mock.url,
        "RECOVEA_UPSTREAM_OPENROUTER": f"{mock.url}/api",
    }


@pytest.fixture(scope="session")
def gateway(mock: MockServer, workdir: Path, db_env: dict[str, str]) -> Iterator[Gateway]:
    """A gateway in passthrough mode in front of the mock, shared by the session."""
    gw = Gateway({**upstream_env(mock), **db_env}, workdir)
    yield gw
    gw.stop()


@pytest.fixture
def start_gateway(
    mock: MockServer, workdir: Path, db_env: dict[str, str]
) -> Iterator[Callable[..., Gateway]]:
    """Start a dedicated gateway with extra environment; stopped after the test."""
    started: list[Gateway] = []

    def start(**env: str) -> Gateway:
        gw = Gateway({**upstream_env(mock), **db_env, **env}, workdir)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


class SdkClients:
    """Official SDK clients pointed at a base URL, closed when the test ends."""

    def __init__(self) -> None:
        self._opened: list[openai.OpenAI | anthropic.Anthropic] = []

    def openai(self, base_url: str, api_key: str = FAKE_OPENAI_KEY) -> openai.OpenAI:
        client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
        self._opened.append(client)
        return client

    def anthropic(self, base_url: str, api_key: str = FAKE_ANTHROPIC_KEY) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=base_url, api_key=api_key, max_retries=0)
        self._opened.append(client)
        return client

    def close(self) -> None:
        for client in self._opened:
            client.close()


@pytest.fixture
def sdk() -> Iterator[SdkClients]:
    clients = SdkClients()
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def litellm() -> Iterator[ModuleType]:
    """The LiteLLM SDK, imported with its own downloads (cost map, tokenizers) turned off."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        patch.setenv("LITELLM_OFFLINE_MODE", "true")
        import litellm

        yield litellm


@pytest.fixture(scope="module")
def node_sdks() -> Path:
    """tests/node with the official Node SDKs installed (tests using it: `needs_node`)."""
    return install_node_sdks()


@pytest.fixture(scope="session", autouse=True)
def no_key_leaks(workdir: Path) -> Iterator[None]:
    # Depends on `workdir` so that it is torn down first: the gateway logs it reads
    # live there, and are gone once `workdir` is removed.
    """After the whole suite: no provider key sent to the CLI appears in any output,
    and no rcv_ key appears anywhere but in the one output that created it."""
    yield
    import re

    from tests.support import CLI_RUNS, GATEWAY_LOGS

    logs = "\n".join(p.read_text(errors="replace") for p in GATEWAY_LOGS if p.exists())
    provider_secrets = [stdin.strip() for _, stdin, _ in CLI_RUNS if stdin and stdin.strip()]
    created: list[tuple[int, str]] = []
    for index, (_, _, output) in enumerate(CLI_RUNS):
        created += [
            (index, key) for key in re.findall(r"rcv_(?:live|test)_[A-Za-z0-9_-]{43}", output)
        ]
    leaks = [s[-4:] for s in provider_secrets if s in logs]
    leaks += [s[-4:] for s in provider_secrets for _, _, out in CLI_RUNS if s in out]
    leaks += [k[-4:] for _, k in created if k in logs]
    leaks += [
        k[-4:] for i, k in created for j, (_, _, out) in enumerate(CLI_RUNS) if j != i and k in out
    ]
    for fixed in (FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY):
        if fixed in logs:
            leaks.append(fixed[-4:])
    assert not leaks, f"full keys found in output (last four shown): {sorted(set(leaks))}"


@pytest.fixture
def signer() -> Signer:
    """A fresh Ed25519 receipt signer (for the verifier's tests)."""
    return Signer()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session (a test that kills it starts it again)."""
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    """A server that accepts connections and never answers (a Redis that hangs)."""
    server = SilentServer()
    yield server
    server.close()
