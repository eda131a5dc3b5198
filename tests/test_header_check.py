"""The gateway's check of response header values refuses exactly what uvicorn's own
regex refuses, and is what uvicorn runs once the app is built."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

from recovea_proxy import header_check

UVICORN_RULE = re.compile(header_check.PATTERN)


def _values() -> list[bytes]:
    """Every byte, alone and at the start, middle and end of short and long values."""
    out = []
    for byte in range(256):
        one = bytes([byte])
        for filler in (b"", b"a" * 10, b"Zm9vYmFy" * 40):  # short, and a receipt-sized value
            out += [one + filler, filler + one, filler + one + filler, filler + one * 3]
    return out


def test_refuses_exactly_what_uvicorn_refuses() -> None:
    check = header_check.ControlCharacterCheck(UVICORN_RULE)
    refused = 0
    for value in _values():
        expected = UVICORN_RULE.search(value) is not None
        assert bool(check.search(value)) is expected, value[:20]
        refused += expected
    assert refused == 32 * 12  # 0x00-0x08, 0x0a-0x1f and 0x7f, in every placement
    assert not check.search(b"\t".join([b"x" * 100] * 3))  # tab is allowed


def test_installed_only_over_the_known_rule() -> None:
    other = types.ModuleType("other")
    other.HEADER_VALUE_RE = re.compile(b"[\x00-\x1f]")  # type: ignore[attr-defined]
    assert header_check.install(other) is False
    assert isinstance(other.HEADER_VALUE_RE, re.Pattern)  # type: ignore[attr-defined]
    missing = types.ModuleType("missing")
    assert header_check.install(missing) is False


def test_building_the_app_installs_it(tmp_path: Path) -> None:
    probe = (
        "from uvicorn.protocols.http import httptools_impl\n"
        "from recovea_proxy import header_check\n"
        "from recovea_proxy.app import create_app\n"
        "create_app()\n"
        "print(type(httptools_impl.HEADER_VALUE_RE).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "RECOVEA_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "ControlCharacterCheck"
