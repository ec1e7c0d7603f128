"""Crash recovery: a worker SIGKILLed mid-stream and restarted emits every window, none twice in content.

Processing guarantee: at-least-once input with idempotent state. Faust commits input offsets only after
flushing the producer (outputs and table changelog); each product's state records, per input stream,
the last offset it counted, so records replayed after a crash are not counted twice; outputs are keyed
(features by product, alerts by dedup key with a content-derived alert_id), so a window re-emitted after
a crash is an identical copy. The test checks all three against a run of the pure engine over the same
records, once with the in-memory store (state restored from the changelog topic) and once with RocksDB
(``STREAMPROC_STORE=rocksdb://``: local state files in the data directory, kept across the restart, plus
the changelog beyond them; a smaller scenario to save suite time).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from streamproc import generator, loadgen
from streamproc.broker import create_topics, topic_specs
from streamproc.settings import Settings

from .reference import DETECTOR, MIN, START_MS, assert_same_outputs, counted, offline
from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, values, wait_for

pytestmark = pytest.mark.integration


def _scenario(store: str = "memory://") -> generator.Scenario:
    rate = 20.0 if store == "memory://" else 8.0
    return generator.scenario("surges", start_ms=START_MS, duration_ms=100 * MIN, rate_eps=rate, seed=4,
                              products=60)


@pytest.mark.parametrize("store", ["memory://", "rocksdb://"])
def test_sigkill_mid_stream_then_restart_loses_nothing_and_counts_nothing_twice(
        store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Both stores on Apache Kafka: after a SIGKILL the embedded broker reported a changelog end offset short
    # of records it had acknowledged (553 > 543), and recovery then put an older product snapshot back (seen
    # in 1 of 5 runs with memory://; README, limitations).
    embedded_broker = request.getfixturevalue("apache_kafka").bootstrap
    sc = _scenario(store)
    # The default store runs the default configuration (customers on); the other the product side only.
    extra = {} if store == "memory://" else PRODUCTS_ONLY
    env = isolated_env(embedded_broker, tmp_path, {**extra, **DETECTOR, "STREAMPROC_STORE": store})
    settings = Settings.from_env(env)
    asyncio.run(create_topics(embedded_broker, topic_specs(settings)))
    names = {t: settings.topic(t) for t in ("clicks", "orders", "reviews")}
    report = asyncio.run(loadgen.produce(embedded_broker, generator.events(sc, 4), speed=None, progress=False,
                                         topic_names=names))
    assert report.errors == 0
    ref_features, ref_alerts = offline(settings, sc, 4)
    assert ref_alerts, "the scenario should raise alerts"

    worker = start_worker(env, tmp_path)
    killed_at = wait_for(lambda: (n := counted(worker.url)) > report.events * 0.4 and n, 120, 0.1)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    assert killed_at < report.events, "the worker finished before it could be killed"
    if store == "rocksdb://":  # the killed worker left its table partitions on disk for the restart
        assert list((tmp_path / "data").rglob("*products*")), sorted(map(str, (tmp_path / "data").rglob("*")))[:20]

    worker = start_worker(env, tmp_path)
    try:
        expect_final = {f["product_id"] for f in ref_features if f["as_of_ms"] == sc.end_ms}

        def all_closed(rs: list[Any]) -> bool:
            return expect_final <= {f["product_id"] for f in values(rs) if f["as_of_ms"] == sc.end_ms}

        recs = asyncio.run(read_topic(embedded_broker, settings.topic("product-features"), timeout_s=180,
                                      until=all_closed, idle_s=3.0))
        alerts = [a for a in values(asyncio.run(read_topic(embedded_broker, settings.topic("alerts"),
                                                              timeout_s=10, idle_s=1.0)))
                  if a["window"]["start_ms"] < sc.end_ms]
    finally:
        worker.stop()

    features = [f for f in values(recs) if f["as_of_ms"] <= sc.end_ms]
    dead = values(asyncio.run(read_topic(embedded_broker, settings.topic("dead-letters"), timeout_s=5, idle_s=1.0)))
    assert dead == [], [(d["source"], d["error"]) for d in dead[:5]]
    # Every window present, none extra, a window emitted again after the crash an identical copy; the same
    # product alert transitions (category alerts are per-worker memory and warm up again after a restart).
    cmp = assert_same_outputs(features, alerts, ref_features, ref_alerts)
    print(f"{store}: killed after {killed_at:.0f} of {report.events} records; {cmp.windows} windows, "
          f"{cmp.duplicates} re-emitted identical copies; {cmp.alerts} product alert transitions")
