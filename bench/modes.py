"""The request modes a bench run measures, and the load generator's command line for
each.

A mode says what the load generator sends: streamed or not, whether the client asks
for usage, which body (`plain`, `cache-miss`, `cache-hit`, see `bench.loadgen`),
and how requests arrive (one at a time, or in bursts of identical ones that overlap).

- `chat`, `chat-stream-16` (16 chunks), `chat-stream-16-usage` (asking for usage):
  today's body, with no `temperature`: not shareable, the gateway's cache lever says
  `skip`;
- `chat-cache-miss`, `chat-stream-16-cache-miss`: `temperature` 0 and a prompt no
  request repeats: every request is shareable and misses (the key is computed, a
  flight led, the answer recorded and stored);
- `chat-cache-hit`, `chat-stream-16-cache-hit`: `temperature` 0 and one fixed prompt:
  after the warm-up's first request every one is a hit, replayed from memory;
- `chat-stream-16-slow`, `chat-stream-16-slow-cache-miss`: a plain stream and a
  missing one whose chunks come 10 ms apart, as a model's tokens do, so that each
  arrives on its own (without a delay the mock's 16 chunks reach the proxy in one or
  two reads, which hides any cost paid per chunk);
- `chat-stream-16-burst-20`: 20 identical plain streams at once, 10 ms between
  chunks: not shareable, 20 upstream calls;
- `chat-stream-16-flight-20`: the same bursts with `temperature` 0 and a new prompt
  per burst: one request leads a flight and 19 join it, one upstream call a burst.

The floor and the direct target have no cache: for them a mode's requests are just
forwarded, which is the "forward" a hit is compared with. `base` names the mode of
today's requests that a lever mode stands beside (a miss beside the plain request of
the same shape; the 20-way flight beside the same bursts of requests that cannot be
shared).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Mode:
    """A kind of request, and how the requests of a run arrive."""

    name: str
    stream: bool
    include_usage: bool = False
    #: what the load generator sends (`bench.loadgen --body`)
    body: str = "plain"
    #: identical requests sent at once (the body changes from burst to burst)
    burst: int = 1
    #: the mock's pause between stream events (x-mock-chunk-delay-ms)
    chunk_delay_ms: float = 0
    #: the mode of today's requests this one is compared with (None: itself)
    base: str | None = None


# Without include_usage the gateway asks upstream for usage itself (and hides it
# again), which the floor does not: the third mode compares like with like.
MODES = (
    Mode("chat", stream=False),
    Mode("chat-stream-16", stream=True),
    Mode("chat-stream-16-usage", stream=True, include_usage=True),
)

#: the mock's pause between events in the slow modes: 16 chunks (and the events
#: around them) 10 ms apart make a stream last ~200 ms
SLOW_CHUNK_DELAY_MS = 10.0
#: 20 requests at once, slow enough that the 19 that follow the first arrive while
#: its call is in flight
FLIGHT_WAYS = 20

LEVER_MODES = (
    Mode("chat-cache-miss", stream=False, body="cache-miss", base="chat"),
    Mode("chat-stream-16-cache-miss", stream=True, body="cache-miss", base="chat-stream-16"),
    Mode("chat-cache-hit", stream=False, body="cache-hit", base="chat"),
    Mode("chat-stream-16-cache-hit", stream=True, body="cache-hit", base="chat-stream-16"),
    Mode("chat-stream-16-slow", stream=True, chunk_delay_ms=SLOW_CHUNK_DELAY_MS),
    Mode(
        "chat-stream-16-slow-cache-miss",
        stream=True,
        body="cache-miss",
        chunk_delay_ms=SLOW_CHUNK_DELAY_MS,
        base="chat-stream-16-slow",
    ),
    Mode(
        f"chat-stream-16-burst-{FLIGHT_WAYS}",
        stream=True,
        burst=FLIGHT_WAYS,
        chunk_delay_ms=SLOW_CHUNK_DELAY_MS,
    ),
    Mode(
        f"chat-stream-16-flight-{FLIGHT_WAYS}",
        stream=True,
        body="cache-miss",
        burst=FLIGHT_WAYS,
        chunk_delay_ms=SLOW_CHUNK_DELAY_MS,
        base=f"chat-stream-16-burst-{FLIGHT_WAYS}",
    ),
)

ALL_MODES = MODES + LEVER_MODES
#: `--modes levers`: today's two modes and the lever modes beside them
NAMED = {
    "default": MODES,
    "levers": (MODES[0], MODES[1], *LEVER_MODES),
    "all": ALL_MODES,
}


def chosen(spec: str | None) -> tuple[Mode, ...]:
    """The modes a `--modes` value names: a comma-separated list of mode names, or one
    of `default`, `levers`, `all` (None: the default three). ValueError for an
    unknown name."""
    if not spec:
        return MODES
    if spec in NAMED:
        return NAMED[spec]
    by_name = {mode.name: mode for mode in ALL_MODES}
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if unknown := [name for name in names if name not in by_name]:
        known = ", ".join([*NAMED, *by_name])
        raise ValueError(f"unknown mode(s): {', '.join(unknown)} (known: {known})")
    return tuple(by_name[name] for name in names)


def loadgen_argv(
    url: str,
    mode: Mode,
    key: str | None,
    requests: int,
    concurrency: int,
    rate: float | None = None,
) -> list[str]:
    """The command line of one load generator run (closed loop unless `rate` is set)."""
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url]
    argv += ["--requests", str(requests), "--concurrency", str(concurrency)]
    if rate:
        argv += ["--rate", str(rate)]
    if mode.stream:
        argv.append("--stream")
    if mode.include_usage:
        argv.append("--include-usage")
    if mode.body != "plain":
        argv += ["--body", mode.body]
    if mode.burst > 1:
        argv += ["--burst", str(mode.burst)]
    if mode.chunk_delay_ms:
        argv += ["--chunk-delay-ms", f"{mode.chunk_delay_ms:g}"]
    if key:
        argv += ["--key", key]
    return argv
