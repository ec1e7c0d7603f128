"""Engine-only events/s (decode -> engine -> close -> outputs), no broker: two source trees side by side.

    python benchmarks/engine_speed.py --before /path/to/old/tree [--repeats 3] [--out results/engine_speed.json]

Each run is a fresh process importing ``streamproc`` from one tree (``--before``: e.g. a ``git archive`` of
main; ``--after``: this checkout). The runs alternate before/after ``--repeats`` times (the machine is shared
and noisy) and the medians are reported. A run feeds the throughput benchmark's records (``steady``
scenario, clicks and orders, 100 events/s of event time; 1k products Zipf, 100k uniform) through
``Runtime.on_records`` in fetch-like batches (per topic and partition out of windows of 4,000 records),
feeds forwarded order lines back, ticks after every window with a FakeClock at event time, and times
each stage in CPU time (``time.process_time``: on a shared machine wall time counts the neighbours; the
wall-clock rate is kept beside it). ``--memory`` adds the engine's heap per product (tracemalloc, 100k
products with one click and one closed bucket each).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
_clock = time.process_time  # CPU time of this process: the machine is shared, wall time counts the neighbours
WINDOW = 4000
CONFIGS = {"1k": {"events": 120_000, "products": 1_000, "uniform": False},
           "100k": {"events": 60_000, "products": 100_000, "uniform": True}}


def _records(events: int, products: int, uniform: bool) -> list[tuple[str, bytes, bytes, int]]:
    sys.path.insert(0, str(HERE))
    from throughput import bench_events  # type: ignore[import-not-found]

    return bench_events(events, products=products, uniform=uniform)


async def _run(cfg: dict[str, Any]) -> dict[str, Any]:
    from streamproc.clock import FakeClock
    from streamproc.events import decoder_for
    from streamproc.runtime import ORDER_ITEMS, Record, Runtime, partition_for
    from streamproc.settings import INPUT_TOPICS, Settings

    evs = _records(cfg["events"], cfg["products"], cfg["uniform"])
    settings = Settings.from_env({"STREAMPROC_IDLE_TIMEOUT_MS": "2000"})
    clock = FakeClock(evs[0][3])
    sent: list[tuple[str, bytes | None, bytes]] = []
    outputs: dict[str, int] = defaultdict(int)

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value))

    rt = Runtime(settings, send, clock=clock)
    n = settings.partitions
    for logical in (*INPUT_TOPICS, ORDER_ITEMS):
        for p in range(n):
            rt.assign(logical, p)
    rt.ready = True
    offsets: dict[tuple[str, int], int] = defaultdict(int)

    def record(logical: str, key: bytes, value: bytes) -> Record:
        p = partition_for(key.decode(), n)
        off = offsets[logical, p]
        offsets[logical, p] = off + 1
        return Record(logical, p, off, key, value)

    windows = []
    for i in range(0, len(evs), WINDOW):
        chunk = evs[i:i + WINDOW]
        groups: dict[tuple[str, int], list[Any]] = defaultdict(list)
        for topic, key, value, _ts in chunk:
            r = record(topic, key, value)
            groups[topic, r.partition].append(r)
        windows.append((chunk[-1][3], list(groups.items())))

    decode_s = 0.0
    for _ts, groups in windows:  # decoding alone, for the stage split
        for (topic, _p), recs in groups:
            dec = decoder_for(topic)
            t = _clock()
            for r in recs:
                dec(r.value, 1 << 20)
            decode_s += _clock() - t

    ingest_s = close_s = publish_s = 0.0
    t_all = _clock()
    t_wall = time.perf_counter()
    for ts, groups in windows:
        clock.advance(max(0, ts - clock.now_ms()))
        t = _clock()
        for (topic, _p), recs in groups:
            await rt.on_records(topic, recs)
        items = [(k, v) for tp, k, v in sent if tp == ORDER_ITEMS]
        if items:
            await rt.on_records(ORDER_ITEMS, [record(ORDER_ITEMS, k, v) for k, v in items])
        ingest_s += _clock() - t
        t = _clock()
        out = rt.engine.tick(clock.now_ms(), rt.holds())
        close_s += _clock() - t
        t = _clock()
        sent.clear()
        await rt.publish(out)
        publish_s += _clock() - t
        for tp, _k, _v in sent:
            outputs[tp] += 1
        sent.clear()
    total_s = _clock() - t_all
    wall_s = time.perf_counter() - t_wall
    ev = len(evs)
    return {"events": ev, "cpu_seconds": total_s, "wall_seconds": wall_s, "events_per_s": ev / total_s,
            "events_per_wall_s": ev / wall_s,
            "us_per_event": {"decode_alone": 1e6 * decode_s / ev, "ingest_incl_decode": 1e6 * ingest_s / ev,
                             "close": 1e6 * close_s / ev, "publish": 1e6 * publish_s / ev,
                             "total": 1e6 * total_s / ev},
            "outputs": dict(outputs), "products": len(rt.engine.index)}


def _memory(n_products: int = 100_000) -> dict[str, Any]:
    import gc
    import tracemalloc

    from streamproc.demand import DemandEngine
    from streamproc.detectors import DetectorConfig
    from streamproc.events import Click
    from streamproc.windows import WindowSpec

    t0 = 1_780_000_000_000 - 1_780_000_000_000 % 60_000
    clicks = [Click(f"e{i}", t0 + i % 50_000, "U1", f"P{i:07d}", "c1", "view", None) for i in range(n_products)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    eng = DemandEngine(WindowSpec(idle_timeout_ms=2000), DetectorConfig())
    eng.register_stream(0, "clicks/0", t0)
    for i, c in enumerate(clicks):
        eng.apply_click(0, "clicks/0", c, t0 + 50_000, i)
    eng.tick(t0 + 3 * 60_000)  # one closed bucket each (features record kept)
    eng.dirty.clear()
    eng.wall_updated.clear()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {"products": len(eng.index), "bytes_per_product": used / max(len(eng.index), 1)}


def _child(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {}
    if args.memory:
        out["memory"] = _memory()
    else:
        out = asyncio.run(_run(CONFIGS[args.config]))
    print(json.dumps(out))


def _spawn(tree: Path, config: str | None, memory: bool = False) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
    cmd += ["--memory"] if memory else ["--config", str(config)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=str(tree), check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", type=Path, help="source tree of the reference engine")
    ap.add_argument("--after", type=Path, default=HERE.parent)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="1k,100k")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "engine_speed.json")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--config")
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    trees = {"before": args.before, "after": args.after} if args.before else {"after": args.after}
    result: dict[str, Any] = {"window_records": WINDOW, "repeats": args.repeats, "configs": {}}
    for config in args.configs.split(","):
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for i in range(args.repeats):
            for name, tree in trees.items():  # alternate, so that noise hits both alike
                r = _spawn(tree, config)
                runs[name].append(r)
                print(f"[engine_speed] {config} {name} run {i + 1}: {r['events_per_s']:,.0f} events/s "
                      f"{ {k: round(v, 2) for k, v in r['us_per_event'].items()} }", flush=True)
        summary: dict[str, Any] = {"params": CONFIGS[config]}
        for name, rs in runs.items():
            summary[name] = {
                "events_per_s_median": statistics.median(r["events_per_s"] for r in rs),
                "events_per_s_runs": [round(r["events_per_s"]) for r in rs],
                "events_per_wall_s_runs": [round(r["events_per_wall_s"]) for r in rs],
                "us_per_event_median": {k: round(statistics.median(r["us_per_event"][k] for r in rs), 3)
                                        for k in rs[0]["us_per_event"]},
                "outputs": rs[0]["outputs"], "products": rs[0]["products"]}
        if "before" in summary:
            summary["speedup"] = summary["after"]["events_per_s_median"] / summary["before"]["events_per_s_median"]
        result["configs"][config] = summary
    if args.memory:
        result["memory"] = {name: _spawn(tree, None, memory=True)["memory"] for name, tree in trees.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
