"""A crowd of readers against a worker holding many products (issue 18, item 2), on the embedded broker.

Before the read model, each ``GET /trending`` and ``/dashboard/state`` walked every product on the event
loop: 200 concurrent readers over 200k products timed out at 30 s, ``/healthz`` went unanswered for
minutes and the worker lost its group. Here (smaller, to stay a test: 30k products, 100 readers, 15 s)
readers must get answers, ``/healthz`` must stay prompt and the input must keep being processed.
``benchmarks/read_load.py`` is the measurement at full size.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from .support import PRODUCTS_ONLY, isolated_env, start_worker, wait_for

pytestmark = pytest.mark.integration

PRODUCTS = 30_000
READERS = 100
SECONDS = 15.0
PATHS = ("/trending?signal=orders&limit=1000", "/trending?signal=clicks&limit=10", "/dashboard/state",
         "/metrics", "/alerts?status=firing")


async def _clicks(bootstrap: str, topic: str, ids: range, ts: int, prefix: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10)
    await producer.start()
    try:
        for i in ids:
            pid = f"R{i % PRODUCTS:06d}"
            await producer.send(topic, orjson.dumps({"event_id": f"{prefix}{i}", "ts": ts, "user_id": "u",
                                                     "product_id": pid}), key=pid.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _counted(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=30)) as r:
        text = await r.text()
    return sum(float(ln.split()[-1]) for ln in text.splitlines()
               if ln.startswith("streamproc_records_processed_total{") and 'topic="clicks"' in ln)


async def _crowd(url: str, bootstrap: str, topic: str, ts: int) -> dict[str, Any]:
    answers: dict[str, int] = {}
    healthz_s: list[float] = []
    stop_at = time.monotonic() + SECONDS

    async def reader(k: int, session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            path = PATHS[k % len(PATHS)]
            try:
                async with session.get(url + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    key = str(r.status)
            except Exception as exc:  # noqa: BLE001 - counted
                key = type(exc).__name__
            answers[key] = answers.get(key, 0) + 1
            k += 1

    async def probe(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            try:
                async with session.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                    ok = r.status == 200
            except Exception:  # noqa: BLE001 - a failed probe counts as 10 s
                ok = False
            healthz_s.append(time.monotonic() - t0 if ok else 10.0)
            await asyncio.sleep(0.2)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as readers, \
            aiohttp.ClientSession() as prober:
        before = await _counted(prober, url)
        # 10k new clicks while the readers read: they must be processed during the crowd, not after it.
        await asyncio.gather(*(reader(k, readers) for k in range(READERS)), probe(prober),
                             _clicks(bootstrap, topic, range(PRODUCTS, PRODUCTS + 10_000), ts, "during"))
        during = await _counted(prober, url) - before
    return {"answers": answers, "healthz_s": healthz_s, "processed_during": during}


def test_a_crowd_of_readers_does_not_stall_the_worker(embedded_broker: str, tmp_path: Path) -> None:
    env = isolated_env(embedded_broker, tmp_path, PRODUCTS_ONLY)
    topic = env["STREAMPROC_TOPIC_CLICKS"]
    worker = start_worker(env, tmp_path)
    try:
        ts = int(time.time() * 1000)
        asyncio.run(_clicks(embedded_broker, topic, range(PRODUCTS), ts, "pre"))
        wait_for(lambda: asyncio.run(_counted_once(worker.url)) >= PRODUCTS, 120)
        got = asyncio.run(_crowd(worker.url, embedded_broker, topic, ts))
        answers = got["answers"]
        print(f"answers {answers}; healthz max {max(got['healthz_s']):.3f}s; processed during {got['processed_during']}")
        assert set(answers) <= {"200", "503"}, answers  # answered or turned away at once, never left hanging
        assert answers.get("200", 0) > READERS  # and most readers were served
        assert max(got["healthz_s"]) < 2.0  # /healthz stayed prompt (it took minutes before)
        assert got["processed_during"] == 10_000  # the input kept flowing under the crowd
        assert worker.proc.poll() is None and worker.get("/readyz") == {"ready": True}
    finally:
        worker.stop()


async def _counted_once(url: str) -> float:
    async with aiohttp.ClientSession() as s:
        return await _counted(s, url)
