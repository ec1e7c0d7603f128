"""Throughput on pre-loaded topics: a bare aiokafka consumer, the naive Faust app, streamproc's worker, Quix.

Every contender reads the SAME records: generator clicks and orders (~150-byte JSON) loaded into two
topics of 4 partitions before it starts. Each process-based contender gets its own consumer group and
output topics; rates are counted from its first processed record to its last (start-up and group join
are excluded and reported separately).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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


def bench_events(n: int, seed: int = 1, products: int = 1000,
                 uniform: bool = False) -> list[tuple[str, bytes, bytes, int]]:
    """About ``n`` clicks and orders of the ``steady`` scenario (``products`` products), in event-time order.

    ``uniform``: every product equally popular (the generator's Zipf exponent set to 0) instead of the
    generator's Zipf(1.1), under which 60k records of a 1M-product catalogue touch only ~15k products."""
    rate = 100.0
    duration_ms = int(n / rate * 1000 * 1.03)
    sc = generator.scenario("steady", start_ms=EVENTS_START_MS, duration_ms=duration_ms, rate_eps=rate, seed=seed,
                            products=products)
    if uniform:
        sc = dataclasses.replace(sc, zipf_s=0.0)
    out = [e for e in generator.events(sc, seed) if e[0] != "reviews"]
    return out[:n]


def preload(bootstrap: str, n: int, tag: str, products: int = 1000, partitions: int = 4,
            uniform: bool = False) -> Preloaded:
    items = bench_events(n, products=products, uniform=uniform)
    names = {"clicks": f"{tag}-clicks", "orders": f"{tag}-orders"}
    asyncio.run(create_topics(bootstrap, [(names["clicks"], partitions, {}), (names["orders"], partitions, {})]))
    rep = asyncio.run(loadgen.produce(bootstrap, items, speed=None, progress=False, topic_names=names))
    if rep.errors:
        raise RuntimeError(f"{rep.errors} records not acknowledged while pre-loading")
    params: dict[str, Any] = {"scenario": "steady", "rate_eps": 100.0, "products": products, "seed": 1,
                              "clicks": sum(1 for e in items if e[0] == "clicks"),
                              "orders": sum(1 for e in items if e[0] == "orders"), "partitions": partitions}
    if uniform:
        params["popularity"] = "uniform"
    seen: dict[str, int] = {}  # products named by the records: clicks' and every order line's
    for t, _k, v, _ts in items:
        d = orjson.loads(v)
        for pid in ([d["product_id"]] if t == "clicks" else [i["product_id"] for i in d["items"]]):
            seen[pid] = seen.get(pid, 0) + 1
    params["distinct_products"] = len(seen)
    params["products_seen_once"] = sum(1 for c in seen.values() if c == 1)
    return Preloaded(bootstrap, names["clicks"], names["orders"], len(items),
                     sum(len(v) for _t, _k, v, _ts in items) / len(items), rep.rate_eps, params)


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


# --- (a') the batch ceiling: the same engine behind a bare aiokafka consumer group ------------------

async def _batch_ceiling(pre: Preloaded) -> dict[str, Any]:
    """streamproc's Runtime (decode, count, close, publish) fed by a plain consumer group, outputs to a no-op
    sink, no checkpoints and no Faust: what the worker could reach with its processing as it is."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor

    from streamproc.runtime import Runtime

    settings = Settings.from_env({"STREAMPROC_TOPIC_CLICKS": pre.clicks, "STREAMPROC_TOPIC_ORDERS": pre.orders,
                                  "STREAMPROC_PARTITIONS": str(pre.params.get("partitions", 4)),
                                  "STREAMPROC_CUSTOMERS": "0"})
    sent = [0]

    async def sink(_logical: str, _key: Any, _value: bytes, _headers: Any) -> None:
        sent[0] += 1

    rt = Runtime(settings, sink)
    logical = {pre.clicks: "clicks", pre.orders: "orders"}
    c = AIOKafkaConsumer(pre.clicks, pre.orders, bootstrap_servers=pre.bootstrap, group_id=f"ceiling-{uuid.uuid4().hex[:8]}",
                         enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=50,
                         max_partition_fetch_bytes=8 << 20, partition_assignment_strategy=(RangePartitionAssignor,))
    await c.start()
    try:
        n, t0 = 0, None
        deadline = time.monotonic() + 180
        while n < pre.events and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=100, max_records=2000)
            if batch and t0 is None:
                t0 = time.monotonic()
                for tp in c.assignment():
                    rt.engine.register_stream(tp.partition, f"{logical[tp.topic]}/{tp.partition}", rt.clock.now_ms())
            for tp, recs in batch.items():
                await rt.on_records(logical[tp.topic], recs)
                n += len(recs)
            await rt.tick()
        dt = time.monotonic() - (t0 or time.monotonic())
        return {"events": n, "seconds": dt, "eps": n / dt if dt > 0 else None, "outputs": sent[0]}
    finally:
        await c.stop()


def batch_ceiling(pre: Preloaded, repeats: int = 2) -> dict[str, Any]:
    runs = [asyncio.run(_batch_ceiling(pre)) for _ in range(repeats)]
    eps = sorted(r["eps"] for r in runs if r["eps"])
    return {"eps": eps[-1] if eps else None, "runs": runs}


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

    def stop(self, deadline_s: float = 15.0) -> None:
        stop_process_group(self.proc, deadline_s)


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
                      profile_s: float = 20.0, stop_s: float = 15.0, customers: bool = False) -> dict[str, Any]:
    """(c) the real worker on the pre-loaded topics, counted from its /metrics. ``stop_s``: SIGKILL the
    worker if it has not exited that long after SIGTERM. ``customers``: with the customer side (the
    default configuration); without it, the demand path alone."""
    partitions = int(pre.params.get("partitions", 4))
    extra = {"STREAMPROC_CUSTOMERS": "1" if customers else "0"}
    if partitions != 4:
        extra["STREAMPROC_PARTITIONS"] = str(partitions)
    env = worker_env(pre.bootstrap, tmp, {"clicks": pre.clicks, "orders": pre.orders}, extra)
    w = WorkerProc(env, tmp)
    spy = None
    out: dict[str, Any] = {}
    try:
        ready_s = w.wait_ready()
        if profile_to is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(w.proc.pid),
                                    "--duration", str(int(profile_s)), "--rate", "100", "--nonblocking",
                                    "--format", "raw", "-o", str(profile_to)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        last: list[str] = [""]
        samples = count_until(w.url, pre.events, max_s, on_sample=lambda text: last.__setitem__(0, text))
        out.update(_rate(samples, pre.events))
        try:
            metrics = w.get("/metrics")
        except Exception:  # noqa: BLE001 - a worker busy closing windows can miss the 5 s timeout
            metrics = last[0]
        out["dead_letters"] = metric_sum(metrics, ("streamproc_dead_letters_total{",))
        out["products_tracked"] = metric_sum(metrics, ("streamproc_products_tracked",))
        out["rss_mib_end"] = _rss_mib(w.proc.pid)
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
        t_stop = time.monotonic()
        w.stop(stop_s)
        out["stop_s"] = round(time.monotonic() - t_stop, 1)


def _rss_mib(pid: int) -> float | None:
    try:
        import psutil

        return float(psutil.Process(pid).memory_info().rss / 2**20)
    except Exception:  # noqa: BLE001 - a nicety
        return None


# --- (c) against the number of products and of partitions --------------------------------------------

CURVE_PRODUCTS = (1_000, 100_000, 1_000_000)
CURVE_PARTITIONS = (1, 4, 8)


def curve(bootstrap: str, tmp: Path, events: int = 60_000, products: tuple[int, ...] = CURVE_PRODUCTS,
          partitions: tuple[int, ...] = CURVE_PARTITIONS, max_s: float = 18.0) -> dict[str, Any]:
    """(c) on fresh topics per point: ``events`` records with ids drawn uniformly from ``products`` products
    (4 partitions), and from 1,000 products on ``partitions`` partitions (the 1,000 / 4 point is shared).

    Each point: pre-load, start a worker, count from /metrics (for at most ``max_s`` s from the moment the
    worker is ready; a poll the busy worker answers late can stretch that by a few seconds), stop it. Also kept per point: distinct products in the records (and how many appear once), the
    worker's ``streamproc_products_tracked`` and RSS at the end."""
    points = [(p, 4) for p in products]
    points += [(1_000, n) for n in partitions if (1_000, n) not in points]
    out: dict[str, Any] = {"events": events, "popularity": "uniform", "max_s": max_s, "points": []}
    for n_products, n_partitions in points:
        t = time.monotonic()
        try:
            pre = preload(bootstrap, events, f"curve{n_products}x{n_partitions}-{uuid.uuid4().hex[:6]}",
                          products=n_products, partitions=n_partitions, uniform=True)
            w = streamproc_worker(pre, tmp, max_s, stop_s=1.0)  # its state is thrown away: no clean stop needed
        except Exception as exc:  # noqa: BLE001 - one failed point must not lose the others
            out["points"].append({"products": n_products, "partitions": n_partitions, "eps": None,
                                  "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                                  "point_s": round(time.monotonic() - t, 1)})
            continue
        out["points"].append({
            "products": n_products, "partitions": n_partitions, "records": pre.events,
            "distinct_products": pre.params["distinct_products"], "products_seen_once": pre.params["products_seen_once"],
            "eps": w.get("eps"), "complete": w.get("complete"), "counted": w.get("counted"),
            "seconds": w.get("seconds"), "startup_s": w.get("startup_s"), "dead_letters": w.get("dead_letters"),
            "products_tracked": w.get("products_tracked"), "rss_mib_end": w.get("rss_mib_end"),
            "stop_s": w.get("stop_s"),
            "point_s": round(time.monotonic() - t, 1),
        })
        print(f"[bench]   curve {n_products} products / {n_partitions} partitions: "
              f"{w.get('eps') or 0:,.0f} events/s ({out['points'][-1]['point_s']} s)", flush=True)
    return out

