"""`recovea verify-receipt --ledger URL` against a gateway that never stops: a ledger
that answers `has_more` forever, or says it has more on an empty page, ends the
command with exit 2 and one line, after a bounded number of requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from recovea_proxy.meter.verify_fetch import MAX_PAGES
from tests.receipt_support import REPO, Signer, chain_payloads, export

CHAIN = "a" * 32


class EndlessLedger(ThreadingHTTPServer):
    """A ledger API whose every page says there is more: one receipt a page, or none."""

    daemon_threads = True

    def __init__(self, page_size: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.page_size = page_size
        self.requests = 0
        self.token = Signer().token(chain_payloads(Signer(), 1)[0])


class _Handler(BaseHTTPRequestHandler):
    server: EndlessLedger

    def do_GET(self) -> None:
        self.server.requests += 1
        after = int(parse_qs(urlsplit(self.path).query)["after_seq"][0])
        page: dict[str, Any] = export(
            [self.server.token] * self.server.page_size, start=after + 1, last_seq=10**12
        )
        page.update(has_more=True, next_after_seq=after + 1)
        body = json.dumps(page).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Quiet: the test reads the request count, not the log."""


@pytest.fixture
def endless(request: pytest.FixtureRequest) -> Iterator[EndlessLedger]:
    server = EndlessLedger(page_size=request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def verify_against(server: EndlessLedger, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": []}))
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/recovea/ledger?chain={CHAIN}"
    command = ["-m", "recovea_proxy.meter.verify_cli", "--ledger", url, "--keys", str(keys)]
    return subprocess.run(
        [sys.executable, *command],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "RECOVEA_API_KEY": "rcv_test"},
        timeout=120,
    )


@pytest.mark.parametrize("endless", [1], indirect=True)
def test_a_ledger_that_always_has_more_stops_at_the_page_bound(
    endless: EndlessLedger, tmp_path: Path
) -> None:
    done = verify_against(endless, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"more than {MAX_PAGES} pages" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert endless.requests == MAX_PAGES


@pytest.mark.parametrize("endless", [0], indirect=True)
def test_an_empty_page_that_says_it_has_more_is_refused_at_once(
    endless: EndlessLedger, tmp_path: Path
) -> None:
    done = verify_against(endless, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "empty page" in done.stderr
    assert endless.requests == 1
