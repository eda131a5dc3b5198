"""Shared pieces of the `recovea verify-receipt` CLI tests: the command as a subprocess,
and the files most tests start from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.receipt_support import CHAT_JSON, REPO, REQUEST, Signer, keys_doc


def write_files(tmp_path: Path, signer: Signer) -> dict[str, Path]:
    """A keys file with the signer's key (and a retired one), a request and a response."""
    paths = {name: tmp_path / name for name in ("keys.json", "request.json", "response.json")}
    doc = keys_doc(Signer().entry(retired=True), signer.entry())
    paths["keys.json"].write_text(json.dumps(doc))
    paths["request.json"].write_bytes(REQUEST)
    paths["response.json"].write_bytes(CHAT_JSON)
    return paths


def cli(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m recovea_proxy.meter.verify_cli ARGS`, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "recovea_proxy.meter.verify_cli", *map(str, args)],
        capture_output=True,
        text=True,
        input=stdin,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
