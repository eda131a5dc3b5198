"""What the levers add to one request, piece by piece, in CPU µs on this machine
(in-process, best of five timed loops): the chain on a request it skips, the usage
snapshot the chain takes before each lever, the cache key, the chain on a miss, a whole
plain request and a whole miss (the chain, then the answer's start, body and end as
the pipe gives them to the observers, the answer stored, the leader's exit), and a
leader reading its own upstream response through a flight against reading it
directly (over a stand-in response whose chunks arrive one loop turn apart, as
separate reads from a socket do).

    python -m bench.lever_costs [--loops N]

Under callgrind the same loops give instructions: run it twice with different
`--loops` and divide the difference of the totals by the difference of the loops
(`valgrind --tool=callgrind python -m bench.lever_costs --loops 2000 --only "16 chunks"
--no-collector`). `--no-collector` turns the garbage collector off for the loops: each
loop builds its requests first, and a collection that lands in one of the two counts
and not the other (or walks the prebuilt requests more often because a change keeps
one more object a miss) is noise to that difference.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import uvloop

from recovea_proxy.gc_tuning import settle_after_startup
from recovea_proxy.headers import RequestHeaders
from recovea_proxy.levers.cache import CacheLever
from recovea_proxy.levers.cache_key import key_of
from recovea_proxy.levers.cache_store import MemoryStore
from recovea_proxy.levers.chain import LeverChain, LeverRequest
from recovea_proxy.levers.chain import snapshot as take_snapshot
from recovea_proxy.levers.flights import FlightRegistry
from recovea_proxy.levers.routing import RoutingLever
from recovea_proxy.levers.slim import SlimLever
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.policy import DEFAULT_POLICY, LeverPolicy
from recovea_proxy.record import RequestRecord
from recovea_proxy.route_table import RouteTable, Rule
from recovea_proxy.sources import ReplayPlan, ReplaySource, UpstreamSource
from recovea_proxy.surfaces import SurfaceMap

_PLAIN: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "stream": True,
    "messages": [{"role": "user", "content": "benchmark prompt " * 20}],
}
_CHUNK = b"data: " + b"x" * 120 + b"\n\n"
#: a tool's answer, as tools often return it: a few records, pretty-printed
_TOOL_RESULT = {"rows": [{"id": i, "name": f"item {i}", "price": i * 1.25} for i in range(20)]}
#: n calls of a piece; returns the CPU seconds they took (set-up left out)
Work = Callable[[int], Awaitable[float]]
_SURFACE = SurfaceMap().resolve(b"/v1/chat/completions")


class _Content:
    """A response body whose chunks arrive one loop turn apart."""

    def __init__(self, chunks: int) -> None:
        self._left = chunks

    async def readany(self) -> bytes:
        if self._left == 0:
            return b""
        self._left -= 1
        await asyncio.sleep(0)
        return _CHUNK


class _Response:
    """What `UpstreamSource` reads of an aiohttp response."""

    status = 200
    raw_headers = ((b"Content-Type", b"text/event-stream"),)
    headers = {"content-type": "text/event-stream"}
    content_length = None
    connection = None

    def __init__(self, chunks: int) -> None:
        self.content = _Content(chunks)

    def release(self) -> None:
        return None

    def close(self) -> None:
        return None


#: a workspace with 50 rules, one of them for the benchmark's model
_ROUTED = LeverPolicy(
    routing=True,
    routes=RouteTable(
        [Rule(f"r{i}", f"model-{i}", "gpt-4.1-nano", feature=f"f{i % 3}") for i in range(48)]
        + [
            Rule("hit", "gpt-4o-mini", "gpt-4.1-nano", fallbacks=("gpt-4.1-mini",)),
            Rule("bulk", "gpt-4o-mini", "gpt-4.1-mini", feature="bulk", env="live"),
        ]
    ),
)


def _request(parsed: dict[str, Any], policy: LeverPolicy = DEFAULT_POLICY) -> LeverRequest:
    record = RequestRecord("a" * 32, "b" * 32, 0, 0)
    record.method = "POST"
    record.workspace_id = "ws-bench"
    assert _SURFACE is not None
    record.provider = _SURFACE.provider.name
    record.route = _SURFACE.route
    record.env = "live"
    headers = RequestHeaders([("accept-encoding", "identity")])
    return LeverRequest(record, _SURFACE, headers, orjson.dumps(parsed), parsed, policy)


def pieces() -> dict[str, Work]:
    """Each piece as a loop of n calls."""
    store = MemoryStore(1 << 30)
    flights = FlightRegistry(buffer_max_bytes=8 << 20, followers_max=100)
    cache = CacheLever(
        store,
        flights,
        policy="deterministic",
        ttl_s=3600,
        entry_max_bytes=4 << 20,
        tool_calls=False,
        stats=flights.stats,
    )
    chain = LeverChain((cache,), GatewayMetrics())
    plain = _request(_PLAIN)

    async def skipped(n: int) -> float:
        requests = [_request(_PLAIN) for _ in range(n)]
        started = time.process_time()
        for request in requests:
            if (pending := chain.start(request)) is not None:
                await pending
        return time.process_time() - started

    seeds = itertools.count()  # no two misses alike, over every loop (a repeat would join)

    async def missed(n: int) -> float:
        requests = [_request({**_PLAIN, "temperature": 0, "seed": next(seeds)}) for _ in range(n)]
        started = time.process_time()
        for request in requests:
            if (pending := chain.start(request)) is not None:
                await pending
        return time.process_time() - started

    async def snapshot(n: int) -> float:
        started = time.process_time()
        for _ in range(n):
            take_snapshot(plain)
        return time.process_time() - started

    async def key(n: int) -> float:
        shared = {**_PLAIN, "temperature": 0}
        started = time.process_time()
        for _ in range(n):
            key_of("ws-bench", "POST", "openai", "/v1/chat/completions", shared)
        return time.process_time() - started

    routing = RoutingLever()
    routed_chain = LeverChain((routing, cache), GatewayMetrics())

    def route(model: str, whole_chain: bool) -> Work:
        async def loop(n: int) -> float:
            requests = [_request({**_PLAIN, "model": model}, _ROUTED) for _ in range(n)]
            started = time.process_time()
            for request in requests:
                if whole_chain:
                    if (pending := routed_chain.start(request)) is not None:
                        await pending
                else:
                    routing.before(request)
            return time.process_time() - started

        return loop

    slim = SlimLever(GatewayMetrics())
    tool_turn = {
        **_PLAIN,
        "temperature": None,
        "messages": [
            *_PLAIN["messages"],
            {"role": "tool", "tool_call_id": "call_1", "content": orjson.dumps(_TOOL_RESULT,
             option=orjson.OPT_INDENT_2).decode()},
        ],
    }  # fmt: skip

    def slimmed(parsed: dict[str, Any]) -> Work:
        async def loop(n: int) -> float:
            requests = [_request(copy.deepcopy(parsed)) for _ in range(n)]
            started = time.process_time()
            for request in requests:
                slim.before(request)
            return time.process_time() - started

        return loop

    answer = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok " * 40},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70},
        }
    )  # fmt: skip
    answered = ReplaySource(
        200,
        ReplayPlan(
            (
                (b"Content-Type", b"application/json"),
                (b"Content-Length", str(len(answer)).encode()),
                (b"X-Request-Id", b"req_0123456789abcdef"),
                (b"Date", b"Sat, 05 Dec 2026 23:00:00 GMT"),
                (b"Server", b"mock"),
                (b"Openai-Processing-Ms", b"120"),
            )
        ),
        (answer,),
    )

    def whole(shared: bool, stored: bool = True) -> Work:
        """A request from the chain to its end, as the pipe drives the levers' part:
        the observers told the 1-chunk answer's start, fed it, closed; the releases
        run; a leader leaves its flight. With `shared`, a miss (the answer stored,
        unless not `stored`: the flight keeps nothing for the cache)."""

        async def loop(n: int) -> float:
            requests = []
            for _ in range(n):
                parsed = {**_PLAIN, "stream": False, "temperature": 0, "seed": next(seeds)}
                if not shared:
                    del parsed["temperature"], parsed["seed"]
                request = _request(parsed)
                request.record.success = True
                request.record.usage.finish_reason = "stop"
                requests.append(request)
            started = time.process_time()
            for request in requests:
                if (pending := chain.start(request)) is not None:
                    await pending
                if not stored and request.flight is not None:
                    request.flight.keeper = None
                observers = request.observers
                for observer in observers:
                    observer.begin(answered)
                for observer in observers:
                    observer.feed(answer)
                for observer in observers:
                    observer.close()
                for release in request.release:
                    release()
                if request.flight is not None:
                    flights.leader_left(request.flight, answered, clean=True)
            return time.process_time() - started

        return loop

    def read(chunks: int, flight: bool) -> Work:
        async def open_upstream() -> Any:
            return _Response(chunks)

        async def loop(n: int) -> float:
            record = _request(_PLAIN).record
            started = time.process_time()
            for i in range(n):
                upstream = UpstreamSource(await open_upstream(), 60)
                if not flight:
                    upstream.start_body()
                    while await upstream.read():
                        pass
                    upstream.finish(clean=True)
                    continue
                # as the pipe does for a leader: each chunk appended to the flight's
                # buffer inline (`Recorder.intake`), within its room
                shared, _ = flights.lead_or_join(i.to_bytes(8, "big"), record, None)
                shared.begin(upstream)
                upstream.start_body()
                keep, room = shared.intake()
                taken = 0
                while chunk := await upstream.read():
                    if taken + len(chunk) <= room:
                        keep(chunk)
                        taken += len(chunk)
                    else:
                        shared.feed_past(taken, chunk)
                        keep, room = shared.intake()
                        taken = 0
                shared.settle(taken)
                shared.close()
                flights.leader_left(shared, upstream, clean=True)
            return time.process_time() - started

        return loop

    return {
        "chain, both levers skip (a plain request)": skipped,
        "  of which the snapshot the chain takes, per lever": snapshot,
        "chain, cache miss + flight to lead (no upstream yet)": missed,
        "  of which the cache key": key,
        "a plain request, whole (chain, then the answer's end)": whole(shared=False),
        "a miss, whole (chain, flight led, the answer stored)": whole(shared=True),
        "  the same, the answer not stored": whole(shared=True, stored=False),
        "routing lever, a rule matches (plan + body rewritten)": route("gpt-4o-mini", False),
        "routing lever, no rule for the model": route("gpt-4o", False),
        "chain with routing, a rule matches (cache, dedup skip)": route("gpt-4o-mini", True),
        "chain with routing, no rule (cache, dedup skip)": route("gpt-4o", True),
        "slim, nothing to trim (a plain chat body)": slimmed(_PLAIN),
        "slim, a pretty-printed tool result and a null trimmed": slimmed(tool_turn),
        "upstream read, 1 chunk, direct": read(1, flight=False),
        "upstream read, 1 chunk, through a flight it leads": read(1, flight=True),
        "upstream read, 16 chunks, direct": read(16, flight=False),
        "upstream read, 16 chunks, through a flight it leads": read(16, flight=True),
    }


async def per_call_us(work: Work, loops: int) -> float:
    best = float("inf")
    for _ in range(5):
        best = min(best, await work(loops) / loops * 1e6)
    return best


async def main(loops: int, only: str | None, collector: bool) -> None:
    settle_after_startup()  # the gateway's collector settings: kept entries cost collections
    if not collector:
        gc.disable()
    print(f"{'piece':56} cpu µs")
    for name, work in pieces().items():
        if only and only not in name:
            continue
        print(f"{name:56} {await per_call_us(work, loops):7.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.lever_costs")
    parser.add_argument("--loops", type=int, default=3000)
    parser.add_argument("--only", help="only the pieces whose name holds this text")
    parser.add_argument(
        "--no-collector",
        dest="collector",
        action="store_false",
        help="the garbage collector off for the loops (for instruction counts)",
    )
    args = parser.parse_args()
    uvloop.run(main(args.loops, args.only, args.collector))
