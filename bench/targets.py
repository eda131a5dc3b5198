"""What the bench measures: the ways a client reaches the mock provider.

A target is a command line and its environment; `bench.run` appends
`--host 127.0.0.1 --port P` and, for the gateway, its own `RECOVEA_DATA_DIR`.
A gateway variant (metering on, a lever on, auth) is one more `gateway(...)`
line in `targets()`, with the environment that turns the feature on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

Setup = Callable[[dict[str, str]], str]


@dataclass(frozen=True)
class Target:
    """A way to reach the mock: `argv` None means the load generator calls it directly."""

    name: str
    argv: list[str] | None
    env: dict[str, str] = field(default_factory=dict)
    #: answers 200 when the target is ready; None: poll a TCP connect instead
    ready_path: str | None = None
    #: prepares the target's data (given its environment); returns the API key to send
    setup: Setup | None = None
    #: writes the gateway's JSON request log to its output (`bench.lever_log` reads it)
    request_log: bool = False
    #: the arguments that make it listen on a port (None: `--host 127.0.0.1 --port P`)
    listen: Callable[[int], list[str]] | None = None
    #: more headers on every request (a peer's routing headers)
    headers: dict[str, str] = field(default_factory=dict)
    #: the body every request of this target sends, whatever the mode (None: the mode's)
    body: str | None = None
    #: the model a slow stream asks for (a peer that cannot pass the mock's delay
    #: header on serves it from a second mock whose streams are slow by default)
    slow_model: str | None = None

    def listen_argv(self, port: int) -> list[str]:
        """What to append to `argv` so that it listens on 127.0.0.1:`port`."""
        if self.listen is not None:
            return self.listen(port)
        return ["--host", "127.0.0.1", "--port", str(port)]


def targets(mock_url: str) -> list[Target]:
    """Every target, in the order they are run and reported."""
    return [
        Target("direct", None),
        Target("floor", [sys.executable, "-m", "bench.floor", "--upstream", mock_url]),
        gateway("gateway", mock_url),
        gateway("gateway-auth", mock_url, {"RECOVEA_PASSTHROUGH": "off"}, setup=workspace_key),
        # the same with the workspace's levers off (cache policy `off`: no chain runs):
        # what gateway-auth's levers cost a request that shares nothing
        gateway("gateway-nolevers", mock_url, {"RECOVEA_PASSTHROUGH": "off"}, setup=no_levers_key),
        gateway("gateway-limited", mock_url, {"RECOVEA_PASSTHROUGH": "off"}, setup=limited_key),
        gateway("gateway-capped", mock_url, {"RECOVEA_PASSTHROUGH": "off"}, setup=capped_key),
        gateway(
            "gateway-everything", mock_url, {"RECOVEA_PASSTHROUGH": "off"}, setup=everything_key
        ),
        # the same, with receipts signed as checkpoints rather than one by one
        gateway(
            "gateway-everything-cp",
            mock_url,
            {"RECOVEA_PASSTHROUGH": "off", "RECOVEA_RECEIPT_SIGNING": "checkpoint"},
            setup=everything_key,
        ),
    ]


def gateway(
    name: str, mock_url: str, env: dict[str, str] | None = None, setup: Setup | None = None
) -> Target:
    """`recovea serve` in passthrough mode in front of the mock, `env` on top."""
    base = {
        "RECOVEA_UPSTREAM_OPENAI": mock_url,
        "RECOVEA_UPSTREAM_ANTHROPIC": mock_url,
        "RECOVEA_PASSTHROUGH": "on",
        "RECOVEA_LOG_FORMAT": "json",
    }
    return Target(
        name,
        [sys.executable, "-m", "recovea_proxy", "serve"],
        {**base, **(env or {})},
        ready_path="/readyz",
        setup=setup,
        request_log=True,
    )


def at_ref(ref: str, mock_url: str, checkout: Path, levers: str = "on") -> Target:
    """gateway-auth as `checkout`, another checkout of the project at `ref` (`bench.run
    --against REF`): `gateway-auth@REF`; with `levers` `off` (`--against-levers off`)
    its workspace's levers are off, as gateway-nolevers: `gateway-nolevers@REF`, that
    commit's gateway without the levers."""
    levers_off = levers == "off"
    name = f"gateway-{'nolevers' if levers_off else 'auth'}@{ref}"
    command = [sys.executable, "-m", "bench.at_ref", str(checkout)]
    return Target(
        name,
        [*command, "serve"],
        {**gateway(name, mock_url).env, "RECOVEA_PASSTHROUGH": "off"},
        ready_path="/readyz",
        setup=lambda env: workspace_key(env, command, levers_off=levers_off),
        request_log=True,
    )


def everything_key(env: dict[str, str]) -> str:
    """`workspace_key` with every lever and guard on: limits and caps far away (as
    gateway-limited and gateway-capped), the exact cache and singleflight on (policy
    `deterministic`: the bench's temperature-0 bodies are shareable), slim on, and a
    routing rule that matches every request (gpt-4o-mini → gpt-4o, which the mock serves)."""
    far = ("--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "1000000")
    return workspace_key(env, limit=far, capped=True, levers=True)


def no_levers_key(env: dict[str, str], name: str = "bench") -> str:
    """`workspace_key` in a workspace whose cache policy is `off`: neither the cache nor
    singleflight (nor any other lever) runs for its requests."""
    return workspace_key(env, levers_off=True, name=name)


def capped_key(env: dict[str, str]) -> str:
    """As `workspace_key`, under a workspace spend cap and a key cap far away (USD
    1,000,000 a month each): what a cap costs when it never binds."""
    return workspace_key(env, capped=True)


def workspace_key(
    env: dict[str, str],
    command: list[str] | None = None,
    *,
    limit: tuple[str, ...] = (),
    capped: bool = False,
    levers: bool = False,
    levers_off: bool = False,
    name: str = "bench",
) -> str:
    """A workspace (`name`) with an OpenAI provider key and an rcv_ key, made with the
    CLI (`command`: how to run it, by default this checkout's)."""
    cli = command or [sys.executable, "-m", "recovea_proxy"]

    def recovea(*args: str, stdin: str | None = None) -> dict[str, str]:
        done = subprocess.run(
            [*cli, *args, "--json"],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=True,
            timeout=120,
        )
        result: dict[str, str] = orjson.loads(done.stdout)
        return result

    workspace = recovea("workspace", "create", name)["workspace_id"]
    recovea(
        "provider-key",
        "set",
        "--workspace",
        workspace,
        "--provider",
        "openai",
        stdin="sk-bench-provider-0000000000\n",
    )
    if limit:
        recovea("limit", "set", "--workspace", workspace, *limit)
    created = recovea("key", "create", "--workspace", workspace)
    if capped:
        far = ("--usd", "1000000", "--period", "month")
        recovea("cap", "set", "--workspace", workspace, *far)
        recovea("cap", "set", "--workspace", workspace, "--key", created["key_id"], *far)
    if levers_off:
        recovea("cache", "set", "--workspace", workspace, "--policy", "off")
    if levers:
        recovea("cache", "set", "--workspace", workspace, "--policy", "deterministic")
        recovea("slim", "set", "--workspace", workspace, "on")
        recovea(
            "route",
            "add",
            "--workspace",
            workspace,
            "--match-model",
            "gpt-4o-mini",
            "--to",
            "gpt-4o",
            "--match-path",
            "/v1/chat/completions",
        )
    return created["key"]


def limited_key(env: dict[str, str]) -> str:
    """`workspace_key`, with rpm, tpm and concurrency limits on the workspace that the
    bench never comes near: what the limits cost when they admit everything."""
    far = ("--rpm", "1000000000", "--tpm", "1000000000000", "--concurrency", "1000000")
    return workspace_key(env, limit=far)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the embedded Postgres a gateway started in `data_dir`, if any."""
    # Read here rather than imported from recovea_proxy.store.embedded, so that the
    # bench still runs (and reports the gateway as skipped) when the gateway is broken.
    try:
        return int((data_dir / "pg" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def stop_embedded_postgres(data_dir: Path, deadline_s: float = 10.0) -> None:
    """Stop the embedded Postgres a target started (it outlives the gateway): a fast
    shutdown, waited for until the deadline."""
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    end = time.monotonic() + deadline_s
    while _alive(pid) and time.monotonic() < end:
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """`pid` exists and is not a zombie (a container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
