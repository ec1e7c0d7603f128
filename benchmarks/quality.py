"""Detection quality without a broker: the real :class:`streamproc.runtime.Runtime` fed offline.

Events of the ``surges`` scenario go through ``Runtime.on_records`` in event-time order, in small
per-topic batches, with a :class:`~streamproc.clock.FakeClock` standing at the batch's event time (so
the wall clock and event time agree, as in a live run with no lag). Order lines that the runtime
forwards to another unit (``order-items`` sends) are fed back into ``on_records`` after the batch, as
the worker's own ``order-items`` agent would read them. ``tick`` runs after every batch.

Detector settings are those of ``tests/integration/test_pipeline.py`` (the shipped warm-up is a day,
longer than a benchmark scenario): warm-up 40 min, cooldown 60 min, idle timeout 2 s; everything else
is the shipped default. Alerts are scored with :func:`streamproc.evaluation.match_alerts`.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import defaultdict
from typing import Any

import orjson

from streamproc import generator
from streamproc.evaluation import match_alerts
from streamproc.settings import Settings
from streamproc.testing import Harness

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
SCENARIO = {"name": "surges", "duration_ms": 2 * 3_600_000, "rate_eps": 20.0, "products": 80}
DETECTOR_ENV = {"STREAMPROC_DETECT_WARMUP_MS": str(40 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(60 * MIN),
                "STREAMPROC_IDLE_TIMEOUT_MS": "2000"}
BATCH = 200
KINDS = ("demand_surge", "demand_drop")


def _scenario(seed: int) -> generator.Scenario:
    return generator.scenario(SCENARIO["name"], start_ms=START_MS, duration_ms=SCENARIO["duration_ms"],
                              rate_eps=SCENARIO["rate_eps"], seed=seed, products=SCENARIO["products"])


async def _run_seed(seed: int) -> tuple[list[dict[str, Any]], int]:
    sc = _scenario(seed)
    h = Harness(Settings.from_env(DETECTOR_ENV), start_ms=sc.start_ms, assign=True)

    async def flush(logical: str, batch: list[tuple[bytes | None, bytes]], ts: int) -> None:
        h.clock.advance(max(0, ts - h.clock.now_ms()))
        await h.feed(logical, batch)
        await h.tick()

    count = 0
    cur: str | None = None
    batch: list[tuple[bytes | None, bytes]] = []
    last_ts = sc.start_ms
    for topic, key, value, ts in generator.events(sc, seed):
        count += 1
        if topic != cur or len(batch) >= BATCH:
            if batch and cur is not None:
                await flush(cur, batch, last_ts)
            cur, batch = topic, []
        batch.append((key, value))
        last_ts = ts
    if batch and cur is not None:
        await flush(cur, batch, last_ts)
    # Let the wall clock run past the end so every bucket closes (idle advance).
    for _ in range(10):
        h.clock.advance(MIN)
        await h.tick()
    return [a for a in h.outputs("alerts") if a["window"]["start_ms"] < sc.end_ms], count


def synthetic_quality(seeds: list[int]) -> dict[str, Any]:
    """Precision, recall, F1 (pooled over seeds) and median detection delay per alert kind."""
    logging.getLogger("streamproc").setLevel(logging.ERROR)  # the runtime logs every alert as a warning
    tp = fp = detected = missed = 0
    delays: dict[str, list[float]] = defaultdict(list)
    per_seed = []
    events = 0
    for seed in seeds:
        alerts, n = asyncio.run(_run_seed(seed))
        events += n
        m = match_alerts(alerts, generator.truth(_scenario(seed)), kinds=KINDS)
        tp += sum(d["alerts"] for d in m.detected)
        fp += len(m.false_alerts)
        detected += len(m.detected)
        missed += len(m.missed)
        for d in m.detected:
            delays[d["kind"]].append(d["delay_ms"] / 60_000)
        per_seed.append({"seed": seed, "precision": m.precision, "recall": m.recall, "f1": m.f1,
                         "detected": len(m.detected), "missed": len(m.missed), "false_alerts": len(m.false_alerts),
                         "false_alert_keys": [a["dedup_key"] for a in m.false_alerts]})
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = detected / (detected + missed) if detected + missed else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "synthetic_f1": f1, "synthetic_precision": precision, "synthetic_recall": recall,
        "synthetic_median_delay_buckets": {k: statistics.median(v) for k, v in delays.items()},
        "synthetic_detail": {"seeds": seeds, "per_seed": per_seed, "events": events, "scenario": SCENARIO,
                             "detector_env": DETECTOR_ENV, "batch": BATCH,
                             "delay": "window end of the first matching alert minus anomaly start, in 1-min buckets"},
    }


if __name__ == "__main__":
    import sys
    import time

    t = time.monotonic()
    out = synthetic_quality([int(s) for s in sys.argv[1:]] or [1])
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode(), f"\n{time.monotonic() - t:.1f}s")
