"""The read model: the same rankings as a full sort, shared rebuilds, and a web server on its own loop."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import aiohttp
import pytest

from streamproc.broker import free_port
from streamproc.demand import ProductState
from streamproc.features import trending
from streamproc.read_model import TOP_N, Limiter, ReadModel
from streamproc.runtime import Runtime
from streamproc.settings import Settings
from streamproc.web import WebServer


def _runtime(n: int, seed: int = 1) -> Runtime:
    async def send(*_: Any) -> None:
        return None

    rt = Runtime(Settings(), send)
    rng = random.Random(seed)
    for i in range(n):
        p = ProductState(f"P{i:05d}", "c")
        # many ties (zeros and repeats): ranked by id among equal scores
        p.last_scores = {"orders": rng.choice([0.0, 0.0, 0.5, rng.random()]), "clicks": rng.random()}
        p.features = {"features": {"orders_5m": 1.0, "clicks_5m": 2.0, "reviews_24h": rng.choice([0, 2]),
                                   "negative_share_24h": rng.random(), "sentiment_mean_24h": 0.0}}
        if i % 97 == 0:
            p.incidents = {"orders": {"labels": {"alertname": "demand_surge", "signal": "orders"}, "starts_at": f"2026-01-01T00:{i % 60:02d}"}}
        rt.engine.index[p.product_id] = p
    return rt


@pytest.mark.parametrize("n", [10, 2_500, 12_000])
async def test_snapshot_ranks_as_a_full_sort_would(n: int) -> None:
    rt = _runtime(n)
    snap = await ReadModel(rt, slice_size=700).current()
    for signal in ("orders", "clicks"):
        assert [row for _p, row in snap.trending[signal]] == \
            [row for _p, row in trending(rt.engine.index, signal, TOP_N)], signal
    assert len(snap.firing) == len(list(rt.engine.firing()))
    assert snap.products == n


async def test_concurrent_readers_share_one_rebuild_and_a_fresh_snapshot_is_reused() -> None:
    rm = ReadModel(_runtime(3000), max_age_s=60)
    snaps = await asyncio.gather(*(rm.current() for _ in range(50)))
    assert rm.rebuilds == 1 and all(s is snaps[0] for s in snaps)
    assert await rm.current() is snaps[0]


async def test_the_web_server_answers_from_its_own_thread_and_builds_on_the_home_loop() -> None:
    rt = _runtime(500)
    rt.ready = True
    settings = Settings(web_port=free_port(), web_bind="127.0.0.1")
    server = WebServer(rt, settings)
    built_on: list[str] = []
    real_build = ReadModel._build

    async def spy(self: ReadModel) -> Any:
        built_on.append(threading.current_thread().name)
        return await real_build(self)

    ReadModel._build = spy  # type: ignore[method-assign]
    try:
        await server.start()
        url = f"http://127.0.0.1:{settings.web_port}"
        async with aiohttp.ClientSession() as s:
            for path in ("/healthz", "/trending?limit=3", "/metrics", "/dashboard/state", "/watermarks"):
                async with s.get(url + path) as r:
                    assert r.status == 200, path
            async with s.get(url + "/trending?signal=clicks&limit=2") as r:
                body = await r.json()
        assert [p["product_id"] for p in body["products"]] == \
            [row["product_id"] for _p, row in trending(rt.engine.index, "clicks", 2)]
        assert built_on and set(built_on) == {threading.current_thread().name}  # never on the web thread
    finally:
        ReadModel._build = real_build  # type: ignore[method-assign]
        await server.stop()


class _Cpu:
    """A thread-CPU clock the test advances by hand, with a wall clock that follows asyncio's sleeps."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def wall(self) -> float:
        return asyncio.get_running_loop().time()


async def test_the_cpu_budget_admits_requests_as_it_refills() -> None:
    c = _Cpu()
    lim = Limiter(64, wait_s=5.0, cpu_share=0.5, clock=c.wall, cpu=lambda: c.cpu)
    admitted: list[float] = []

    async def request(cost_s: float) -> bool:
        async with lim.turn() as ok:
            if ok:
                admitted.append(c.wall())
                c.cpu += cost_s  # the handler's CPU
            return bool(ok)

    t0 = c.wall()
    assert await request(0.2)  # the saved-up budget (50 ms) is positive: admitted, then 150 ms in debt
    results = await asyncio.gather(*(request(0.01) for _ in range(5)))
    assert results == [True] * 5
    # 150 ms of debt at half a core takes 0.3 s to repay; each further 10 ms request costs 20 ms of wall time
    assert admitted[1] - t0 == pytest.approx(0.3, abs=0.02)
    assert admitted[-1] - admitted[1] == pytest.approx(0.08, abs=0.02)


async def test_a_request_the_budget_cannot_admit_in_time_gets_turned_away() -> None:
    c = _Cpu()
    lim = Limiter(64, wait_s=0.1, cpu_share=0.5, clock=c.wall, cpu=lambda: c.cpu)
    async with lim.turn() as ok:
        assert ok
        c.cpu += 1.0  # two seconds of debt at half a core
    async with lim.turn() as ok:
        assert not ok
    assert lim.rejected == 1


async def test_a_share_of_one_core_or_more_turns_the_budget_off() -> None:
    c = _Cpu()
    lim = Limiter(64, wait_s=0.0, cpu_share=1.0, clock=c.wall, cpu=lambda: c.cpu)
    for _ in range(3):
        async with lim.turn() as ok:
            assert ok
            c.cpu += 10.0
