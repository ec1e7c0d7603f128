"""Customers: bytes per customer in memory and on disk, and how soon a marketing trigger follows its due time.

    python benchmarks/customers.py [--stages 4] [--per-stage 20000] [--latency-s 120] [--out FILE]

* Heap per customer, engine only (no broker): a ``CustomerEngine`` fed stages of new customers (a session
  of two views and an add-to-cart, one in three then orders), the watermark past each stage; tracemalloc
  after each stage, bytes per customer = the least-squares slope (as ``product_memory.py`` does products).
* Worker memory and disk: the same journeys into ``python -m streamproc worker`` on the embedded broker,
  stage by stage, on a catalogue of 200 products (so the product side stays the same size); worker RSS
  against ``streamproc_table_keys{table="customers"}`` after each stage, bytes per customer = the slope.
  The worker's duplicate check remembers ids per record, not per customer: it is capped at 1,000 ids here
  so that it does not count as customer state. On disk: the customers' changelog
  (``<app id>-customers-changelog``, compacted) read back from the broker: bytes (key + value) of the
  newest record per customer — what compaction keeps — and of every record written.
* Trigger latency: a worker fed in real time (speed 1) with clicks on one product per partition every
  250 ms and customers who put a product in their cart and leave in the minute before (sent at once at the
  start), so that their ``cart_abandoned`` (``STREAMPROC_CART_ABANDON_MS`` = 1 min, its minimum) falls due
  within the live part at a known event time. The producer's pacing says
  when each event time was sent (``start_wall + (T - first_ts) / speed``). Latency = the trigger record's
  timestamp on ``marketing-triggers`` (set by the worker's producer) minus the wall time at which event
  time reached the trigger's due time plus the allowed lateness (the watermark passed it). Also from when
  the product bucket holding the due time became final: the customer watermark follows the products'
  final buckets (customer_runtime.py), so a trigger waits up to one bucket for it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
from latency import _q, _read_all, _slope, clock_products
from throughput import HERE, MIN, WorkerProc, count_until, metric_sum, worker_env

from streamproc import loadgen
from streamproc.customer_runtime import SHARED_KEY
from streamproc.customers import CustomerEngine
from streamproc.events import decode_click, decode_order
from streamproc.settings import Settings

PRODUCTS = [f"P{i:04d}" for i in range(200)]
CATEGORIES = ("books", "shoes", "toys", "garden", "kitchen")
STAGE_MS = 15 * MIN


def journeys(stage: int, n: int, base_ms: int) -> list[tuple[str, bytes, bytes, int]]:
    """``n`` new customers ``S<stage>-<i>`` within two minutes of ``base_ms``: two views and an add-to-cart
    in one session, and for one in three an order of the carted product a minute later. Time-ordered
    ``(topic, key, value, ts)`` items, keyed by product id."""
    items = []
    for i in range(n):
        uid, t = f"S{stage}-{i:07d}", base_ms + (i * 7919) % (2 * MIN)
        a, b = PRODUCTS[(i * 31 + stage) % len(PRODUCTS)], PRODUCTS[(i * 17 + 5) % len(PRODUCTS)]
        for j, (pid, action) in enumerate(((a, "view"), (b, "view"), (b, "add_to_cart"))):
            items.append(("clicks", pid.encode(), orjson.dumps({
                "event_id": f"{uid}-c{j}", "ts": t + j * 20_000, "user_id": uid, "session_id": f"{uid}-s",
                "product_id": pid, "category": CATEGORIES[int(pid[1:]) % len(CATEGORIES)], "action": action}),
                t + j * 20_000))
        if i % 3 == 0:
            ts = t + 100_000
            items.append(("orders", b.encode(), orjson.dumps({
                "order_id": f"{uid}-o", "ts": ts, "user_id": uid, "currency": "EUR",
                "items": [{"product_id": b, "quantity": 1 + i % 2, "unit_price": 5.0 + int(b[1:]) % 90,
                           "category": CATEGORIES[int(b[1:]) % len(CATEGORIES)]}]}), ts))
    items.sort(key=lambda it: it[3])
    return items


def _ticks(clocks: list[str], start_ms: int, end_ms: int, step_ms: int, tag: str) -> list[tuple[str, bytes, bytes, int]]:
    """A view on each clock product every ``step_ms`` in ``[start_ms, end_ms)``: every unit's event time moves."""
    out = []
    for k, t in enumerate(range(start_ms, end_ms, step_ms)):
        for pid in clocks:
            out.append(("clicks", pid.encode(), orjson.dumps({
                "event_id": f"{tag}-{k}-{pid}", "ts": t, "user_id": "clock", "session_id": f"clock-{tag}-{k}",
                "product_id": pid, "category": "books", "action": "view"}), t))
    return out


def heap_per_customer(stages: int = 4, per_stage: int = 20_000) -> dict[str, Any]:
    """Engine only: tracemalloc heap after each stage of new customers (applied: the watermark past them)."""
    t0 = 1_780_000_000_000 - 1_780_000_000_000 % MIN
    gc.collect()
    tracemalloc.start()
    heap0 = tracemalloc.get_traced_memory()[0]
    eng = CustomerEngine()
    seq = 0
    samples = []
    t = time.process_time()
    for k in range(stages):
        for topic, _key, value, _ts in journeys(k, per_stage, t0 + k * STAGE_MS):
            if topic == "clicks":
                eng.process_click(decode_click(value), seq)  # type: ignore[arg-type]
            else:
                eng.process_order(decode_order(value), seq)  # type: ignore[arg-type]
            seq += 1
        eng.tick(t0 + (k + 1) * STAGE_MS)
        eng.dirty.clear()
        gc.collect()
        samples.append({"customers": len(eng.customers), "heap_bytes": tracemalloc.get_traced_memory()[0] - heap0})
    cpu = time.process_time() - t
    tracemalloc.stop()
    snaps = [len(uid.encode()) + len(eng.snapshot(uid)) for uid in list(eng.customers)[:: max(1, len(eng.customers) // 2000)]]
    return {"stages": stages, "per_stage": per_stage, "samples": samples,
            "heap_bytes_per_customer": _slope([s["customers"] for s in samples], [s["heap_bytes"] for s in samples]),
            "snapshot_bytes_per_customer": sum(snaps) / len(snaps), "records": seq, "cpu_s": cpu,
            "method": "tracemalloc heap of a CustomerEngine after each stage of new customers, least-squares slope; "
                      "snapshot = key + CustomerEngine.snapshot() bytes (one changelog record)"}


def worker_memory(bootstrap: str, tmp: Path, stages: int = 4, per_stage: int = 20_000) -> dict[str, Any]:
    """Worker RSS against customers tracked, stage by stage, and the customers' changelog bytes per customer."""
    import psutil

    env = worker_env(bootstrap, tmp, extra={"STREAMPROC_IDLE_TIMEOUT_MS": "2000", "STREAMPROC_DEDUP_MAX_IDS": "1000"})
    settings = Settings.from_env(env)
    clocks = clock_products(settings.partitions)
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders")}
    span = stages * STAGE_MS
    t0 = (int(time.time() * 1000) // MIN - span // MIN - 2) * MIN
    w = WorkerProc(env, tmp)
    samples = []
    try:
        w.wait_ready()
        proc = psutil.Process(w.proc.pid)
        sent = 0
        for k in range(stages):
            base = t0 + k * STAGE_MS
            # the stage's customers, then event time on past their sessions (their records applied)
            items = journeys(k, per_stage, base) + _ticks(clocks, base + 3 * MIN, base + STAGE_MS, MIN, f"k{k}")
            items.sort(key=lambda it: it[3])
            asyncio.run(loadgen.produce(bootstrap, items, speed=None, progress=False, topic_names=names))
            sent += len(items)
            count_until(w.url, sent, 600)
            want = (k + 1) * per_stage
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                text = w.get("/metrics")
                customers = metric_sum(text, ('streamproc_table_keys{table="customers"}',))
                if customers >= want:
                    break
                time.sleep(0.5)
            time.sleep(2)  # a checkpoint: the changed customers' snapshots written
            samples.append({"customers": customers, "rss_mib": proc.memory_info().rss / 2**20, "records": sent})
    finally:
        w.stop()
    changelog = asyncio.run(_read_all(bootstrap, f"{settings.app_id}-customers-changelog"))
    newest: dict[bytes, int] = {}
    written = 0
    for r in changelog:
        if r.key == SHARED_KEY:
            continue
        size = len(r.key or b"") + len(r.value or b"")
        written += size
        newest[r.key] = size
    n = samples[-1]["customers"] if samples else 0
    return {"stages": stages, "per_stage": per_stage, "samples": samples,
            "bytes_per_customer": _slope([s["customers"] for s in samples], [s["rss_mib"] * 2**20 for s in samples]),
            "changelog_bytes_per_customer": sum(newest.values()) / len(newest) if newest else None,
            "changelog_bytes_written_per_customer": written / n if n else None,
            "changelog_records": len(changelog), "changelog_customers": len(newest),
            "method": f"least-squares slope of worker RSS over customers tracked, {stages} stages of {per_stage:,} new "
                      "customers (4 records each on average, 200 products), sampled once each stage was applied "
                      "and checkpointed; STREAMPROC_DEDUP_MAX_IDS=1000. Changelog: the customers' changelog topic "
                      "read back (key + value bytes; newest record per customer, and every record written)"}


def trigger_latency(bootstrap: str, tmp: Path, wall_s: float = 120.0, customers: int = 300,
                    abandon_ms: int = 60_000, step_ms: int = 250) -> dict[str, Any]:
    """Wall time from event time passing a ``cart_abandoned`` trigger's due time to its publication. The carts
    are put in a minute of history (sent at once at the start), so their due times fall in the live part."""
    env = worker_env(bootstrap, tmp, extra={"STREAMPROC_CART_ABANDON_MS": str(abandon_ms),
                                            "STREAMPROC_IDLE_TIMEOUT_MS": "2000"})
    settings = Settings.from_env(env)
    spec = settings.window
    lateness = spec.allowed_lateness_ms + spec.grace_ms
    clocks = clock_products(settings.partitions)
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders")}
    duration_ms = int(wall_s * 1000)
    span = duration_ms - spec.bucket_ms - lateness - 5_000  # every due time's bucket final within the run
    if span <= 0:
        raise ValueError(f"wall_s={wall_s} is too short for {spec.bucket_ms} ms buckets")
    w = WorkerProc(env, tmp)
    try:
        w.wait_ready()
        start_ms = (int(time.time() * 1000) // 1000 + 3) * 1000  # live from here; event time = the wall clock
        history_ms = start_ms - abandon_ms - 10_000
        items = _ticks(clocks, history_ms, start_ms + duration_ms, step_ms, "t")
        for i in range(customers):
            uid, t = f"L{i:05d}", start_ms - abandon_ms + 2_000 + i * span // customers
            pid = PRODUCTS[i % len(PRODUCTS)]
            for j, action in enumerate(("view", "add_to_cart")):
                items.append(("clicks", pid.encode(), orjson.dumps({
                    "event_id": f"{uid}-{j}", "ts": t + j * 500, "user_id": uid, "session_id": f"{uid}-s",
                    "product_id": pid, "category": "books", "action": action}), t + j * 500))
        items.sort(key=lambda it: it[3])
        first_ts = items[0][3]
        start_wall = first_ts / 1000  # the history is overdue: sent at once, then live at speed 1
        rep = asyncio.run(loadgen.produce(bootstrap, items, speed=1.0, start_wall=start_wall, progress=False,
                                          topic_names=names))
        count_until(w.url, len(items), 30)
        time.sleep(2)
        recs = asyncio.run(_read_all(bootstrap, env["STREAMPROC_TOPIC_MARKETING_TRIGGERS"]))
    finally:
        w.stop()

    def sent_at(t_ms: int) -> float:
        return start_wall + (t_ms - first_ts) / 1000

    after_due, after_bucket = [], []
    for r in recs:
        t = orjson.loads(r.value)
        if t["kind"] != "cart_abandoned" or not t["user_id"].startswith("L"):
            continue
        due = t["ts"]
        if due + lateness < start_ms:
            continue  # due within the history
        bucket_end = (due // spec.bucket_ms + 1) * spec.bucket_ms
        after_due.append(r.timestamp / 1000 - sent_at(due + lateness))
        after_bucket.append(r.timestamp / 1000 - sent_at(bucket_end + lateness))
    return {"customers": customers, "triggers": len(after_due), "records": rep.events, "sent_eps": rep.rate_eps,
            "wall_s": wall_s, "abandon_ms": abandon_ms, "bucket_ms": spec.bucket_ms,
            "allowed_lateness_ms": spec.allowed_lateness_ms,
            "trigger_latency_p50_s": _q(after_due, 0.5), "trigger_latency_p99_s": _q(after_due, 0.99),
            "trigger_latency_max_s": max(after_due, default=None),
            "after_bucket_final_p50_s": _q(after_bucket, 0.5), "after_bucket_final_p99_s": _q(after_bucket, 0.99),
            "latencies_s": after_due}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--per-stage", type=int, default=20_000)
    ap.add_argument("--latency-s", type=float, default=120.0)
    ap.add_argument("--latency-customers", type=int, default=300)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "customers.json")
    ap.add_argument("--no-worker", action="store_true", help="the engine's heap only (no broker)")
    args = ap.parse_args()
    result: dict[str, Any] = {"heap": heap_per_customer(args.stages, args.per_stage)}
    if not args.no_worker:
        import tempfile

        from streamproc.broker import EmbeddedBroker

        with tempfile.TemporaryDirectory(prefix="streamproc-customers-") as tmp, EmbeddedBroker() as broker:
            result["worker"] = worker_memory(broker.bootstrap, Path(tmp), args.stages, args.per_stage)
            result["latency"] = trigger_latency(broker.bootstrap, Path(tmp), args.latency_s, args.latency_customers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk not in ("samples", "latencies_s")}
                      for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
