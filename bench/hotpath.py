"""What metering and receipts add to one request, operation by operation, in CPU µs
on this machine (in-process, best of several timed loops). Compare the total with
the floor proxy's cpu µs/req from `bench.run` to see their share of the budget.

    python -m bench.hotpath [--loops N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import uuid
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recovea_proxy.meter.event import RouteIds, event_fields, event_row
from recovea_proxy.meter.queue import MeterQueue
from recovea_proxy.meter.receipt_keys import SigningKey
from recovea_proxy.meter.receipts import ReceiptSigner
from recovea_proxy.providers.usage import Usage
from recovea_proxy.record import RequestRecord


def record() -> RequestRecord:
    made = RequestRecord(os.urandom(16).hex(), os.urandom(16).hex(), 0, time.time_ns() // 10**6)
    made.provider, made.route, made.model = "openai", "/v1/chat/completions", "gpt-4o-mini"
    made.workspace_id, made.rcv_key_id, made.env = str(uuid.uuid4()), str(uuid.uuid4()), "live"
    made.usage = Usage(input_tokens=812, output_tokens=93, cached_tokens=512)
    made.success, made.upstream_wait_ns = True, 250_000
    made.end(300_000)
    made.request_sha256 = "0" * 64
    return made


def per_call_us(work: Callable[[], object], loops: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(loops):
            work()
        best = min(best, (time.process_time() - started) / loops * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", type=int, default=5000)
    loops = parser.parse_args().loops
    private = Ed25519PrivateKey.generate()
    signer = ReceiptSigner(SigningKey("rk_bench", private))
    sample = record()
    queue = MeterQueue(10**9, 10**9, lambda: None)
    routes = RouteIds()
    request_body = os.urandom(600).hex().encode()  # a 1.2 KB request
    response_body = os.urandom(800).hex().encode()  # a 1.6 KB response
    rows = {
        "receipt: canonical JSON + Ed25519 (libsodium) + chain + token": lambda: signer.sign(
            sample, "0" * 64
        ),
        "  for comparison: Ed25519 sign alone, cryptography (OpenSSL)": lambda: private.sign(
            b"x" * 600
        ),
        "request_sha256 of the request body": lambda: hashlib.sha256(request_body).hexdigest(),
        "response_sha256 of the response body": lambda: hashlib.sha256(response_body).hexdigest(),
        "ledger row (event_row, route id) + queue put": lambda: queue.put(
            event_row(sample, routes.id_for(sample))
        ),
        "request log fields (existed before metering)": lambda: event_fields(sample),
    }
    print(f"{'operation':66} cpu µs")
    added = 0.0
    for name, work in rows.items():
        cost = per_call_us(work, loops)
        if not name.startswith(" ") and "before" not in name:
            added += cost
        print(f"{name:66} {cost:7.2f}")
    print(f"{'added per request on the hot path (receipt, hashes, row)':66} {added:7.2f}")
    print("(the drainer's share per event: `python -m bench.drain`)")


if __name__ == "__main__":
    main()
