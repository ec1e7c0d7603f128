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
from streamproc.read_model import TOP_N, ReadModel
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
