"""A flood of distinct product ids into one worker on the embedded broker: alive, memory bounded, all counted.

    python benchmarks/flood.py [--ids 2000000] [--store rocksdb://] [--cap 100000] [--out FILE]

``--ids`` clicks, each for a new product id (a bot sending random ids), spread over ``ids / 100k`` minutes
of event time ending 10 minutes ago, produced as fast as the producer goes, then a click a minute on one
product per partition up to now (ordinary traffic, on every partition, moving event time on). Sampled every second: worker
RSS, ``streamproc_products_in_memory`` (capped by ``STREAMPROC_MAX_PRODUCTS_IN_MEMORY=--cap``) and whether
``/healthz`` answered. Counted: the clicks processed and dead-lettered (``/metrics``), products tracked, and
``/features`` for 500 ids drawn at random (each must show its one click).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import psutil
from latency import clock_products
from throughput import HERE, MIN, WorkerProc, count_until, metric_sum, worker_env

from streamproc import loadgen
from streamproc.broker import EmbeddedBroker
from streamproc.settings import Settings


def _pid(i: int) -> str:
    return f"R{(i * 2654435761) % 4294967291:010d}"  # distinct for i < 4294967291, no visible order


def _sample(w: WorkerProc, proc: psutil.Process, out: list[dict[str, Any]], stop: threading.Event) -> None:
    while not stop.is_set():
        row: dict[str, Any] = {"t": time.time(), "rss_mib": proc.memory_info().rss / 2**20}
        try:
            with urllib.request.urlopen(w.url + "/healthz", timeout=5) as r:
                row["healthz"] = r.status
            text = w.get("/metrics")
            row["in_memory"] = metric_sum(text, ("streamproc_products_in_memory",))
            row["tracked"] = metric_sum(text, ("streamproc_products_tracked",))
        except Exception as exc:  # noqa: BLE001 - recorded
            row["error"] = repr(exc)[:200]
        out.append(row)
        stop.wait(1.0)


def flood(bootstrap: str, tmp: Path, ids: int, store: str, cap: int) -> dict[str, Any]:
    env = worker_env(bootstrap, tmp, extra={"STREAMPROC_STORE": store, "STREAMPROC_MAX_PRODUCTS_IN_MEMORY": str(cap),
                                            "STREAMPROC_IDLE_TIMEOUT_MS": "2000"})
    w = WorkerProc(env, tmp)
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        w.wait_ready()
        proc = psutil.Process(w.proc.pid)
        sampler = threading.Thread(target=_sample, args=(w, proc, samples, stop), daemon=True)
        sampler.start()
        minutes = max(1, ids // 100_000)
        t0 = (int(time.time() * 1000) // MIN - minutes - 10) * MIN
        started = time.time()
        chunk = 200_000
        for lo in range(0, ids, chunk):
            evs = []
            for i in range(lo, min(ids, lo + chunk)):
                ts = t0 + i * minutes * MIN // ids
                pid = _pid(i)
                evs.append(("clicks", pid.encode(), orjson.dumps({"event_id": f"f{i}", "ts": ts, "user_id": "U1",
                                                                  "product_id": pid, "action": "view"}), ts))
            asyncio.run(loadgen.produce(bootstrap, evs, speed=None, progress=False,
                                        topic_names={"clicks": env["STREAMPROC_TOPIC_CLICKS"]}))
        # then ordinary traffic: a click a minute up to now moves event time past the flood's buckets
        clock = [("clicks", key.encode(), orjson.dumps({"event_id": f"c{m}-{key}", "ts": ts, "user_id": "U1",
                                                        "product_id": key, "action": "view"}), ts)
                 for m in range(minutes, minutes + 10) if (ts := t0 + m * MIN + 30_000) < time.time() * 1000
                 for key in clock_products(Settings.from_env(env).partitions)]
        asyncio.run(loadgen.produce(bootstrap, clock, speed=None, progress=False,
                                    topic_names={"clicks": env["STREAMPROC_TOPIC_CLICKS"]}))
        produced_s = time.time() - started
        count_until(w.url, ids + len(clock), 3 * 3600)
        counted_s = time.time() - started
        rng = random.Random(7)
        sample = [_pid(rng.randrange(ids)) for _ in range(500)]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # the last buckets close and parked products catch up
            checked = [orjson.loads(w.get(f"/features/{pid}")) for pid in sample]
            if all(c.get("status") != "NOT_FOUND" for c in checked):
                break
            time.sleep(5)
        settled_s = time.time() - started
        text = w.get("/metrics")
        processed = metric_sum(text, ("streamproc_records_processed_total",))
        dead = metric_sum(text, ("streamproc_dead_letters_total",))
        tracked = metric_sum(text, ("streamproc_products_tracked",))
        clicks_ok = sum(1 for c in checked if (c.get("features") or {}).get("clicks_24h") == 1)
        statuses = sorted({(c.get("status"), (c.get("features") or {}).get("clicks_24h")) for c in checked}, key=str)
        alive = w.proc.poll() is None
    finally:
        stop.set()
        w.stop()
    answered = [s for s in samples if s.get("healthz") == 200]
    log = w.log.read_text(errors="replace").splitlines() if w.log.is_file() else []
    rebalances = [line[:300] for line in log if "assigned units" in line or "revoked" in line.lower()]
    return {"ids": ids, "store": store, "cap": cap, "alive_at_end": alive, "produced_s": produced_s,
            "counted_s": counted_s, "features_settled_s": settled_s, "processed": processed, "dead_lettered": dead, "products_tracked": tracked,
            "features_checked": len(checked), "features_with_the_click": clicks_ok,
            "features_seen": [list(x) for x in statuses][:10],
            "max_products_in_memory": max((s.get("in_memory") or 0 for s in samples), default=None),
            "peak_rss_mib": max((s["rss_mib"] for s in samples), default=None),
            "healthz_answered": f"{len(answered)}/{len(samples)}", "rebalances": rebalances,
            "worker_warnings": [line[:300] for line in log if "WARN" in line or "ERROR" in line][:50], "samples": samples[:: max(1, len(samples) // 200)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ids", type=int, default=2_000_000)
    ap.add_argument("--store", default="rocksdb://")
    ap.add_argument("--cap", type=int, default=100_000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "flood.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamproc-flood-") as tmp, EmbeddedBroker() as broker:
        res = flood(broker.bootstrap, Path(tmp), args.ids, args.store, args.cap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "samples"}, indent=2))


if __name__ == "__main__":
    main()
