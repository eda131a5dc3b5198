"""The official Node SDKs (openai, @anthropic-ai/sdk), installed from npm into
tests/node on first use, and a runner for the scripts there. Without node/npm the
tests that use them are skipped."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

NODE_DIR = Path(__file__).parent / "node"

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node/npm not installed"
)


def install_node_sdks() -> Path:
    """tests/node with its packages installed (the `node_sdks` fixture of conftest.py).
    One install at a time: test modules on other xdist workers may want it at once."""
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (NODE_DIR / "node_modules" / "@anthropic-ai" / "sdk").exists():
            subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=NODE_DIR,
                check=True,
                timeout=300,
                capture_output=True,
            )
    return NODE_DIR


def run_node(node_dir: Path, script: str, *args: str) -> Any:
    """Run a script of tests/node; what it printed, as JSON (it must exit 0)."""
    out = subprocess.run(["node", script, *args], cwd=node_dir, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return orjson.loads(out.stdout)
