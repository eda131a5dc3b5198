"""The peers in the bench: LiteLLM's proxy and Portkey's open-source gateway, installed
into a cache directory of their own (`.bench-peers/`, git-ignored) and pointed at the
same mock provider as every other target.

- LiteLLM: `litellm[proxy]` from PyPI in a virtualenv the bench creates
  (`.bench-peers/litellm-venv`), run as `litellm --config F --num_workers 1` with a
  master key (it refuses to start without one; the bench's requests send it), no
  database (no `DATABASE_URL`) and `LITELLM_LOCAL_MODEL_COST_MAP=True`. The config
  maps `gpt-4o-mini` to the mock (`openai/…`, `api_base` the mock's `/v1`) and
  `bench-slow` to a second mock whose streams are slow by default: LiteLLM does not
  pass the client's `x-mock-*` headers on, so the slow streams of the memory test ask
  for that model instead.
- Portkey: `@portkey-ai/gateway` from the npm registry, installed with the machine's
  npm into `.bench-peers/portkey`, run as `node build/start-server.js --headless
  --port=P` with the machine's node. Each request names the upstream in its headers
  (`x-portkey-provider: openai`, `x-portkey-custom-host: <mock>/v1`, as its README
  describes) and asks it to pass the mock's control headers on
  (`x-portkey-forward-headers`).

An install that fails raises `PeerUnavailable` with the reason; the bench reports the
peer as skipped and goes on.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.targets import Target

CACHE = Path(__file__).resolve().parent.parent / ".bench-peers"
INSTALL_TIMEOUT_S = 900
#: LiteLLM refuses to start without a master key; the bench's requests carry it
MASTER_KEY = "sk-bench-" + "5f3c9a1e7b2d4c6e8a0f1b3d5c7e9a2b"


class PeerUnavailable(RuntimeError):
    """A peer could not be installed here; the message says why."""


def _run(argv: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        done = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, timeout=INSTALL_TIMEOUT_S
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise PeerUnavailable(f"{' '.join(argv[:3])} … failed ({done.returncode}): {tail}")


def litellm_binary(cache: Path = CACHE) -> Path:
    """LiteLLM's proxy CLI in its own virtualenv, created and installed when missing."""
    venv = cache / "litellm-venv"
    binary = venv / "bin" / "litellm"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    log = cache / "litellm-install.log"
    try:
        _run([sys.executable, "-m", "venv", str(venv)], log)
        _run([str(venv / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], log)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"litellm[proxy] did not install: {exc}") from exc
    if not binary.exists():
        raise PeerUnavailable(f"litellm[proxy] installed no `litellm` command (see {log})")
    return binary


def portkey_script(cache: Path = CACHE) -> Path:
    """Portkey's gateway entry point, installed from npm when missing."""
    where = cache / "portkey"
    script = where / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if script.exists():
        return script
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise PeerUnavailable("no node/npm on PATH for @portkey-ai/gateway")
    where.mkdir(parents=True, exist_ok=True)
    log = cache / "portkey-install.log"
    try:
        argv = [npm, "install", "--no-audit", "--no-fund", "--prefix", ".", "@portkey-ai/gateway"]
        _run(argv, log, cwd=where)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"@portkey-ai/gateway did not install: {exc}") from exc
    if not script.exists():
        raise PeerUnavailable(f"@portkey-ai/gateway has no build/start-server.js (see {log})")
    return script


def litellm_config(mock_url: str, slow_mock_url: str) -> str:
    """LiteLLM's proxy config: the bench's model on the mock, `bench-slow` on the slow
    mock, no database, no callbacks."""
    models = (("gpt-4o-mini", mock_url), ("bench-slow", slow_mock_url))
    lines = ["model_list:"]
    for name, url in models:
        lines += [
            f"  - model_name: {name}",
            "    litellm_params:",
            f"      model: openai/{name}",
            f"      api_base: {url}/v1",
            "      api_key: sk-bench-provider-0000000000",
        ]
    lines += ["litellm_settings:", "  drop_params: true", "  telemetry: false"]
    return "\n".join(lines) + "\n"


def litellm(mock_url: str, slow_mock_url: str, workdir: Path, cache: Path = CACHE) -> Target:
    """LiteLLM's proxy as a target (PeerUnavailable when it cannot be installed)."""
    binary = litellm_binary(cache)
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "litellm.yaml"
    config.write_text(litellm_config(mock_url, slow_mock_url))
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "LITELLM_MASTER_KEY": MASTER_KEY,
    }
    return Target(
        "litellm",
        [str(binary), "--config", str(config), "--num_workers", "1"],
        env,
        ready_path="/health/liveliness",
        setup=lambda env: MASTER_KEY,
        slow_model="bench-slow",
    )


def portkey(mock_url: str, cache: Path = CACHE) -> Target:
    """Portkey's gateway as a target (PeerUnavailable when it cannot be installed)."""
    script = portkey_script(cache)
    node = shutil.which("node") or "node"
    headers = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{mock_url}/v1",
        "x-portkey-forward-headers": "x-mock-chunks,x-mock-chunk-delay-ms",
    }
    return Target(
        "portkey",
        [node, str(script), "--headless"],
        {"NODE_ENV": "production"},
        listen=lambda port: [f"--port={port}"],
        headers=headers,
    )
