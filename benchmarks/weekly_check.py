"""Synthetic detection check on the generated ``weekly`` scenario (a benchmark, never imported by tests).

Six weeks, 200 products, five seeds by default. Six weeks of full event traffic would be ~100 million
events per seed, so this check draws each product's per-bucket *counts* from the same rate model the
event generator uses (:func:`streamproc.traffic.shape_at` x the product's popularity x the anomaly
factors of the scenario's ground truth; orders Poisson, units = orders times the generator's quantity
mix) and runs the shipped detector (defaults: 1-day warm-up, 1-day cooldown) on each product's
``orders`` series at 5-minute buckets. Alerts are matched to the truth with
:func:`streamproc.evaluation.match_alerts`; false alerts are labelled with the calendar effect in force
(weekend, evening, payday, holiday), which the detector must not mistake for anomalies.

    python benchmarks/weekly_check.py [--seeds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamproc import detectors, generator, traffic  # noqa: E402
from streamproc.evaluation import match_alerts  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_780_000_000_000 // DAY_MS * DAY_MS
STEP_MS = 300_000
WEEKS, PRODUCTS, RATE_EPS = 6, 200, 30.0


def weekly_scenario(seed: int, weeks: int = WEEKS, products: int = PRODUCTS) -> generator.Scenario:
    return generator.scenario("weekly", start_ms=START_MS, duration_ms=weeks * 7 * DAY_MS, rate_eps=RATE_EPS,
                              seed=seed, products=products)


def counts(sc: generator.Scenario, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket starts, orders[product, bucket], units[product, bucket]) drawn from the scenario's rates."""
    rng = np.random.default_rng([seed, 0x3EE])
    cat = generator.catalog_of(sc)
    ts = np.arange(sc.start_ms, sc.end_ms, STEP_MS, dtype=np.int64)
    mids = ts.astype(np.float64) + STEP_MS / 2
    sessions_per_s = sc.rate_eps * (1.0 - sc.review_share) / traffic._events_per_session()
    orders_per_bucket = sessions_per_s * traffic.MEAN_VIEWS * traffic.P_CART * traffic.P_CHECKOUT * STEP_MS / 1000
    rate = orders_per_bucket * np.outer(cat.popularity, traffic.shape_at(sc, mids))
    for a in sc.anomalies:
        p = cat.index(a.product_id)
        overlap = np.clip((np.minimum(ts + STEP_MS, a.end_ms) - np.maximum(ts, a.start_ms)) / STEP_MS, 0.0, 1.0)
        rate[p] *= 1.0 + (a.factor - 1.0) * overlap
    orders = rng.poisson(rate)
    extra2, extra3 = traffic.QUANTITY_P[1], traffic.QUANTITY_P[2]
    units = orders + rng.binomial(orders, extra2 + extra3) + rng.binomial(orders, extra3)
    return ts, orders.astype(np.float64), units.astype(np.float64)


def calendar_cause(sc: generator.Scenario, t_ms: int) -> str:
    """Which calendar effect was in force at ``t_ms`` (for labelling false alerts)."""
    day = t_ms // DAY_MS
    hour = (t_ms % DAY_MS) / 3_600_000
    dom = int(str(np.datetime64(day, "D"))[-2:])
    if day == sc.start_ms // DAY_MS + 29:
        return "holiday"
    if dom in (1, 15):
        return "payday"
    if day % 7 in (2, 3):
        return "weekend"
    if 18 <= hour < 22:
        return "evening"
    return "none"


def check(seed: int, cfg: detectors.DetectorConfig | None = None) -> dict[str, Any]:
    cfg = cfg or detectors.DetectorConfig()
    sc = weekly_scenario(seed)
    ts, orders, _ = counts(sc, seed)
    cat = generator.catalog_of(sc)
    alerts = []
    for p, pid in enumerate(cat.product_ids):
        state = detectors.new_state(cfg)
        for t, x in zip(ts.tolist(), orders[p].tolist(), strict=True):
            d = detectors.step(state, x, t, STEP_MS, cfg)
            if d.transition == "firing":
                alerts.append({"status": "firing", "labels": {"alertname": d.kind, "product_id": pid},
                               "window": {"start_ms": t, "end_ms": t + STEP_MS}})
    m = match_alerts(alerts, generator.truth(sc))
    delays = [r["delay_ms"] / STEP_MS for r in m.detected]
    causes: dict[str, int] = {}
    for a in m.false_alerts:
        c = calendar_cause(sc, a["window"]["start_ms"])
        causes[c] = causes.get(c, 0) + 1
    return {"seed": seed, "anomalies": len(m.detected) + len(m.missed), "detected": len(m.detected),
            "missed": [(r["product_id"], r["kind"], r["start_ms"]) for r in m.missed],
            "false_alerts": len(m.false_alerts), "false_by_calendar": causes, "f1": m.f1,
            "median_delay_buckets": statistics.median(delays) if delays else None}


def weekly_series(seed: int, signal: str = "units", top: int = 20) -> list[tuple[list[float], list[int], int]]:
    """The ``top`` busiest products' per-bucket series (for the forecast benchmark)."""
    sc = weekly_scenario(seed)
    ts, orders, units = counts(sc, seed)
    data = units if signal == "units" else orders
    busiest = np.argsort(-data.sum(axis=1))[:top]
    return [(data[p].tolist(), ts.tolist(), STEP_MS) for p in busiest.tolist()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for seed in range(1, args.seeds + 1):
        r = check(seed)
        rows.append(r)
        print(f"seed {seed}: {r['detected']}/{r['anomalies']} found, {r['false_alerts']} false "
              f"{r['false_by_calendar']}, F1 {r['f1']:.3f}, median delay {r['median_delay_buckets']} buckets"
              + (f", missed {r['missed']}" if r["missed"] else ""), flush=True)
    found = sum(r["detected"] for r in rows)
    total = sum(r["anomalies"] for r in rows)
    false = sum(r["false_alerts"] for r in rows)
    f1 = 2 * found / (2 * found + false + (total - found)) if total else 0.0
    delays = [r["median_delay_buckets"] for r in rows if r["median_delay_buckets"] is not None]
    summary = {"found": found, "anomalies": total, "false_alerts": false, "f1_pooled": f1,
               "median_of_median_delays_buckets": statistics.median(delays) if delays else None}
    print("all seeds:", summary)
    if args.json:
        args.json.write_text(json.dumps({"seeds": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
