"""Latency and memory of the real worker on the embedded broker.

* Event -> alert and event -> features: the ``surges`` scenario (2 h of event time, 200 products,
  detector warm-up shortened as in the integration tests) is sent paced, so that events arrive at a
  chosen rate (about half the measured maximum). A bucket ``[s, e)`` can close once every stream of its
  unit has passed ``e + allowed_lateness``; the producer's pacing tells when that event time was sent
  (``start_wall + (T - first_ts) / speed``). Alert latency = receipt at a local webhook receiver minus
  that; features latency = the ``product-features`` record's timestamp (set by the worker's producer)
  minus that. The webhook group wait is set to 0 (the shipped default batches for 5 s).
* GET /features for 1 and 100 ids at a steady rate from a second process, against the worker's state
  after that run (the worker idle).
* Memory: clicks for 4,000 new products per stage (2 per product per stage) into a fresh worker;
  RSS (psutil) and ``streamproc_products_tracked`` after each stage; bytes/product = the slope.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from throughput import HERE, MIN, WorkerProc, count_until, metric_sum, worker_env

from streamproc import generator, loadgen
from streamproc.broker import free_port
from streamproc.processes import stop_process_group
from streamproc.settings import Settings

DETECTOR_ENV = {"STREAMPROC_DETECT_WARMUP_MS": str(40 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(60 * MIN),
                "STREAMPROC_IDLE_TIMEOUT_MS": "2000", "STREAMPROC_WEBHOOK_GROUP_WAIT_MS": "0"}


def _q(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else None


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in (c.partitions_for_topic(topic) or set(range(4)))]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        end = await c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all([await c.position(tp) >= end[tp] for tp in tps]):
                break
            for recs in (await c.getmany(timeout_ms=300)).values():
                out.extend(recs)
        return out
    finally:
        await c.stop()


def paced_latency(bootstrap: str, tmp: Path, target_eps: float, wall_s: float, http_s: float,
                  profile_to: Path | None = None) -> dict[str, Any]:
    """``profile_to``: py-spy (idle samples included) records the worker during the paced run, raw format."""
    duration_ms = 2 * 3_600_000
    speed = duration_ms / 1000 / wall_s
    start_ms = (int(time.time() * 1000) // MIN + 1) * MIN  # event time ahead of the wall clock: idle advance is harmless
    sc = generator.scenario("surges", start_ms=start_ms, duration_ms=duration_ms, rate_eps=target_eps / speed,
                            seed=3, products=200)
    items = list(generator.events(sc, 3))
    hook_port = free_port()
    hooks = tmp / "webhook-alerts.jsonl"
    receiver = subprocess.Popen([sys.executable, str(HERE / "procs.py"), "receiver", "--port", str(hook_port),
                                 "--out", str(hooks)], start_new_session=True)
    env = worker_env(bootstrap, tmp, extra={**DETECTOR_ENV,
                                            "STREAMPROC_WEBHOOK_URLS": f"http://127.0.0.1:{hook_port}/hook"})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    settings = Settings.from_env(env)
    w = WorkerProc(env, tmp)
    try:
        w.wait_ready()
        time.sleep(3)  # the webhook consumer joins its group
        start_wall = time.time() + 0.5
        spy = None
        if profile_to is not None:
            spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(w.proc.pid),
                                    "--duration", str(int(wall_s)), "--rate", "100", "--nonblocking", "--idle",
                                    "--format", "raw", "-o", str(profile_to)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rep = asyncio.run(loadgen.produce(bootstrap, items, speed=speed, start_wall=start_wall, progress=False,
                                          topic_names=names))
        count_until(w.url, len(items), 30)
        time.sleep(3)
        if spy is not None:
            try:
                spy.wait(timeout=wall_s + 30)
            except subprocess.TimeoutExpired:
                spy.kill()
        first_ts = items[0][3]
        close_lag = settings.window.allowed_lateness_ms + settings.window.grace_ms

        def due(t_ms: int) -> float:
            return start_wall + (t_ms + close_lag - first_ts) / 1000 / speed

        alerts = [orjson.loads(line) for line in hooks.read_bytes().splitlines() if line.strip()] \
            if hooks.exists() else []
        alert_lat = [a["recv_s"] - due(a["alert"]["window"]["end_ms"]) for a in alerts]
        feats = asyncio.run(_read_all(bootstrap, env["STREAMPROC_TOPIC_PRODUCT_FEATURES"]))
        feat_lat = []
        for r in feats:
            v = orjson.loads(r.value)
            if v["as_of_ms"] <= sc.end_ms:
                feat_lat.append(r.timestamp / 1000 - due(v["as_of_ms"]))
        http = {}
        if http_s > 0:
            ids = [f"P{i:05d}" for i in range(100)]
            for label, path, rate in (("1", "/features/P00001", 200.0), ("100", "/features?ids=" + ",".join(ids), 50.0)):
                out = tmp / f"http-{label}.json"
                subprocess.run([sys.executable, str(HERE / "procs.py"), "http-load", "--url", w.url + path,
                                "--rate", str(rate), "--seconds", str(http_s), "--out", str(out)],
                               check=True, timeout=http_s + 60)
                http[label] = orjson.loads(out.read_bytes())
        return {
            "target_eps": target_eps, "sent_eps": rep.rate_eps, "events": rep.events, "speed": speed,
            "alerts_received": len(alerts),
            "alert_latency_p50_s": _q(alert_lat, 0.5), "alert_latency_p99_s": _q(alert_lat, 0.99),
            "feature_records": len(feat_lat),
            "feature_freshness_p50_s": _q(feat_lat, 0.5), "feature_freshness_p99_s": _q(feat_lat, 0.99),
            "alert_latencies_s": alert_lat, "feature_latencies_s": feat_lat[:: max(1, len(feat_lat) // 2000)],
            "http": http, "detector_env": DETECTOR_ENV,
        }
    finally:
        w.stop()
        stop_process_group(receiver, 5)


def clock_products(partitions: int) -> list[str]:
    """One product id per partition: ordinary traffic on them moves every unit's event time on."""
    from streamproc.admission import partition_for

    return list({partition_for(f"CLOCK{k}", partitions): f"CLOCK{k}" for k in range(200)}.values())


def _produce_clicks(bootstrap: str, env: dict[str, str], items: list[tuple[int, str]], prefix: str) -> int:
    """A view click per (ts, product id), event ids ``<prefix>-<n>``; returns how many were produced."""
    evs = [("clicks", pid.encode(), orjson.dumps({"event_id": f"{prefix}-{j}", "ts": ts, "user_id": "U000001",
                                                   "product_id": pid, "category": "books", "action": "view"}), ts)
           for j, (ts, pid) in enumerate(items)]
    asyncio.run(loadgen.produce(bootstrap, evs, speed=None, progress=False,
                                topic_names={"clicks": env["STREAMPROC_TOPIC_CLICKS"]}))
    return len(evs)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` over ``xs`` (None without two distinct xs)."""
    if len(xs) < 2 or max(xs) <= min(xs):
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def quiet_memory(bootstrap: str, tmp: Path, stages: int = 4, per_stage: int = 25_000,
                 store: str = "memory://") -> dict[str, Any]:
    """Worker RSS against products tracked once they are quiet: stages of ``per_stage`` new products (two clicks
    each within two minutes), then ordinary traffic on one product per partition for 12 minutes of event time,
    after which the stage's products are parked (``streamproc_products_in_memory`` back near zero). RSS is
    sampled then; the slope over stages is what a product costs while it is not active (the heap the hot
    phase used is reused by the next stage)."""
    import psutil

    env = worker_env(bootstrap, tmp, extra={"STREAMPROC_STORE": store, "STREAMPROC_IDLE_TIMEOUT_MS": "2000"})
    clocks = clock_products(Settings.from_env(env).partitions)
    w = WorkerProc(env, tmp)
    samples = []
    span = stages * 15 * MIN
    t0 = (int(time.time() * 1000) // MIN - span // MIN - 2) * MIN
    try:
        w.wait_ready()
        proc = psutil.Process(w.proc.pid)
        time.sleep(2)
        samples.append({"products": 0, "rss_mib": proc.memory_info().rss / 2**20})
        sent = 0
        for k in range(stages):
            base = t0 + k * 15 * MIN
            items = sorted((base + rep * MIN + (i * 97) % MIN, f"Q{k}-{i:06d}") for rep in range(2) for i in range(per_stage))
            items += [(base + m * MIN + 30_000, c) for m in range(2, 15) for c in clocks]
            items.sort()
            sent += _produce_clicks(bootstrap, env, items, f"q{k}")
            count_until(w.url, sent, 600)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # the stage's products parked
                text = w.get("/metrics")
                hot = metric_sum(text, ("streamproc_products_in_memory",))
                if hot <= len(clocks) + per_stage // 100:
                    break
                time.sleep(1)
            products = metric_sum(text, ("streamproc_products_tracked",))
            samples.append({"products": products, "in_memory": hot, "rss_mib": proc.memory_info().rss / 2**20})
    finally:
        w.stop()
    xs = [s["products"] for s in samples[1:]]
    slope = _slope(xs, [s["rss_mib"] * 2**20 for s in samples[1:]])
    return {"store": store, "samples": samples, "bytes_per_quiet_product": slope,
            "method": f"least-squares slope of worker RSS over products tracked, {stages} stages of {per_stage:,} "
                      "new products, each stage sampled once its products were parked"}


def memory(bootstrap: str, tmp: Path, stages: int = 3, per_stage: int = 4000,
           store: str = "memory://") -> dict[str, Any]:
    """Worker RSS against products tracked, for ``store`` (``STREAMPROC_STORE``: ``memory://`` or
    ``rocksdb://``); also the size of the worker's data dir (``STREAMPROC_DATA_DIR``: RocksDB's files)."""
    import psutil

    def _du(path: Path) -> int:
        """Bytes of the regular files under ``path`` (0 if it does not exist)."""
        total = 0
        for p in path.rglob("*") if path.exists() else ():
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except OSError:  # RocksDB removes files while it compacts
                continue
        return total

    env = worker_env(bootstrap, tmp, extra={"STREAMPROC_STORE": store})
    data_dir = Path(env["STREAMPROC_DATA_DIR"])
    w = WorkerProc(env, tmp)
    samples = []
    try:
        w.wait_ready()
        proc = psutil.Process(w.proc.pid)
        time.sleep(2)
        samples.append({"products": 0, "rss_mib": proc.memory_info().rss / 2**20, "disk_bytes": _du(data_dir)})
        t0 = (int(time.time() * 1000) // MIN + 1) * MIN
        sent = 0
        for k in range(1, stages + 1):
            items = []
            base = t0 + (k - 1) * 5 * MIN
            n = k * per_stage
            for rep in range(2):
                for i in range(n):
                    ts = base + rep * 2 * MIN + (i * 97) % (2 * MIN)
                    pid = f"M{i:06d}"
                    items.append((ts, pid))
            items.sort()
            sent += _produce_clicks(bootstrap, env, items, f"m{k}")
            count_until(w.url, sent, 120)
            time.sleep(1.5)  # a tick or two: the gauge and the table writes
            products = metric_sum(w.get("/metrics"), ("streamproc_products_tracked",))
            samples.append({"products": products, "rss_mib": proc.memory_info().rss / 2**20, "events": sent,
                            "disk_bytes": _du(data_dir)})
    finally:
        w.stop()
    disk_after_stop = _du(data_dir)  # RocksDB flushes its memtables on close: the state's size in SST files
    xs = [s["products"] for s in samples[1:]]

    return {"store": store, "samples": samples,
            "bytes_per_product": _slope(xs, [s["rss_mib"] * 2**20 for s in samples[1:]]),
            "disk_bytes_per_product": _slope(xs, [float(s["disk_bytes"]) for s in samples[1:]]),
            "disk_bytes_end": samples[-1]["disk_bytes"], "disk_bytes_after_stop": disk_after_stop,
            "disk_bytes_per_product_after_stop": disk_after_stop / xs[-1] if xs and xs[-1] else None,
            "method": (f"least-squares slope of worker RSS over products tracked, stages of {per_stage:,} new "
                       "products; disk = bytes of the files under the worker's STREAMPROC_DATA_DIR while it runs "
                       "(RocksDB: mostly write-ahead log) and after it stopped")}

