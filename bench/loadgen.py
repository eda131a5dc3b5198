"""A closed-loop load generator: C concurrent clients send N requests in total.

Runs in its own process so its CPU never counts against the proxy under test.
Prints one JSON object: requests, errors, seconds, rps, p50_ms, p99_ms.

    python -m bench.loadgen --url http://127.0.0.1:8080/v1/chat/completions \
        --requests 2000 --concurrency 16 [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import orjson
import uvloop


async def run(
    url: str,
    requests: int,
    concurrency: int,
    stream: bool,
    chunks: int,
    include_usage: bool = False,
    key: str = "sk-bench-0000000000000000",
) -> dict[str, float]:
    doc: dict[str, object] = {
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "benchmark prompt " * 20}],
    }
    if include_usage:
        doc["stream_options"] = {"include_usage": True}
    body = orjson.dumps(doc)
    headers = {
        "authorization": f"Bearer {key}",
        "content-type": "application/json",
        "x-mock-chunks": str(chunks),
    }
    latencies: list[float] = []
    errors = 0
    remaining = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status != 200:
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": seconds,
        "rps": len(latencies) / seconds if seconds else 0.0,
        "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else 0.0,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
        if latencies
        else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--include-usage", action="store_true", help="ask for stream usage")
    parser.add_argument("--key", default="sk-bench-0000000000000000", help="API key to send")
    args = parser.parse_args()
    result = uvloop.run(
        run(
            args.url,
            args.requests,
            args.concurrency,
            args.stream,
            args.chunks,
            args.include_usage,
            args.key,
        )
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
