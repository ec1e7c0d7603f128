"""Products in memory, engine only (no broker): heap per product while hot and once parked, and a flood.

    python benchmarks/product_memory.py [--products 100000] [--flood 300000] [--cap 50000] [--out FILE]

Quiet products: ``--products`` ids with one click each within one minute; a clock product moves event time
on a minute a tick. Heap (tracemalloc) and RSS per product after the first close (every product hot, in
its features tail) and 40 minutes later (parked: compressed snapshots). Flood: ``--flood`` distinct ids,
one click each, with ``max_hot=--cap``: the most products held as objects, peak RSS, and whether every
click reached a features record (each product's first record counts its click: ``clicks_1h`` = 1).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import psutil

from streamproc.demand import DemandEngine
from streamproc.detectors import DetectorConfig
from streamproc.events import Click
from streamproc.windows import WindowSpec

MIN = 60_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % MIN
HERE = Path(__file__).resolve().parent


def _feed(eng: DemandEngine, n: int, prefix: str, minute: int, offset: int, first: dict[str, float]) -> int:
    """One click for each of ``n`` new products within ``minute``, ticking every 20k clicks."""
    for i in range(n):
        ts = T0 + minute * MIN + i * MIN // n
        eng.apply_click(0, "clicks/0", Click(f"e{offset}", ts, "U", f"{prefix}{i:08d}", "c", "view", None),
                        ts + 1000, offset)
        offset += 1
        if i % 20_000 == 19_999:
            _collect(eng.tick(ts + 1000), first)
    return offset


def _collect(outputs: list[Any], first: dict[str, float]) -> None:
    for o in outputs:
        if o.kind == "features" and o.key not in first:
            first[o.key] = o.value["features"]["clicks_1h"]


def _advance(eng: DemandEngine, minutes: range, offset: int, first: dict[str, float], peak: list[int]) -> int:
    proc = psutil.Process()
    for m in minutes:
        ts = T0 + m * MIN + 30_000
        eng.apply_click(0, "clicks/0", Click(f"c{m}", ts, "U", "CLOCK", "c", "view", None), ts + 1000, offset)
        offset += 1
        while True:
            _collect(eng.tick(ts + 1000, budget=5_000), first)
            peak[0] = max(peak[0], len(eng.index))
            if not eng.more:
                break
        peak[1] = max(peak[1], proc.memory_info().rss)
    return offset


def quiet(n: int) -> dict[str, Any]:
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    tracemalloc.start()
    heap0 = tracemalloc.get_traced_memory()[0]
    eng = DemandEngine(WindowSpec(idle_timeout_ms=2000), DetectorConfig(), max_hot=None)
    eng.register_stream(0, "clicks/0", T0)
    first: dict[str, float] = {}
    peak = [0, 0]
    off = _feed(eng, n, "Q", 0, 0, first)
    off = _advance(eng, range(1, 2), off, first, peak)
    gc.collect()
    hot = {"hot": len(eng.index), "parked": eng.parked_count(),
           "heap_bytes_per_product": (tracemalloc.get_traced_memory()[0] - heap0) / n}
    t = time.process_time()
    _advance(eng, range(2, 41), off, first, peak)
    cpu = time.process_time() - t
    gc.collect()
    parked = {"hot": len(eng.index) - 1, "parked": eng.parked_count(),
              "heap_bytes_per_product": (tracemalloc.get_traced_memory()[0] - heap0) / n}
    tracemalloc.stop()
    blob = sum(len(b) for u in eng.units.values() for b in u.cold.values()) / max(eng.parked_count(), 1)
    return {"products": n, "after_first_close": hot, "after_40_min": parked,
            "compressed_snapshot_bytes": blob, "rss_growth_bytes_per_product": (proc.memory_info().rss - rss0) / n,
            "cpu_s_minutes_2_to_40": cpu,
            "note": "RSS keeps the hot phase's peak (the allocator does not return freed arenas); the heap is "
                    "what the products hold"}


def flood(n: int, cap: int) -> dict[str, Any]:
    proc = psutil.Process()
    gc.collect()
    rss0 = proc.memory_info().rss
    eng = DemandEngine(WindowSpec(idle_timeout_ms=2000), DetectorConfig(), max_hot=cap)
    eng.register_stream(0, "clicks/0", T0)
    first: dict[str, float] = {}
    peak = [0, 0]
    t = time.process_time()
    off = 0
    minutes = max(1, n // 200_000)
    for m in range(minutes):
        off = _feed(eng, n // minutes, f"F{m}-", m, off, first)
        peak[0] = max(peak[0], len(eng.index))
        peak[1] = max(peak[1], proc.memory_info().rss)
    _advance(eng, range(minutes, minutes + 12), off, first, peak)
    cpu = time.process_time() - t
    counted = sum(v for k, v in first.items() if k != "CLOCK")
    return {"distinct_ids": n, "cap": cap, "max_products_in_memory": peak[0], "peak_rss_mib": peak[1] / 2**20,
            "rss_growth_bytes_per_product": (peak[1] - rss0) / n, "clicks_counted": counted,
            "all_counted": counted == n, "products_tracked_end": eng.product_count() - 1,
            "cpu_s": cpu, "products_per_cpu_s": n / cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--flood", type=int, default=300_000)
    ap.add_argument("--cap", type=int, default=50_000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "product_memory.json")
    args = ap.parse_args()
    result = {"quiet": quiet(args.products), "flood": flood(args.flood, args.cap)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
