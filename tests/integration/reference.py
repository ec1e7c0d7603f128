"""What a run of the worker must produce, and how to compare: shared by the recovery, RocksDB and scale-out
tests.

The reference is the pure engine (``streamproc.testing.Harness``: a fake clock that follows event time, no
broker, order lines handed straight back, the worker's sentiment model) over the same records. A worker run — one worker or several, crashed and
restarted, rebalanced — must give exactly its product-features records (a window emitted again after a
crash or a rebalance must be an identical copy) and exactly its product alert transitions.
"""

from __future__ import annotations

import asyncio
import collections
import urllib.request
from dataclasses import dataclass
from typing import Any

from streamproc import generator
from streamproc.sentiment import load_scorer
from streamproc.settings import Settings
from streamproc.testing import Harness

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
DETECTOR = {"STREAMPROC_DETECT_WARMUP_MS": str(40 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(60 * MIN)}
COUNTED = ("streamproc_records_processed_total{", "streamproc_dead_letters_total{")


def offline(settings: Settings, sc: generator.Scenario, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Features and alerts of the pure engine over ``generator.events(sc, seed)``, up to the scenario's end."""
    h = Harness(settings, start_ms=sc.start_ms, scorer=load_scorer(settings.model_dir))  # the worker's model

    async def run() -> None:
        for i, (topic, key, value, ts) in enumerate(generator.events(sc, seed)):
            h.clock.set(ts)  # the fake clock follows event time
            await h.feed(topic, [(key, value)])
            if i % 300 == 0:
                await h.tick()
        h.clock.set(sc.end_ms + 2 * MIN)
        await h.tick()

    asyncio.run(run())
    return ([f for f in h.outputs("product-features") if f["as_of_ms"] <= sc.end_ms],
            [a for a in h.outputs("alerts") if a["window"]["start_ms"] < sc.end_ms])


def counted(worker_url: str) -> float:
    """Input records a worker has processed or dead-lettered (order lines forwarded between units excluded)."""
    text = urllib.request.urlopen(worker_url + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(COUNTED) and "order-items" not in line)


def is_product_alert(a: dict[str, Any]) -> bool:
    return bool(a["labels"].get("product_id"))


def fkey(f: dict[str, Any]) -> tuple[Any, ...]:
    return (f["product_id"], f["as_of_ms"])


def akey(a: dict[str, Any]) -> tuple[Any, ...]:
    """Identity and content of an alert transition. The detector state is stored with 9 decimals, so a
    baseline restored from the table may differ from the live one in the last digits of ``expected``."""
    return (a["alert_id"], a["status"], a["window"]["start_ms"], a["observed"], round(a["expected"], 6))


@dataclass
class Comparison:
    windows: int
    duplicates: int
    """Windows emitted more than once (identical copies: a replay after a crash or a rebalance)."""
    alerts: int


def assert_same_outputs(features: list[dict[str, Any]], alerts: list[dict[str, Any]],
                        ref_features: list[dict[str, Any]], ref_alerts: list[dict[str, Any]]) -> Comparison:
    """Every reference window present, none extra, every copy identical to the reference; the same product
    alert transitions. (Category alerts are detected from per-worker memory — the categories of the
    partitions a worker owns — and warm up again after a restart or a rebalance: not compared.)"""
    got: dict[tuple[Any, ...], list[dict[str, Any]]] = collections.defaultdict(list)
    for f in features:
        got[fkey(f)].append(f["features"])
    want = {fkey(f): f["features"] for f in ref_features}
    missing = set(want) - set(got)
    assert not missing, f"{len(missing)} windows missing, e.g. {sorted(missing)[:3]}"
    extra = set(got) - set(want)
    assert not extra, f"{len(extra)} windows not in the reference, e.g. {sorted(extra)[:3]}"
    for k, copies in got.items():
        for c in copies:
            assert c == want[k], (k, c, want[k])
    got_a = collections.Counter(akey(a) for a in alerts if is_product_alert(a))
    want_a = collections.Counter(akey(a) for a in ref_alerts if is_product_alert(a))
    assert set(got_a) == set(want_a), (sorted(set(got_a) - set(want_a))[:5], sorted(set(want_a) - set(got_a))[:5])
    return Comparison(len(want), sum(len(c) - 1 for c in got.values()), sum(want_a.values()))


def surges_40_products(seed: int) -> generator.Scenario:
    """The 90-minute ``surges`` scenario over 40 products that the scale-out and broker-failure tests replay."""
    return generator.scenario("surges", start_ms=START_MS, duration_ms=90 * MIN, rate_eps=6.0, seed=seed,
                              products=40)
