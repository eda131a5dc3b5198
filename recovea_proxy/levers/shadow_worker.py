"""Shadow evaluation, off the hot path: the bounded queue of samples, the small pool of
workers that call the baseline model and compare, the counts, the verdicts and the
spend ceiling. The lifespan owns it (`open_runtime`): it starts the workers and, at
shutdown, drops what is still queued and gives the calls in progress the shutdown
grace before cancelling them.

One sample's life, after its response has been sent to the client:

1. `submit`: dropped (and counted) when the routed answer was not a whole 2xx
   answer, outgrew the capture bound, or the queue is full; else queued.
2. a worker skips it when its pair already has a verdict or the workspace's shadow
   spend today reached `RECOVEA_SHADOW_DAILY_USD`; else it calls the baseline model
   once — the caller's body, `stream: false`, on the shared session, with the
   workspace's provider key, within `RECOVEA_SHADOW_TIMEOUT_S`, its answer read up
   to the capture bound — and prices that call with `pricing.cost`.
3. both answers are reassembled and compared in a thread; the bodies are let go.
4. the pair's counts are added in the database (totals across replicas come back),
   and the sequential test (`shadow_sprt`) gives its verdict on them. `inferior`
   disables the rule (every gateway hears of it as of any rule change);
   `non_inferior` ends shadowing of that pair.

What can be lost: a sample dropped for any reason above is counted on
`recovea_shadow_samples_total` and changes no count. The shadow call is not a
request of the pipeline: it takes no spend-cap reservation and no rate-limit
ticket, writes no ledger row and no receipt; its cost is the workspace's shadow
spend (`shadow_spend`, and `recovea_shadow_spend_usd_total`). Memory: at most
(queue size + workers) samples, each holding the caller's body, the routed answer
and the baseline answer, each at most the capture bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Protocol

import aiohttp
import orjson
import structlog
from yarl import URL

from recovea_proxy.config import Settings
from recovea_proxy.levers.shadow_answer import reassemble
from recovea_proxy.levers.shadow_compare import Comparison, compare
from recovea_proxy.levers.shadow_sprt import INFERIOR, Sprt
from recovea_proxy.levers.shadow_store import STORE_ERRORS, ShadowStore
from recovea_proxy.observability.metrics import GatewayMetrics
from recovea_proxy.pricing.cost import Tokens, cost
from recovea_proxy.pricing.table import shipped_prices
from recovea_proxy.providers import PROVIDERS

_log = structlog.get_logger("recovea.shadow")
_PAIRS_MAX = 100_000
_READ = 64 * 1024
#: what a failed baseline call raises
_CALL_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class Captured(Protocol):
    """The routed answer as the capture kept it."""

    status: int
    overflow: bool
    streamed: bool

    def body(self) -> bytes: ...


@dataclass(slots=True)
class Sample:
    """One sampled request, held in memory only until its comparison is made."""

    workspace_id: str
    rule_id: str
    routed_model: str
    baseline_provider: str
    baseline_model: str
    kind: str
    url: URL
    #: the forwarded request headers and the workspace's provider key headers
    headers: tuple[tuple[str, str], ...]
    request_body: bytes
    capture: Captured


@dataclass(slots=True)
class _Pair:
    """What this process knows of one (workspace, rule, model pair)."""

    n: int = 0
    disagreements: int = 0
    verdict: str | None = None
    #: counts not yet added in the database (it was unreachable)
    unsaved: list[int] = field(default_factory=lambda: [0, 0])


_PairKey = tuple[str, str, str, str]


class ShadowEvaluator:
    """The shadow queue, its workers, and what they have counted."""

    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        session: aiohttp.ClientSession,
        store: ShadowStore,
        forget_key: Callable[[str], None],
    ) -> None:
        self.limit = int(settings.shadow_capture_max_kb * 1024)
        self._workers = settings.shadow_workers
        self._queue: asyncio.Queue[Sample] = asyncio.Queue(maxsize=settings.shadow_queue_max)
        self._session = session
        self._store = store
        self._forget_key = forget_key
        self._timeout = aiohttp.ClientTimeout(
            total=settings.shadow_timeout_s, sock_connect=settings.connect_timeout_s
        )
        self._ceiling = Decimal(str(settings.shadow_daily_usd))
        self._sprt = Sprt(margin=settings.shadow_margin, min_sample=settings.shadow_min_sample)
        self._chrf_min = settings.shadow_chrf_min
        self._ratio_max = settings.shadow_length_ratio_max
        self._metrics = metrics
        self._samples = metrics.shadow_samples
        self._pairs: dict[_PairKey, _Pair] = {}
        self._spent: dict[str, tuple[date, Decimal]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None] | None] = set()
        self._closing = False
        metrics.shadow_queue_depth.set_function(self._queue.qsize)

    # --- the request's side (cheap, synchronous) ---

    def count(self, outcome: str) -> None:
        self._samples.labels(outcome).inc()

    def admits(self, workspace: str, rule: str, routed: str, baseline: str) -> bool:
        """Whether a sample of this pair is wanted: its test is not over and the
        workspace's shadow spend today is under the ceiling, as far as this process
        knows (counted when not)."""
        pair = self._pairs.get((workspace, rule, routed, baseline))
        if pair is not None and pair.verdict is not None:
            self.count("decided")
            return False
        if self._over_ceiling(workspace):
            self.count("over_ceiling")
            return False
        return not self._closing

    def submit(self, sample: Sample, success: bool | None) -> None:
        """Queue a sample once its response has been sent (`success`: the record's)."""
        capture = sample.capture
        if capture.overflow:
            self.count("too_large")
        elif success is not True or capture.status != 200:
            self.count("incomplete")
        elif self._closing:
            self.count("shutdown")
        else:
            try:
                self._queue.put_nowait(sample)
            except asyncio.QueueFull:
                self.count("queue_full")
            else:
                self.count("queued")

    def _over_ceiling(self, workspace: str) -> bool:
        known = self._spent.get(workspace)
        return known is not None and known[0] == _today() and known[1] >= self._ceiling

    # --- the lifespan ---

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self._workers):
            task = loop.create_task(self._run(), name=f"shadow-worker-{index}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self, grace_s: float) -> None:
        """Drop the queued samples; give the calls in progress `grace_s`, then cancel."""
        self._closing = True
        while not self._queue.empty():
            self._queue.get_nowait()
            self.count("shutdown")
        tasks = set(self._tasks)
        for task in tasks - self._busy:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self) -> None:
        me = asyncio.current_task()
        while not self._closing:
            sample = await self._queue.get()
            self._busy.add(me)
            try:
                await self._evaluate(sample)
            except Exception as exc:  # fail-open: a fault loses this sample only
                self.count("error")
                _log.warning("shadow_fault", error=type(exc).__name__)
            finally:
                self._busy.discard(me)
                del sample

    # --- one sample ---

    async def _evaluate(self, sample: Sample) -> None:
        key = (sample.workspace_id, sample.rule_id, sample.routed_model, sample.baseline_model)
        pair = await self._pair(key)
        if pair.verdict is not None:
            self.count("decided")
            return
        price = shipped_prices().price_for(sample.baseline_model)
        if price is None:
            self.count("unpriced")
            return
        if await self._spent_today(sample.workspace_id) >= self._ceiling:
            self.count("over_ceiling")
            return
        provider = PROVIDERS[sample.baseline_provider]
        baseline = await self._call_baseline(sample)
        if baseline is None:
            return
        usage = provider.usage_from_json(sample.kind, _loads(baseline))
        tokens = Tokens(
            usage.input_tokens,
            usage.cached_tokens,
            usage.cache_write_5m_tokens,
            usage.cache_write_1h_tokens,
            usage.output_tokens,
        )
        spent = cost(price, tokens, usage.service_tier) or Decimal(0)
        await self._add_spend(sample.workspace_id, sample.baseline_provider, spent)
        routed, streamed = sample.capture.body(), sample.capture.streamed
        sample.request_body = b""
        comparison = await asyncio.to_thread(
            self._compare, sample.kind, routed, streamed, baseline
        )
        del routed, baseline
        if comparison is None:
            self.count("unreadable")
            return
        self.count("compared")
        outcome = "agree" if comparison.agree else "disagree"
        self._metrics.shadow_comparisons.labels(outcome, comparison.comparator).inc()
        await self._tally(key, pair, disagree=not comparison.agree)

    def _compare(
        self, kind: str, routed: bytes, streamed: bool, baseline: bytes
    ) -> Comparison | None:
        left = reassemble(kind, routed, streamed=streamed)
        right = reassemble(kind, baseline, streamed=False)
        if left is None or right is None:
            return None
        return compare(left, right, chrf_min=self._chrf_min, length_ratio_max=self._ratio_max)

    async def _call_baseline(self, sample: Sample) -> bytes | None:
        """The baseline model's whole JSON answer (None: counted and dropped)."""
        try:
            body = orjson.loads(sample.request_body)
        except orjson.JSONDecodeError:
            self.count("unreadable")
            return None
        body["stream"] = False
        body.pop("stream_options", None)
        try:
            async with self._session.post(
                sample.url,
                headers=[(n, v) for n, v in sample.headers if n.lower() != "accept"],
                data=orjson.dumps(body),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                parts: list[bytes] = []
                size = 0
                while chunk := await response.content.read(_READ):
                    size += len(chunk)
                    if size > self.limit:
                        self.count("too_large")
                        return None
                    parts.append(chunk)
                status = response.status
        except _CALL_ERRORS:
            self.count("baseline_failed")
            return None
        if status != 200:
            self.count("baseline_failed")
            return None
        return b"".join(parts)

    # --- counts, verdicts, spend ---

    async def _pair(self, key: _PairKey) -> _Pair:
        pair = self._pairs.get(key)
        if pair is not None:
            return pair
        pair = _Pair()
        try:
            n, disagreements, verdict, disabled = await self._store.pair(*key)
        except STORE_ERRORS:
            return pair  # not remembered: read again with the next sample
        pair.n, pair.disagreements = n, disagreements
        pair.verdict = verdict or (INFERIOR if disabled else None)
        if len(self._pairs) >= _PAIRS_MAX:
            self._pairs.clear()
        self._pairs[key] = pair
        return pair

    async def _tally(self, key: _PairKey, pair: _Pair, *, disagree: bool) -> None:
        pair.unsaved[0] += 1
        pair.unsaved[1] += int(disagree)
        pair.n += 1
        pair.disagreements += int(disagree)
        try:
            totals = await self._store.add_counts(*key, *pair.unsaved)
        except STORE_ERRORS as exc:
            _log.warning("shadow_counts_unsaved", error=type(exc).__name__)
        else:
            pair.unsaved = [0, 0]
            if totals is None:  # the rule was removed meanwhile
                pair.verdict = INFERIOR
                return
            pair.n, pair.disagreements, stored = totals
            if stored is not None:
                pair.verdict = stored
                return
        verdict = self._sprt.verdict(pair.n, pair.disagreements)
        if verdict is None or pair.verdict is not None:
            return
        pair.verdict = verdict
        workspace, rule, routed, baseline = key
        with contextlib.suppress(*STORE_ERRORS):
            await self._store.set_verdict(*key, verdict)
        notified: list[str] = []
        if verdict == INFERIOR:
            reason = (
                f"shadow evaluation: {routed[:80]} inferior to {baseline[:80]}"
                f" ({pair.disagreements} of {pair.n} disagreed)"
            )
            try:
                notified = await self._store.disable_rule(workspace, rule, reason)
            except STORE_ERRORS as exc:
                # tried again with the pair's next sample
                pair.verdict = None
                _log.warning("shadow_disable_failed", rule_id=rule, error=type(exc).__name__)
                return
            for key_id in notified:
                self._forget_key(key_id)
        self._metrics.shadow_verdicts.labels(verdict).inc()
        _log.warning(
            "shadow_verdict",
            workspace_id=workspace,
            rule_id=rule,
            routed_model=routed[:256],
            baseline_model=baseline[:256],
            verdict=verdict,
            n=pair.n,
            disagreements=pair.disagreements,
            rule_disabled=verdict == INFERIOR,
        )

    async def _spent_today(self, workspace: str) -> Decimal:
        today = _today()
        known = self._spent.get(workspace)
        if known is not None and known[0] == today:
            return known[1]
        try:
            spent = await self._store.spent(workspace, today)
        except STORE_ERRORS:
            return Decimal(0) if known is None else known[1]
        self._spent[workspace] = (today, spent)
        return spent

    async def _add_spend(self, workspace: str, provider: str, usd: Decimal) -> None:
        self._metrics.shadow_spend.labels(provider).inc(float(usd))
        today = _today()
        known = self._spent.get(workspace)
        local = (known[1] if known is not None and known[0] == today else Decimal(0)) + usd
        try:
            local = await self._store.add_spend(workspace, today, usd)
        except STORE_ERRORS as exc:
            _log.warning("shadow_spend_unsaved", error=type(exc).__name__)
        self._spent[workspace] = (today, local)


def _today() -> date:
    return datetime.now(UTC).date()


def _loads(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
