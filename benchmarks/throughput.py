"""Throughput on pre-loaded topics: a bare aiokafka consumer, the naive Faust app, streamproc's worker, Quix.

Every contender reads the SAME records: generator clicks and orders (~150-byte JSON) loaded into two
topics of 4 partitions before it starts. Each process-based contender gets its own consumer group and
output topics; rates are counted from its first processed record to its last (start-up and group join
are excluded and reported separately).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from streamproc import generator, loadgen
from streamproc.broker import create_topics, free_port, topic_specs
from streamproc.processes import stop_process_group
from streamproc.settings import TOPICS, Settings

HERE = Path(__file__).resolve().parent
MIN = 60_000
EVENTS_START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN


@dataclass
class Preloaded:
    """Input topics filled with the benchmark records."""

    bootstrap: str
    clicks: str
    orders: str
    events: int
    bytes_mean: float
    produce_eps: float
    params: dict[str, Any] = field(default_factory=dict)


def bench_events(n: int, seed: int = 1) -> list[tuple[str, bytes, bytes, int]]:
    """About ``n`` clicks and orders of the ``steady`` scenario (1,000 products), in event-time order."""
    rate = 100.0
    duration_ms = int(n / rate * 1000 * 1.03)
    sc = generator.scenario("steady", start_ms=EVENTS_START_MS, duration_ms=duration_ms, rate_eps=rate, seed=seed)
    out = [e for e in generator.events(sc, seed) if e[0] != "reviews"]
    return out[:n]


def preload(bootstrap: str, n: int, tag: str) -> Preloaded:
    items = bench_events(n)
    names = {"clicks": f"{tag}-clicks", "orders": f"{tag}-orders"}
    asyncio.run(create_topics(bootstrap, [(names["clicks"], 4, {}), (names["orders"], 4, {})]))
    rep = asyncio.run(loadgen.produce(bootstrap, items, speed=None, progress=False, topic_names=names))
    if rep.errors:
        raise RuntimeError(f"{rep.errors} records not acknowledged while pre-loading")
    return Preloaded(bootstrap, names["clicks"], names["orders"], len(items),
                     sum(len(v) for _t, _k, v, _ts in items) / len(items), rep.rate_eps,
                     {"scenario": "steady", "rate_eps": 100.0, "products": 1000, "seed": 1,
                      "clicks": sum(1 for e in items if e[0] == "clicks"),
                      "orders": sum(1 for e in items if e[0] == "orders"), "partitions": 4})


# --- (a) bare consumer -----------------------------------------------------------------------------

async def _raw_consume(pre: Preloaded) -> dict[str, Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=pre.bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_bytes=64 << 20,
                         max_partition_fetch_bytes=16 << 20, fetch_max_wait_ms=100)
    await c.start()
    try:
        tps = [TopicPartition(t, p) for t in (pre.clicks, pre.orders) for p in range(4)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        n = 0
        t0 = time.monotonic()  # manual assignment: no group join, fetching starts with the first getmany
        deadline = t0 + 120
        while n < pre.events and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=500)
            for recs in batch.values():
                for r in recs:
                    orjson.loads(r.value)
                n += len(recs)
        dt = time.monotonic() - t0
        return {"events": n, "seconds": dt, "eps": n / dt if dt > 0 else None}
    finally:
        await c.stop()


def raw_consume(pre: Preloaded, repeats: int = 3) -> dict[str, Any]:
    runs = [asyncio.run(_raw_consume(pre)) for _ in range(repeats)]
    eps = sorted(r["eps"] for r in runs if r["eps"])
    return {"eps": eps[len(eps) // 2] if eps else None, "runs": runs}


# --- processes ---------------------------------------------------------------------------------------



def _rate(samples: list[tuple[float, float]], total: int) -> dict[str, Any]:
    """Events/s from (time, count) samples: from the last sample still at 0 (else the first sample) to the
    first one at ``total`` (else the last)."""
    if not samples:
        return {"eps": None, "counted": 0, "seconds": None, "complete": False}
    zero = [s for s in samples if s[1] <= 0]
    t0, n0 = zero[-1] if zero else samples[0]
    done = [s for s in samples if s[1] >= total]
    t1, n1 = done[0] if done else samples[-1]
    if t1 <= t0 or n1 <= n0:
        return {"eps": None, "counted": int(n1), "seconds": None, "complete": False}
    return {"eps": (n1 - n0) / (t1 - t0), "counted": int(n1), "seconds": t1 - t0, "complete": n1 >= total}


def _progress_run(cmd: list[str], env: dict[str, str], progress: Path, total: int, log: Path,
                  max_s: float, startup_max_s: float = 120.0) -> dict[str, Any]:
    """Run a contender that appends ``<epoch s> <count>`` lines to ``progress``; stop at ``total`` or ``max_s``."""
    t_spawn = time.time()
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=fh, start_new_session=True)
    samples: list[tuple[float, float]] = []
    try:
        deadline = None
        while True:
            time.sleep(0.5)
            if progress.exists():
                samples = [(float(a), float(b)) for a, b in
                           (ln.split() for ln in progress.read_text().splitlines() if ln.count(" ") == 1)]
            if proc.poll() is not None:
                break
            moving = [t for t, n in samples if n > 0]
            if moving and deadline is None:
                deadline = moving[0] + max_s
            if samples and samples[-1][1] >= total:
                break
            if deadline is not None and time.time() > deadline:
                break
            if deadline is None and time.time() - t_spawn > startup_max_s:
                break
    finally:
        stop_process_group(proc)
    out = _rate(samples, total)
    first = [t for t, n in samples if n > 0]
    out["startup_s"] = first[0] - t_spawn if first else None
    out["exit_code"] = proc.returncode
    if out["eps"] is None:
        out["log_tail"] = log.read_text(errors="replace")[-1500:]
    return out


def naive_faust(pre: Preloaded, tmp: Path, max_s: float) -> dict[str, Any]:
    """(b) the Faust app a typical user writes, in its own process."""
    tag = uuid.uuid4().hex[:6]
    progress = tmp / f"naive-{tag}.progress"
    env = dict(os.environ, NAIVE_BROKER=pre.bootstrap, NAIVE_CLICKS=pre.clicks, NAIVE_ORDERS=pre.orders,
               NAIVE_APP_ID=f"naive-{tag}", NAIVE_PROGRESS=str(progress), NAIVE_DATA_DIR=str(tmp / f"naive-{tag}"))
    out = _progress_run([sys.executable, str(HERE / "naive_faust.py")], env, progress, pre.events,
                        tmp / f"naive-{tag}.log", max_s)
    out["max_s"] = max_s
    return out


def quix(pre: Preloaded, tmp: Path, max_s: float, startup_max_s: float = 60.0) -> dict[str, Any]:
    """(d) the Quix Streams app, in its own process."""
    tag = uuid.uuid4().hex[:6]
    progress = tmp / f"quix-{tag}.progress"
    env = dict(os.environ, QUIX_BROKER=pre.bootstrap, QUIX_CLICKS=pre.clicks, QUIX_ORDERS=pre.orders,
               QUIX_GROUP=f"quix-{tag}", QUIX_PROGRESS=str(progress), QUIX_STATE_DIR=str(tmp / f"quix-{tag}"))
    out = _progress_run([sys.executable, str(HERE / "quix_app.py")], env, progress, pre.events,
                        tmp / f"quix-{tag}.log", max_s, startup_max_s)
    out["max_s"] = max_s
    return out


# --- (c) streamproc's worker -------------------------------------------------------------------------

def worker_env(bootstrap: str, tmp: Path, inputs: dict[str, str] | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """A worker environment with its own app id, web port and output topics (input topics given)."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({"STREAMPROC_BROKER": bootstrap, "STREAMPROC_APP_ID": f"bench-{tag}",
                "STREAMPROC_WEB_PORT": str(free_port()), "STREAMPROC_DATA_DIR": str(tmp / f"data-{tag}"),
                "STREAMPROC_LOG_LEVEL": "warn"})
    for t in TOPICS:
        env[f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"] = (inputs or {}).get(t, f"{tag}-{t}")
    env.update(extra or {})
    return env


async def _get(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as r:
        return await r.text()


def metric_sum(text: str, prefixes: tuple[str, ...], exclude: str = "order-items") -> float:
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefixes) and exclude not in ln)


COUNTED = ("streamproc_records_processed_total{", "streamproc_dead_letters_total{")


class WorkerProc:
    """``python -m streamproc worker`` in its own session, its log in ``tmp``."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.url = f"http://127.0.0.1:{env['STREAMPROC_WEB_PORT']}"
        asyncio.run(create_topics(env["STREAMPROC_BROKER"], topic_specs(Settings.from_env(env))))
        self.log = tmp / f"worker-{env['STREAMPROC_APP_ID']}.log"
        self.t_spawn = time.time()
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "streamproc", "worker"], env=env, stdout=fh,
                                         stderr=fh, start_new_session=True, cwd=str(HERE.parent))

    def get(self, path: str) -> str:
        async def go() -> str:
            async with aiohttp.ClientSession() as s:
                return await _get(s, self.url + path)
        return asyncio.run(go())

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(Exception):
                if orjson.loads(self.get("/readyz")).get("ready"):
                    return time.time() - self.t_spawn
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout_s}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        stop_process_group(self.proc)


def count_until(url: str, total: int, max_s: float, interval_s: float = 0.25,
                on_sample: Any = None) -> list[tuple[float, float]]:
    """Poll ``/metrics`` until processed + dead-lettered input records reach ``total`` (or ``max_s``)."""
    async def go() -> list[tuple[float, float]]:
        samples: list[tuple[float, float]] = []
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + max_s
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    text = await _get(s, url + "/metrics")
                    samples.append((time.time(), metric_sum(text, COUNTED)))
                    if on_sample is not None:
                        on_sample(text)
                    if samples[-1][1] >= total:
                        break
                await asyncio.sleep(interval_s)
        return samples
    return asyncio.run(go())


def streamproc_worker(pre: Preloaded, tmp: Path, max_s: float, profile_to: Path | None = None,
                      profile_s: float = 20.0) -> dict[str, Any]:
    """(c) the real worker on the pre-loaded topics, counted from its /metrics."""
    env = worker_env(pre.bootstrap, tmp, {"clicks": pre.clicks, "orders": pre.orders})
    w = WorkerProc(env, tmp)
    spy = None
    try:
        ready_s = w.wait_ready()
        if profile_to is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(w.proc.pid),
                                    "--duration", str(int(profile_s)), "--rate", "100", "--nonblocking",
                                    "--format", "raw", "-o", str(profile_to)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        samples = count_until(w.url, pre.events, max_s)
        out = _rate(samples, pre.events)
        metrics = w.get("/metrics")
        out["dead_letters"] = metric_sum(metrics, ("streamproc_dead_letters_total{",))
        out["startup_s"] = ready_s
        if spy is not None:
            try:
                _, err = spy.communicate(timeout=profile_s + 30)
                out["profile_rc"] = spy.returncode
                if spy.returncode:
                    out["profile_error"] = err.decode(errors="replace")[-500:]
            except subprocess.TimeoutExpired:
                spy.kill()
        return out
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        w.stop()
