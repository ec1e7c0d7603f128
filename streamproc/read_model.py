"""The HTTP read side's model: what the expensive GET endpoints serve, rebuilt from the worker's state in
slices, never per request.

``/trending``, ``/alerts?status=firing``, ``/dashboard/state`` (and its event stream) and ``/metrics`` used
to walk every product on each request, on the event loop that also runs the processing and the web server:
200 concurrent readers over 200k products kept the loop busy for minutes and the group coordinator lost
the worker. Now one :class:`ReadModel` per web app builds a :class:`Snapshot` — top products per signal,
open incidents, sentiment leaders, the dashboard's JSON and the metrics text — walking the products in
slices of ``slice_size`` with a yield to the loop between slices. Requests read the newest snapshot; one
older than ``max_age_s`` is rebuilt first (one rebuild shared by every waiting request). The rebuild's own
cost is bounded: the next one starts no sooner than ``cost_factor`` times the last one's duration after it
(at most ~1/cost_factor of the loop's time). Product lookups (``/features``) stay live: they are O(1).

In the worker the HTTP server runs on a thread and event loop of its own (``web.WebServer``): the state
belongs to the processing loop (``home``), so snapshots and what is derived from them are built there,
and requests only read the finished snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .dashboard import rank_sentiment

__all__ = ["ReadModel", "Snapshot", "TOP_N"]

TOP_N = 1000
"""Products kept per trending signal: the largest ``limit`` ``GET /trending`` accepts."""
SIGNALS = ("orders", "clicks")
MIN_REFRESH_S = 0.25
"""The background refresh runs no more often than this (requests may still ask for a fresher snapshot)."""


@dataclass
class Snapshot:
    """The worker's state as the read side serves it, as of ``built_at`` (monotonic seconds)."""

    built_at: float
    trending: dict[str, list[tuple[Any, dict[str, Any]]]]
    """Per signal, up to TOP_N (ProductState, ``/trending`` row), ranked by surge score (ties by id)."""
    firing: list[dict[str, Any]]
    """Open incidents, newest first."""
    sentiment: list[dict[str, Any]]
    """Reviewed products as the dashboard's sentiment table ranks them (``dashboard.rank_sentiment``)."""
    products: int
    negative_prior: float | None = None
    """The shop-wide negative share of the last 24 h (``None`` without scored reviews)."""
    triggers: dict[str, Any] | None = None
    """Marketing triggers published by this worker: counts by kind and the latest few (trigger_feed.py)."""
    build_s: float = 0.0
    cache: dict[str, bytes] = field(default_factory=dict)
    """Response bodies derived from this snapshot (dashboard state, metrics text), made once each."""


class ReadModel:
    """Builds and serves snapshots of a :class:`~streamproc.runtime.Runtime`."""

    def __init__(self, runtime: Any, *, max_age_s: float = 1.0, slice_size: int = 5000, cost_factor: float = 10.0,
                 sentiment_limit: int = 10, monotonic: Callable[[], float] = time.monotonic,
                 home: asyncio.AbstractEventLoop | None = None) -> None:
        self.runtime = runtime
        self.home = home
        """The event loop that owns the runtime's state (None: the loop serving the requests)."""
        self.max_age_s = max_age_s
        self.slice_size = slice_size
        self.cost_factor = cost_factor
        self.sentiment_limit = sentiment_limit
        self.monotonic = monotonic
        self.snapshot: Snapshot | None = None
        self._building: asyncio.Task[Snapshot] | None = None
        self.rebuilds = 0

    def _max_age(self) -> float:
        if self.max_age_s <= 0:
            return 0.0  # every read rebuilds (tests; a worker keeps the default)
        last = self.snapshot.build_s if self.snapshot is not None else 0.0
        return max(self.max_age_s, self.cost_factor * last)

    def _fresh(self) -> Snapshot | None:
        snap = self.snapshot
        return snap if snap is not None and self.monotonic() - snap.built_at < self._max_age() else None

    async def current(self) -> Snapshot:
        """The newest snapshot, rebuilt first (on the home loop) if it is too old; concurrent callers share
        one rebuild. While a rebuild is under way, the previous snapshot is served at once: a rebuild
        interleaves with the processing and can take seconds on a busy worker."""
        fresh = self._fresh()
        if fresh is not None:
            return fresh
        if self.snapshot is not None and self._building is not None and not self._building.done():
            return self.snapshot
        return await self.on_home(self._rebuild)  # type: ignore[no-any-return]

    async def _rebuild(self) -> Snapshot:
        snap = self._fresh()
        if snap is not None:
            return snap
        if self._building is None or self._building.done():
            self._building = asyncio.get_running_loop().create_task(self._build(), name="read-model")
        return await asyncio.shield(self._building)

    async def on_home(self, fn: Callable[[], Any]) -> Any:
        """``await fn()`` on the home loop (here if this is it)."""
        home = self.home
        if home is None or home is asyncio.get_running_loop():
            return await fn()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(), home))

    async def derived(self, snap: Snapshot, name: str, make: Callable[[], bytes]) -> bytes:
        """A response body derived from ``snap`` (dashboard state, metrics text): made once per snapshot, on
        the home loop (it reads the live state too)."""
        body = snap.cache.get(name)
        if body is None:
            async def run() -> bytes:
                return snap.cache.get(name) or snap.cache.setdefault(name, make())

            body = await self.on_home(run)
        return body

    async def run(self) -> None:
        """Keep the snapshot fresh in the background (so requests seldom wait for a rebuild)."""
        while True:
            await self.current()
            await asyncio.sleep(max(self._max_age(), MIN_REFRESH_S))

    async def _build(self) -> Snapshot:
        started = self.monotonic()
        cpu = 0.0
        index = self.runtime.engine.index
        products = list(index.values())
        top: dict[str, list[tuple[float, str, Any]]] = {sig: [] for sig in SIGNALS}
        firing: list[dict[str, Any]] = []
        reviewed: list[Any] = []
        for lo in range(0, len(products), self.slice_size):
            t0 = time.perf_counter()
            chunk = products[lo:lo + self.slice_size]
            for signal in SIGNALS:
                best = top[signal]  # (-score, product id, state), best first: ids are unique, states never compared
                if len(best) < TOP_N:
                    cand = [(-p.last_scores.get(signal, 0.0), p.product_id, p) for p in chunk]
                else:  # only what beats the current last place
                    w_neg, w_pid = best[-1][0], best[-1][1]
                    cand = [(neg, p.product_id, p) for p in chunk
                            if (neg := -p.last_scores.get(signal, 0.0)) < w_neg or (neg == w_neg and p.product_id < w_pid)]
                if cand:
                    cand.sort()
                    merged = best + cand
                    merged.sort()  # two sorted runs: a merge
                    top[signal] = merged[:TOP_N]
            for p in chunk:
                if p.incidents:
                    firing.extend(p.incidents.values())
                f = (p.features or {}).get("features")
                if f and f.get("reviews_24h"):
                    reviewed.append(p)
            cpu += time.perf_counter() - t0
            await asyncio.sleep(0)  # let the processing, timers and other requests run between slices
        t0 = time.perf_counter()
        trending: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        for signal, ranked in top.items():
            rows = []
            for neg, pid, p in ranked:
                score = -neg or 0.0
                f = (p.features or {}).get("features", {})
                rows.append((p, {"product_id": pid, "category": p.category, "surge_score": score,
                                 "orders_5m": f.get("orders_5m"), "clicks_5m": f.get("clicks_5m"),
                                 "firing": signal in p.incidents}))
            trending[signal] = rows
        firing.sort(key=lambda a: a["starts_at"], reverse=True)
        sentiment, prior = rank_sentiment(reviewed, self.sentiment_limit)  # the shop-wide share needs them all
        cpu += time.perf_counter() - t0
        feed = getattr(self.runtime, "triggers", None)
        snap = Snapshot(built_at=started, trending=trending, firing=firing,
                        sentiment=sentiment, products=len(products), build_s=max(cpu, 0.0), negative_prior=prior,
                        triggers=None if feed is None else feed.view())
        self.snapshot = snap
        self.rebuilds += 1
        return snap

class Limiter:
    """At most ``limit`` requests handled at once, within a CPU budget; a request that waited ``wait_s`` for
    a turn gets 503.

    The budget: the web thread may use ``cpu_share`` of one core (its own CPU time, ``time.thread_time``,
    refilled at that rate, at most ``BURST_CPU_S`` saved up). Over it, requests are admitted one at a time
    as the budget refills, so a crowd of readers leaves the processing thread the rest of the interpreter
    (the threads share one GIL) and the loop stays free for health checks. Call from the web thread only;
    ``cpu_share`` 1 (or more) turns the budget off."""

    BURST_CPU_S = 0.05

    def __init__(self, limit: int, wait_s: float, cpu_share: float = 1.0, *,
                 clock: Callable[[], float] = time.monotonic, cpu: Callable[[], float] = time.thread_time) -> None:
        self.sem = asyncio.Semaphore(limit)
        self.wait_s = wait_s
        self.cpu_share = cpu_share
        self.clock, self.cpu = clock, cpu
        self.rejected = 0
        self._admit = asyncio.Lock()
        self._tokens = self.BURST_CPU_S
        self._last: tuple[float, float] | None = None

    def debt_s(self) -> float:
        """Seconds until the budget is back above zero (0 when there is budget now)."""
        wall, cpu = self.clock(), self.cpu()
        if self._last is not None:
            spent = cpu - self._last[1]
            self._tokens = min(self.BURST_CPU_S, self._tokens + (wall - self._last[0]) * self.cpu_share - spent)
        self._last = (wall, cpu)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.cpu_share

    async def _budget(self, deadline: float) -> bool:
        if self.cpu_share >= 1:
            return True
        async with self._admit:  # one waiter at a time: each sees the CPU the ones before it spent
            while (d := self.debt_s()) > 0:
                if self.clock() + d > deadline:
                    return False
                await asyncio.sleep(d)
        return True

    @contextlib.asynccontextmanager
    async def turn(self) -> Any:
        deadline = self.clock() + self.wait_s
        try:
            if self.sem.locked():  # wait_for with no time left would refuse even a free turn
                await asyncio.wait_for(self.sem.acquire(), self.wait_s)
            else:
                await self.sem.acquire()
        except TimeoutError:
            self.rejected += 1
            yield False
            return
        try:
            if not await self._budget(deadline):
                self.rejected += 1
                yield False
                return
            yield True
        finally:
            self.sem.release()


def dumps(data: Any) -> bytes:
    return orjson.dumps(data)
