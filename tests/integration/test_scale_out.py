"""Scale-out: several workers in one consumer group give the same outputs as one.

The same recorded input (a seeded ``surges`` scenario over 6 partitions: 40 products, 90 minutes of event
time, ~41k records, surges and drops after 40 minutes of history) is processed by 1, 2 and 3 workers of
one group, and by a group that changes while it runs (a third worker joins, then the first one leaves).
Every run must give exactly the product-features records and the product alert transitions of the pure
engine over the same records (``reference.offline``), with no dead letter: order lines forwarded between
workers through ``<app>-order-items`` are neither lost nor counted twice, and a partition's event-time
state moves with it. Static groups emit every window once; a rebalance may re-emit windows, and each
re-emitted copy must be identical. Category alerts are left out: a worker detects them from the
categories of its own partitions, in memory.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamproc import generator, loadgen
from streamproc.broker import free_port
from streamproc.settings import Settings

from .reference import DETECTOR, assert_same_outputs, counted, offline, surges_40_products
from .support import (
    PRODUCTS_ONLY,
    Worker,
    isolated_env,
    launch_worker,
    read_topic,
    values,
    wait_for,
    wait_ready,
)

pytestmark = pytest.mark.integration

PARTITIONS = 6
SEED = 4


def _scenario() -> generator.Scenario:
    return surges_40_products(SEED)


@pytest.fixture(scope="module")
def reference() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    feats, alerts = offline(Settings.from_env({**DETECTOR, "STREAMPROC_PARTITIONS": str(PARTITIONS)}),
                            _scenario(), SEED)
    assert any(a["labels"].get("product_id") for a in alerts), "the scenario should raise product alerts"
    return feats, alerts


def _member(group_env: dict[str, str], tmp: Path, i: int) -> dict[str, str]:
    """One worker of the group: same app id and topics, its own web port and data directory."""
    return {**group_env, "STREAMPROC_WEB_PORT": str(free_port()), "STREAMPROC_DATA_DIR": str(tmp / f"data-{i}")}


def _units(w: Worker) -> set[int]:
    return {int(u) for u in w.get("/watermarks")["units"]}


def _balanced(workers: list[Worker]) -> bool:
    """Every partition owned by exactly one of the workers, each of them owning some."""
    owned = [_units(w) for w in workers]
    return all(owned) and sum(map(len, owned)) == PARTITIONS and set().union(*owned) == set(range(PARTITIONS))


def _produce(bootstrap: str, env: dict[str, str], speed: float | None) -> loadgen.ProduceReport:
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    return asyncio.run(loadgen.produce(bootstrap, generator.events(_scenario(), SEED), speed=speed, progress=False,
                                       topic_names=names))


def _outputs(bootstrap: str, env: dict[str, str], ref_features: list[dict[str, Any]]) -> dict[str, Any]:
    """Read the group's outputs once every product that has a final-bucket record in the reference has one."""
    end = _scenario().end_ms
    expect_final = {f["product_id"] for f in ref_features if f["as_of_ms"] == end}

    def all_closed(rs: list[Any]) -> bool:
        return expect_final <= {f["product_id"] for f in values(rs) if f["as_of_ms"] == end}

    feats = values(asyncio.run(read_topic(bootstrap, env["STREAMPROC_TOPIC_PRODUCT_FEATURES"], timeout_s=240,
                                          until=all_closed, idle_s=3.0)))
    alerts = values(asyncio.run(read_topic(bootstrap, env["STREAMPROC_TOPIC_ALERTS"], timeout_s=10, idle_s=1.0)))
    dead = values(asyncio.run(read_topic(bootstrap, env["STREAMPROC_TOPIC_DEAD_LETTERS"], timeout_s=5, idle_s=1.0)))
    return {"features": [f for f in feats if f["as_of_ms"] <= end],
            "alerts": [a for a in alerts if a["window"]["start_ms"] < end], "dead": dead}


@pytest.mark.parametrize("n_workers", [1, 2, 3])
def test_one_two_three_workers_give_the_same_alerts_and_features(
        n_workers: int, embedded_broker: str, tmp_path: Path,
        reference: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    t0 = time.monotonic()
    group = isolated_env(embedded_broker, tmp_path, {**PRODUCTS_ONLY, **DETECTOR, "STREAMPROC_PARTITIONS": str(PARTITIONS)})
    workers = [launch_worker(_member(group, tmp_path, i), tmp_path, name=f"w{i}") for i in range(n_workers)]
    try:
        for w in workers:
            wait_ready(w, 90)
        wait_for(lambda: _balanced(workers), 90)  # all members joined before the first record: no rebalance
        report = _produce(embedded_broker, group, speed=None)
        assert report.errors == 0
        out = _outputs(embedded_broker, group, reference[0])
        wait_for(lambda: sum(counted(w.url) for w in workers) >= report.events, 30)
        total = sum(counted(w.url) for w in workers)
        owned = [sorted(_units(w)) for w in workers]
    finally:
        for w in workers:
            w.stop()
    assert out["dead"] == [], [(d["source"], d["error"]) for d in out["dead"][:5]]
    assert total == report.events  # each record processed once, by one worker
    cmp = assert_same_outputs(out["features"], out["alerts"], *reference)
    assert cmp.duplicates == 0
    print(f"{n_workers} worker(s), partitions {owned}: {report.events} records, {cmp.windows} windows, "
          f"{cmp.alerts} product alert transitions, {time.monotonic() - t0:.1f}s")


def test_a_worker_joins_and_another_leaves_mid_stream(
        broker: Any, tmp_path: Path, reference: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    """On both brokers: two workers; a third joins after a sixth of the input is processed, and the first
    leaves (SIGTERM) two seconds after the group has settled with three, both while the input is still
    arriving (paced over ~50 s: a membership change took 10-25 s under load). The input must not pause: a
    pause longer than the idle timeout lets watermarks move on with the wall clock. The embedded broker
    rebalances more often (members dropped from a generation, two rebalances in a row)."""
    t0 = time.monotonic()
    kind = broker.kind
    group = isolated_env(broker, tmp_path, {**DETECTOR, "STREAMPROC_PARTITIONS": str(PARTITIONS)})
    workers = [launch_worker(_member(group, tmp_path, i), tmp_path, name=f"w{i}") for i in range(2)]
    produced: dict[str, Any] = {}
    try:
        for w in workers:
            wait_ready(w, 90)
        wait_for(lambda: _balanced(workers), 90)
        speed = _scenario().duration_ms / 50_000
        producer = threading.Thread(target=lambda: produced.update(report=_produce(broker, group, speed)))
        producer.start()
        total = sum(1 for _ in generator.events(_scenario(), SEED))

        def progress() -> float:
            return sum(counted(w.url) for w in workers if w.proc.poll() is None)

        wait_for(lambda: progress() >= total / 6, 120, 0.2)
        joining_at = progress()
        workers.append(wait_ready(launch_worker(_member(group, tmp_path, 2), tmp_path, name="w2"), 90))
        wait_for(lambda: _balanced(workers), 90)
        assert producer.is_alive(), "the input ended before the third worker had joined"
        time.sleep(2)
        left_at = progress()
        assert producer.is_alive(), "the input ended before the first worker left"
        assert workers[0].stop() is not None
        wait_for(lambda: _balanced(workers[1:]), 90)
        producer.join(timeout=120)
        report = produced["report"]
        assert report.errors == 0 and report.events == total
        out = _outputs(broker, group, reference[0])
        owned = [sorted(_units(w)) for w in workers[1:]]
    finally:
        for w in workers:
            w.stop()
    assert out["dead"] == [], [(d["source"], d["error"]) for d in out["dead"][:5]]
    cmp = assert_same_outputs(out["features"], out["alerts"], *reference)
    print(f"{kind}: joining at {joining_at:.0f}, leaving at {left_at:.0f} records counted of {total}; "
          f"partitions at the end {owned}; {cmp.windows} windows, {cmp.duplicates} re-emitted identical copies, "
          f"{cmp.alerts} product alert transitions, {time.monotonic() - t0:.1f}s")
