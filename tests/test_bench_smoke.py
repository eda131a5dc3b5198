"""The bench's floor proxy and load generator keep working (so `make bench` does not rot).

Real sockets throughout: the mock provider on its own port, the floor as its own
process (`python -m bench.floor`), the load generator as its own process; the lever
modes against a real gateway with a workspace's rcv_ key.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from bench import lever_costs, lever_log, levers_cg
from bench.modes import ALL_MODES, chosen, loadgen_argv
from bench.procs import free_port, started, tcp_open, wait_ready
from tests.ledger_support import make_tenant
from tests.support import Gateway, MockServer

CHAT = "/v1/chat/completions"
HEADERS = {"authorization": "Bearer sk-floor-000000", "x-mock-chunks": "16"}
StartFloor = Callable[[str], str]


@pytest.fixture
def start_floor(tmp_path: Path) -> Iterator[StartFloor]:
    """Starts a floor proxy in front of an upstream URL; returns its base URL."""
    with contextlib.ExitStack() as stack:

        def start(upstream: str) -> str:
            port = free_port()
            argv = [sys.executable, "-m", "bench.floor", "--port", str(port)]
            process = stack.enter_context(
                started([*argv, "--upstream", upstream], {}, tmp_path / f"floor-{port}.log")
            )
            wait_ready(tcp_open(port), process, "floor proxy", 20)
            return f"http://127.0.0.1:{port}"

        yield start


def test_floor_forwards_streams_unchanged(start_floor: StartFloor, mock: MockServer) -> None:
    """A streamed chat response through the floor is byte for byte the direct one."""
    floor = start_floor(mock.url)
    body = orjson.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "f"}]}
    )
    direct = httpx.post(f"{mock.url}{CHAT}", content=body, headers=HEADERS)
    proxied = httpx.post(f"{floor}{CHAT}", content=body, headers=HEADERS)
    assert direct.status_code == 200
    assert direct.content.count(b"data: ") > 16
    assert (direct.status_code, direct.content) == (proxied.status_code, proxied.content)
    assert direct.headers["content-type"] == proxied.headers["content-type"]


def test_floor_answers_502_when_upstream_is_unreachable(start_floor: StartFloor) -> None:
    """Nothing listening upstream: the floor answers 502 itself, it does not crash."""
    floor = start_floor(f"http://127.0.0.1:{free_port()}")
    response = httpx.post(f"{floor}{CHAT}", content=b"{}", headers=HEADERS)
    assert 502 == response.status_code


def test_loadgen_reports_every_request(start_floor: StartFloor, mock: MockServer) -> None:
    """The load generator sends exactly the requests asked for, and all succeed."""
    floor = start_floor(mock.url)
    argv = [sys.executable, "-m", "bench.loadgen", "--url", f"{floor}{CHAT}"]
    out = subprocess.run(
        [*argv, "--requests", "50", "--concurrency", "4", "--stream"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    result = orjson.loads(out)
    assert (50, 50, 0) == (result["requests"], result["ok"], result["errors"])
    assert 0 < result["p50_ms"] <= result["p99_ms"]


def test_at_ref_runs_the_cli_of_the_checkout_it_is_given(tmp_path: Path) -> None:
    """`bench.run --against REF` runs another checkout's gateway: `bench.at_ref` imports
    the package from that checkout, and refuses when it would import this one."""
    repo = Path(__file__).resolve().parent.parent

    def at_ref(checkout: Path) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "bench.at_ref", str(checkout), "--help"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=repo)

    done = at_ref(repo)
    assert done.returncode == 0 and "serve" in done.stdout, done.stderr
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    refused = at_ref(empty)
    assert refused.returncode != 0
    assert f"not from {empty}" in refused.stderr


def loadgen(url: str, *args: str) -> dict[str, float]:
    """One load generator run in its own process; its JSON summary."""
    argv = [sys.executable, "-m", "bench.loadgen", "--url", url, *args]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=120)
    result: dict[str, float] = orjson.loads(done.stdout)
    return result


def test_cache_bodies_are_shareable_and_unique_per_burst(mock: MockServer) -> None:
    """`--body cache-miss` sends temperature 0 and a prompt that is the same within a
    burst and new from burst to burst, and from run to run; `--body cache-hit` one fixed
    prompt in every run; every body of a kind has the same length."""
    url = f"{mock.url}{CHAT}"

    def sent(*args: str) -> list[dict[str, object]]:
        mock.clear()
        result = loadgen(url, "--requests", "12", "--concurrency", "1", *args)
        assert (12, 0) == (result["ok"], result["errors"])
        return [r["body"] for r in mock.requests() if r["path"] == CHAT]

    misses = [sent("--body", "cache-miss", "--burst", "4") for _ in range(2)]
    for bodies in misses:
        assert {0} == {body["temperature"] for body in bodies}
    prompts = [[str(body["messages"]) for body in bodies] for bodies in misses]
    assert [1, 1, 1] == [len(set(prompts[0][n : n + 4])) for n in (0, 4, 8)]
    assert 3 == len(set(prompts[0]))
    assert not set(prompts[0]) & set(prompts[1])
    hits = sent("--body", "cache-hit") + sent("--body", "cache-hit")
    assert 1 == len({orjson.dumps(body) for body in hits})
    assert 1 == len({len(orjson.dumps(body)) for body in misses[0] + misses[1] + hits})


def test_modes_name_what_the_loadgen_is_told() -> None:
    """`--modes levers` picks today's two modes and the lever modes; the flight mode
    sends bursts of 20 slow temperature-0 streams; an unknown name is refused."""
    names = [mode.name for mode in chosen("levers")]
    assert ["chat", "chat-stream-16"] == names[:2]
    assert "chat-stream-16-flight-20" in names and "chat-cache-hit" in names
    flight = next(mode for mode in ALL_MODES if mode.name == "chat-stream-16-flight-20")
    argv = loadgen_argv("http://x", flight, "k", 100, 4, 800)
    assert argv[argv.index("--body") + 1] == "cache-miss"
    assert argv[argv.index("--burst") + 1] == "20"
    assert "--stream" in argv and "--chunk-delay-ms" in argv
    with pytest.raises(ValueError, match="unknown mode"):
        chosen("chat,chat-cache-maybe")


def test_lever_modes_hit_and_join_as_the_gateway_logs_them(
    start_gateway: Callable[..., Gateway], db_env: dict[str, str]
) -> None:
    """Through a gateway with a workspace key, what `bench.lever_log` reads from its
    request log: a `cache-hit` run is all hits after its first request, a `cache-miss`
    run none, and in 20-way bursts of slow streams the 19 that follow the first are
    answered by its flight (or, had they come late, by the cache it filled)."""
    gateway = start_gateway(RECOVEA_PASSTHROUGH="off")
    key = make_tenant(db_env, "bench-levers").key
    url = f"{gateway.url}{CHAT}"

    def run(requests: int, *args: str) -> lever_log.Seen:
        mark = lever_log.size(gateway.log_path)
        result = loadgen(url, "--key", key, "--requests", str(requests), *args)
        assert (requests, 0) == (result["ok"], result["errors"])
        return lever_log.read(gateway.log_path, mark, requests, deadline_s=20)

    hit = run(30, "--concurrency", "1", "--body", "cache-hit")
    assert (30, 29, 0) == (hit.requests, hit.cache_hits, hit.flight_joins)
    miss = run(30, "--concurrency", "4", "--body", "cache-miss", "--stream")
    assert (30, 0, 0) == (miss.requests, miss.cache_hits, miss.flight_joins)
    flight = ["--concurrency", "1", "--body", "cache-miss", "--stream", "--burst", "20"]
    burst = run(40, *flight, "--chunk-delay-ms", "20")
    assert 40 == burst.requests
    assert 38 == burst.flight_joins + burst.cache_hits
    assert burst.flight_joins >= 19


def test_lever_costs_times_every_piece() -> None:
    """`bench.lever_costs` runs the levers' pieces in-process and prints a figure for
    each (so the README's cost table can be made again)."""
    argv = [sys.executable, "-m", "bench.lever_costs", "--loops", "20"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    rows = [line for line in out.splitlines()[1:] if line.strip()]
    assert [row.rsplit(maxsplit=1)[0] for row in rows] == list(lever_costs.pieces())
    assert all(float(row.rsplit(maxsplit=1)[1]) > 0 for row in rows)
    # for instruction counts: one piece, the collector off for its loops
    argv += ["--only", "a miss, whole", "--no-collector"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    (row,) = [line for line in out.splitlines()[1:] if line.strip()]
    assert row.startswith("a miss, whole") and float(row.rsplit(maxsplit=1)[1]) > 0


def test_suite_quick_measures_and_judges(tmp_path: Path) -> None:
    """`bench.suite --quick` (what `make bench` runs, small): the floor and direct in
    closed and open loop, a few slow streams, the verdicts printed, the JSON written.
    The peers and the gateways are left out here (slow to start); `make bench` runs
    them all."""
    out = tmp_path / "suite.json"
    argv = [sys.executable, "-m", "bench.suite", "--quick", "--targets", "direct,floor"]
    argv += ["--no-drain", "--streams", "20", "--rate", "200", "--requests", "200"]
    argv += ["--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    doc = orjson.loads(out.read_bytes())
    for mode in ("json", "stream-16"):
        row = doc["closed"][f"floor {mode}"]
        assert row["errors"] == 0 and row["cpu_us_per_req"] > 0
        assert doc["open"][f"floor {mode} @200"]["rps"] > 0
    assert doc["open"]["floor stream-16 @200"]["ttfb_p50_ms"] > 0
    floor_memory = next(m for m in doc["memory"] if m["target"] == "floor")
    assert (20, 0) == (floor_memory["open_peak"], floor_memory["errors"])
    assert "everything-on" in done.stdout and "targets" in done.stdout


def test_levers_ab_sets_one_gateways_two_workspaces_side_by_side() -> None:
    """`bench.levers_ab` (small): one gateway serves a workspace with the levers on and
    one with them off in turns beside the floor, and prints the difference. In the
    cache-hit mode the first workspace's requests are hits and the second's are not:
    the two sides differ in their policy, in the same process."""
    argv = [sys.executable, "-m", "bench.levers_ab", "--pairs", "2", "--requests", "60"]
    argv += ["--warmup", "10", "--rate", "300", "--modes", "chat-cache-hit"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "chat-cache-hit: floor " in done.stdout
    assert " floor (95 % interval of the median " in done.stdout
    assert "answered by a hit or a flight: on 100.0 %, off 0.0 %" in done.stdout


def test_levers_cg_reads_a_dumps_counts_and_reports_on_minus_off(tmp_path: Path) -> None:
    """`bench.levers_cg`'s arithmetic (the valgrind run itself is too slow for the
    suite): a callgrind dump's totals per request by event, the simulated caches it
    names, and the mean of on - off over the turns."""
    dump = tmp_path / "callgrind.out.1"
    dump.write_text(
        "desc: I1 cache: 32768 B, 64 B, 8-way associative\n"
        "desc: Timerange: Basic block 0 - 5\n"
        "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n"
        "totals: 2000 10 20 300 40 50 6 7 80\n"
    )
    counts = levers_cg.counts_of(dump, 10)
    assert (counts["Ir"], counts["I1mr"], counts["DLmw"]) == (200, 30, 8)
    assert levers_cg.caches_of(dump) == "I1 cache: 32768 B, 64 B, 8-way associative"
    on = [dict.fromkeys(levers_cg.EVENTS, 0.0) for _ in range(2)]
    off = [dict.fromkeys(levers_cg.EVENTS, 0.0) for _ in range(2)]
    on[0]["Ir"], on[1]["Ir"], off[0]["Ir"], off[1]["Ir"] = 150.0, 170.0, 100.0, 120.0
    on[1]["I1mr"] = 8.0
    text = levers_cg.report("chat-cache-miss", {"on": on, "off": off}, 10, "")
    last = text.splitlines()[-1].split()
    assert last[:3] == ["on", "-", "off"]
    assert [float(cell.replace(",", "")) for cell in last[3:5]] == [50.0, 4.0]
