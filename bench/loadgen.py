"""The load generator: POSTs chat bodies again and again and times each response.

Two shapes of load:

- closed loop (default): C clients, each sending its next request as soon as the
  last one was read in full, for N requests in total or for D seconds;
- open loop (`--rate R`): a request starts every 1/R s whatever is in flight;
  latency counts from when the request was due, so a slow server cannot hide
  its queueing (no coordinated omission). Beyond `--max-in-flight` a due
  request is counted as dropped instead of sent.

With `--burst B` requests go out B at a time, identical: in closed loop each client
sends B at once and waits for all of them; in open loop B are due together, every
B/R s. The bodies (`--body`), built here so that the target pays nothing for them:

- `plain`: one ~400-byte chat request, no `temperature` (the default);
- `cache-miss`: the same with `temperature` 0 and a prompt ending in a mark no other
  request of any run repeats (this process's random nonce and a counter), a new one
  per request, or per burst;
- `cache-hit`: the same with `temperature` 0 and one fixed prompt, every time.

Every body of a run has the same length.

A response counts as a success when its status is 200 and, for a stream, it
ends with `data: [DONE]` (before a gateway's closing receipt line). It runs in its
own process so its CPU never counts against the proxy under test, and prints one
JSON object of numbers:
requests, ok, errors, dropped, seconds, rps, p50_ms, p90_ms, p99_ms, max_ms, and for
streams the time from sending a request to the first byte of its body
(ttfb_p50_ms, ttfb_p90_ms, ttfb_p99_ms) and the most responses open at once
(open_peak: headers received, body not yet ended).

    python -m bench.loadgen --url http://127.0.0.1:8080/v1/chat/completions \
        --requests 2000 --concurrency 16 [--stream] [--rate 500] [--duration 10]
        [--body plain|cache-miss|cache-hit] [--burst 20] [--chunk-delay-ms 10]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import orjson
import uvloop

Fire = Callable[[bytes], Awaitable[bool]]
_DONE = b"data: [DONE]"
_RECEIPT = b"\n: recovea-receipt-v1 "


@dataclass
class Tally:
    """What one run saw: latencies of successful requests (s), failures, drops."""

    latencies: list[float] = field(default_factory=list)
    #: time to the first byte of the body (streams only)
    first_bytes: list[float] = field(default_factory=list)
    errors: int = 0
    dropped: int = 0
    #: responses whose headers came and whose body has not ended, now and at most
    open_now: int = 0
    open_peak: int = 0

    def add(self, ok: bool, seconds: float) -> None:
        if ok:
            self.latencies.append(seconds)
        else:
            self.errors += 1


BODIES = ("plain", "cache-miss", "cache-hit")
_PROMPT = "benchmark prompt " * 20
_MARK = "@@mark@@"


def chat_body(
    stream: bool,
    include_usage: bool,
    kind: str = "plain",
    mark: str = "",
    model: str = "gpt-4o-mini",
) -> bytes:
    """A ~400-byte chat completion request, like a short real prompt; `cache-*` kinds
    ask for `temperature` 0 (shareable under the default cache policy) and end the
    prompt with `mark`."""
    doc: dict[str, object] = {
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": _PROMPT + mark}],
    }
    if kind != "plain":
        doc["temperature"] = 0
    if include_usage:
        doc["stream_options"] = {"include_usage": True}
    return orjson.dumps(doc)


def make_fire(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    stream: bool,
    tally: Tally | None = None,
) -> Fire:
    """One request with the given body, read to its end; True when it succeeded. With
    a `tally`, a stream's time to first byte is recorded and open responses counted."""

    async def fire(body: bytes) -> bool:
        started = time.perf_counter()
        try:
            async with session.post(url, data=body, headers=headers) as response:
                if tally is None or not stream:
                    payload = await response.read()
                else:
                    tally.open_now += 1
                    tally.open_peak = max(tally.open_peak, tally.open_now)
                    try:
                        parts = [await response.content.readany()]
                        first = time.perf_counter() - started
                        parts.append(await response.read())
                    finally:
                        tally.open_now -= 1
                    payload = b"".join(parts)
                    if response.status == 200:
                        tally.first_bytes.append(first)
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False
        if response.status != 200:
            return False
        if not stream:
            return True
        end = payload.rfind(_RECEIPT)  # a gateway's stream ends with its receipt line
        return payload[: end if end >= 0 else None].rstrip().endswith(_DONE)

    return fire


def bodies(
    kind: str, stream: bool, include_usage: bool, model: str = "gpt-4o-mini"
) -> Callable[[], bytes]:
    """The body of each next request (or burst) of a run."""
    if kind == "plain":
        plain = chat_body(stream, include_usage, model=model)
        return lambda: plain
    if kind == "cache-hit":
        fixed = chat_body(stream, include_usage, kind, " #" + "0" * 24, model)
        return lambda: fixed
    if kind != "cache-miss":
        raise ValueError(f"unknown body {kind!r}")
    # A template split around the mark: a request costs one join, not a JSON encode.
    head, tail = chat_body(stream, include_usage, kind, _MARK, model).split(_MARK.encode())
    nonce = os.urandom(6).hex().encode()  # apart from every other run's
    count = 0

    def unique() -> bytes:
        nonlocal count
        count += 1
        return b"".join((head, b" #", nonce, b"%012d" % count, tail))

    return unique


async def closed_loop(
    fire: Fire,
    body: Callable[[], bytes],
    concurrency: int,
    requests: int | None,
    duration: float | None,
    burst: int = 1,
    tally: Tally | None = None,
) -> Tally:
    """`concurrency` clients back to back until `requests` are sent or `duration` is
    over; each sends `burst` identical requests at once and waits for all of them."""
    tally = tally or Tally()
    remaining = requests if requests is not None else math.inf
    end = time.perf_counter() + duration if duration is not None else math.inf

    async def timed(payload: bytes, started: float) -> None:
        ok = await fire(payload)
        tally.add(ok, time.perf_counter() - started)

    async def client() -> None:
        nonlocal remaining
        while remaining > 0 and time.perf_counter() < end:
            ways = int(min(burst, remaining))
            remaining -= ways
            payload = body()
            started = time.perf_counter()
            if ways == 1:
                await timed(payload, started)
            else:
                await asyncio.gather(*(timed(payload, started) for _ in range(ways)))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return tally


async def open_loop(
    fire: Fire,
    body: Callable[[], bytes],
    rate: float,
    requests: int | None,
    duration: float | None,
    max_in_flight: int,
    burst: int = 1,
    tally: Tally | None = None,
) -> Tally:
    """One request due every 1/`rate` s (or `burst` identical ones every `burst`/`rate`
    s), until `requests` are due or `duration` is over."""
    tally = tally or Tally()
    in_flight: set[asyncio.Task[None]] = set()

    async def timed(payload: bytes, due: float) -> None:
        ok = await fire(payload)
        tally.add(ok, time.perf_counter() - due)

    start = time.perf_counter()
    sent = 0
    while requests is None or sent < requests:
        due = start + sent / rate
        if duration is not None and due - start >= duration:
            break
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)  # pacing the schedule, not waiting on anything
        payload = body()
        ways = burst if requests is None else min(burst, requests - sent)
        for _ in range(ways):
            if len(in_flight) >= max_in_flight:
                tally.dropped += 1
            else:
                task = asyncio.create_task(timed(payload, due))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
        sent += ways
    await asyncio.gather(*in_flight)
    return tally


def summarize(tally: Tally, seconds: float) -> dict[str, float]:
    """Counts, throughput and latency percentiles (nearest rank) of a run."""
    done = sorted(tally.latencies)

    def pct(p: float) -> float:
        return done[max(0, math.ceil(p * len(done)) - 1)] * 1000 if done else 0.0

    firsts = sorted(tally.first_bytes)

    def first(p: float) -> float:
        return firsts[max(0, math.ceil(p * len(firsts)) - 1)] * 1000 if firsts else 0.0

    return {
        "ttfb_p50_ms": first(0.50),
        "ttfb_p90_ms": first(0.90),
        "ttfb_p99_ms": first(0.99),
        "open_peak": tally.open_peak,
        "requests": len(done) + tally.errors,
        "ok": len(done),
        "errors": tally.errors,
        "dropped": tally.dropped,
        "seconds": seconds,
        "rps": len(done) / seconds if seconds else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": done[-1] * 1000 if done else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, float]:
    """The run `args` describe (see `main`), summarized."""
    headers = {
        "authorization": f"Bearer {args.key}",
        "content-type": "application/json",
        "x-mock-chunks": str(args.chunks),
    }
    for header in args.header:
        name, _, value = header.partition(":")
        headers[name.strip().lower()] = value.strip()
    if args.chunk_delay_ms:
        headers["x-mock-chunk-delay-ms"] = f"{args.chunk_delay_ms:g}"
    requests: int | None = args.requests
    if requests is None and args.duration is None:
        requests = 2000
    limit = args.concurrency * args.burst if args.rate is None else 0
    body = bodies(args.body, args.stream, args.include_usage, args.model)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=args.timeout),
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
    ) as session:
        tally = Tally()
        fire = make_fire(session, args.url, headers, args.stream, tally)
        began = time.perf_counter()
        if args.rate is None:
            await closed_loop(
                fire, body, args.concurrency, requests, args.duration, args.burst, tally
            )
        else:
            await open_loop(
                fire,
                body,
                args.rate,
                requests,
                args.duration,
                args.max_in_flight,
                args.burst,
                tally,
            )
        return summarize(tally, time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--url", required=True, help="the chat completions URL")
    parser.add_argument("--requests", type=int, help="requests in total (default 2000)")
    parser.add_argument("--duration", type=float, help="seconds to run instead of a count")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients")
    parser.add_argument("--rate", type=float, help="open loop: requests per second")
    parser.add_argument("--max-in-flight", type=int, default=10_000, help="open-loop cap")
    parser.add_argument("--stream", action="store_true", help='send "stream": true')
    parser.add_argument("--chunks", type=int, default=16, help="x-mock-chunks for the mock")
    parser.add_argument("--include-usage", action="store_true", help="ask for stream usage")
    parser.add_argument(
        "--body", choices=BODIES, default="plain", help="plain, or temperature 0 for the cache"
    )
    parser.add_argument(
        "--burst", type=int, default=1, help="identical requests sent at once (default 1)"
    )
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0, help="x-mock-chunk-delay-ms for the mock"
    )
    parser.add_argument(
        "--header", action="append", default=[], help="one more request header, NAME: VALUE"
    )
    parser.add_argument("--model", default="gpt-4o-mini", help="the body's model")
    parser.add_argument("--key", default="sk-bench-0000000000000000", help="API key to send")
    parser.add_argument("--timeout", type=float, default=60, help="per-request timeout (s)")
    args = parser.parse_args()
    if args.burst < 1:
        parser.error("--burst must be at least 1")
    print(orjson.dumps(uvloop.run(run(args))).decode())


if __name__ == "__main__":
    main()
