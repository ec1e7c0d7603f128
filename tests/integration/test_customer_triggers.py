"""Acceptance of issue 16 on both brokers: marketing triggers of generated customer journeys equal the
journeys' ground truth (precision and recall 1.0), whether the input arrives all at once or paced, across a
SIGKILL of the worker mid-stream, and with two workers in one group. After the all-at-once and the SIGKILL
runs, ``GET /customers/{id}`` of 200 sampled customers equals their features computed independently from the
generated events (``tests/customer_reference.py``).

The journeys come from ``streamproc.customer_gen`` (its truth is written down while building them, never by
running the engine). Its demand surges are product alerts: they are written, as the alert records a worker
broadcasts (customer_runtime.py), to every partition of ``<app>-customer-events`` before the worker starts,
and the product detector's own surges are switched off (``STREAMPROC_DETECT_MIN_SURGE_UNITS``), so the
``interest_surging`` truth is the generator's. Hour buckets: a month of minute buckets would be minutes of
product closes (the customer watermark follows the products' closes either way). The two-worker run is on
the embedded broker only (time); the others run on both.

Delivery: at-least-once with idempotent, keyed outputs, as for product alerts (README, "Running on Apache
Kafka"): a trigger emitted again after a crash has the same ``trigger_id`` and must be an identical copy;
without a crash every trigger is published once.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc import loadgen
from streamproc.admission import partition_for
from streamproc.broker import create_topics, free_port, topic_specs
from streamproc.customer_gen import Generated, generate
from streamproc.customer_runtime import ALERT_PREFIX, encode_alert
from streamproc.customer_state import HOUR_MS
from streamproc.fronts import key_for
from streamproc.settings import Settings
from tests.customer_reference import by_user, reference

from .reference import counted
from .support import Worker, isolated_env, launch_worker, read_topic, values, wait_for, wait_ready

pytestmark = pytest.mark.integration

CUSTOMERS = int(os.environ.get("STREAMPROC_TEST_CUSTOMERS", "5000"))
SEED = 16
PRODUCTS = int(os.environ.get("STREAMPROC_TEST_PRODUCTS", "120"))
DAYS = int(os.environ.get("STREAMPROC_TEST_DAYS", "30"))
"""Fewer products and days than the generator's defaults (600, 60): every product's hour buckets are closed
and published, which is most of a run's cost; the journeys need only a catalogue per category, and a month
holds every kind of episode."""
PARTITIONS = 4
SAMPLE = 200
"""Customers whose ``GET /customers/{id}`` is compared with the reference."""
PACED_S = 12.0
"""Wall seconds over which the paced replay spreads the month."""
ENV = {"STREAMPROC_PARTITIONS": str(PARTITIONS), "STREAMPROC_BUCKET_MS": str(HOUR_MS),
       "STREAMPROC_DETECT_MIN_SURGE_UNITS": "1e12"}


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(CUSTOMERS, seed=SEED, products=PRODUCTS, days=DAYS)


def _items(g: Generated) -> list[tuple[str, bytes, bytes, int]]:
    """Clicks and orders in event-time order, then a click per partition two hours after the end (user
    ``clock``): every product unit, and so every customer unit, passes ``end_ms``."""
    items = [("clicks", c["product_id"].encode(), orjson.dumps(c), c["ts"]) for c in g.clicks]
    items += [("orders", o["items"][0]["product_id"].encode(), orjson.dumps(o), o["ts"]) for o in g.orders]
    items.sort(key=lambda i: i[3])
    tail: dict[int, str] = {}
    for i in range(1000):
        tail.setdefault(partition_for(f"Z{i}", PARTITIONS), f"Z{i}")
    ts = g.end_ms + 2 * HOUR_MS
    items += [("clicks", pid.encode(), orjson.dumps({"event_id": f"end-{pid}", "ts": ts, "user_id": "clock",
                                                     "product_id": pid, "action": "view"}), ts)
              for pid in sorted(tail.values())]
    return items


def _prepare(broker: str, tmp: Path, g: Generated) -> dict[str, str]:
    """A group's environment, its topics, and the generator's surges as alert records on customer-events."""
    env = isolated_env(broker, tmp, ENV)
    settings = Settings.from_env(env)
    asyncio.run(create_topics(broker, topic_specs(settings)))

    async def alerts() -> None:
        p = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
        await p.start()
        try:
            for part in range(PARTITIONS):
                key = key_for(part, PARTITIONS, ALERT_PREFIX)
                for a in g.alerts:
                    await p.send(f"{settings.app_id}-customer-events", encode_alert(a), key=key)
            await p.flush()
        finally:
            await p.stop()

    asyncio.run(alerts())
    return env


def _produce(broker: str, env: dict[str, str], g: Generated, speed: float | None) -> loadgen.ProduceReport:
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders")}
    report = asyncio.run(loadgen.produce(broker, _items(g), speed=speed, progress=False, topic_names=names))
    assert report.errors == 0
    return report


def _member(env: dict[str, str], tmp: Path, i: int) -> dict[str, str]:
    return {**env, "STREAMPROC_WEB_PORT": str(free_port()), "STREAMPROC_DATA_DIR": str(tmp / f"data-{i}")}


def _triggers(broker: str, env: dict[str, str], g: Generated) -> list[dict[str, Any]]:
    """Every marketing trigger published, once every trigger of the truth is there (or a deadline)."""
    want = len(g.truth)
    seen: set[str] = set()
    read = [0]

    def complete(rs: list[Any]) -> bool:  # called at every poll: look at the new records only
        for r in rs[read[0]:]:
            t = orjson.loads(r.value)
            if t["ts"] < g.end_ms and t["user_id"] != "clock":
                seen.add(t["trigger_id"])
        read[0] = len(rs)
        return len(seen) >= want

    return values(asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_MARKETING_TRIGGERS"], until=complete,
                                         timeout_s=120, idle_s=1.0)))


def _check(broker: str, env: dict[str, str], g: Generated, *, copies_allowed: bool = False) -> dict[str, int]:
    """Triggers before ``end_ms`` equal the truth (kind, user, episode, time, products); a trigger published
    more than once only as identical copies, and only when ``copies_allowed``; no dead letter."""
    triggers = [t for t in _triggers(broker, env, g) if t["ts"] < g.end_ms and t["user_id"] != "clock"]
    by_id: dict[str, dict[str, Any]] = {}
    copies = 0
    for t in triggers:
        first = by_id.setdefault(t["trigger_id"], t)
        if first is not t:
            assert first == t, ("a trigger emitted again differs", first, t)
            copies += 1
    if not copies_allowed:
        assert copies == 0, f"{copies} triggers published twice"

    def key(t: dict[str, Any]) -> tuple[Any, ...]:
        return t["kind"], t["user_id"], t["episode"], t["ts"]

    got = {key(t): t for t in by_id.values()}
    want = {key(t): t for t in g.truth}
    assert len(got) == len(by_id)
    missing, extra = want.keys() - got.keys(), got.keys() - want.keys()
    assert not missing and not extra, (f"recall {1 - len(missing) / len(want):.4f}, "
                                       f"precision {1 - len(extra) / max(1, len(got)):.4f}",
                                       sorted(missing)[:5], sorted(extra)[:5])
    for k, t in want.items():
        if t["product_ids"] is not None:
            assert got[k]["product_ids"] == t["product_ids"], k
    dead = values(asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_DEAD_LETTERS"], timeout_s=3, idle_s=0.5)))
    assert dead == [], [(d["source"], d["error"]) for d in dead[:5]]
    kinds: dict[str, int] = {}
    for k in got:
        kinds[k[0]] = kinds.get(k[0], 0) + 1
    assert set(kinds) == {"cart_abandoned", "browse_abandoned", "win_back", "interest_surging"}
    return {"triggers": len(got), "copies": copies, **kinds}


async def _get_customers(url: str, ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each id's ``GET /customers/{id}`` body (200s only), and ``GET /customers?ids=`` of them all."""
    async with aiohttp.ClientSession() as s:
        async def one(uid: str) -> Any:
            async with s.get(f"{url}/customers/{uid}") as r:
                assert r.status == 200, (uid, r.status)
                return await r.json()

        bodies = await asyncio.gather(*(one(uid) for uid in ids))
        async with s.get(f"{url}/customers?ids={','.join(ids)}") as r:
            many = {b["user_id"]: b for b in (await r.json())["results"]}
    return dict(zip(ids, bodies, strict=True)), many


def _check_features(worker: Worker, g: Generated) -> int:
    """``GET /customers/{id}`` of a sample of customers equals the reference computed from their generated
    events at the body's ``as_of_ms`` (cart prices from the orders of the customers of the same unit: each
    unit has its engine; only those with a product the customer carted can price their cart). Returns how
    many customers were compared."""
    users = by_user(g.clicks, g.orders)
    sample = random.Random(SEED).sample(sorted(users), min(SAMPLE, len(users)))
    one, many = asyncio.run(_get_customers(worker.url, sample))
    priced_by: dict[tuple[int, str], list[dict[str, Any]]] = {}  # (unit, product) -> the unit's orders of it
    for o in g.orders:
        for pid in {it["product_id"] for it in o["items"]}:
            priced_by.setdefault((partition_for(o["user_id"], PARTITIONS), pid), []).append(o)
    for uid in sample:
        got = one[uid]["features"]
        assert many[uid]["features"] is not None and many[uid]["status"] == "OK", uid
        assert got["as_of_ms"] >= g.end_ms, (uid, got["as_of_ms"])  # every generated record applied
        clicks, orders = users[uid]
        unit = partition_for(uid, PARTITIONS)
        carted = sorted({c["product_id"] for c in clicks if c["action"] == "add_to_cart"})
        priced = [o for pid in carted for o in priced_by.get((unit, pid), [])]  # the rest price nothing here
        want = reference(clicks, orders, priced, g.alerts, got["as_of_ms"])
        assert {k: got[k] for k in want} == want, uid
        assert {k: many[uid]["features"][k] for k in want} == want, uid
    with_orders = [u for u in sample if one[u]["features"]["orders_total"]]
    assert with_orders and any(one[u]["features"]["cart"]["units"] for u in sample)
    return len(sample)


def _stop(workers: list[Worker]) -> None:
    for w in workers:
        w.stop()


def test_all_at_once(broker: Any, tmp_path: Path, gen: Generated) -> None:
    t0 = time.monotonic()
    env = _prepare(broker, tmp_path, gen)
    report = _produce(broker, env, gen, speed=None)
    worker = wait_ready(launch_worker(env, tmp_path), 90)
    try:
        stats = _check(broker, env, gen)
        t1 = time.monotonic()
        stats["features_checked"] = _check_features(worker, gen)
        stats["features_s"] = round(time.monotonic() - t1, 1)
    finally:
        _stop([worker])
    print(f"{broker.kind}: all at once, {report.events} records: {stats}, {time.monotonic() - t0:.1f}s")


def test_paced_replay(broker: Any, tmp_path: Path, gen: Generated) -> None:
    t0 = time.monotonic()
    env = _prepare(broker, tmp_path, gen)
    worker = wait_ready(launch_worker(env, tmp_path), 90)
    try:
        report = _produce(broker, env, gen, speed=(gen.end_ms - gen.start_ms) / (PACED_S * 1000))
        stats = _check(broker, env, gen)
    finally:
        _stop([worker])
    print(f"{broker.kind}: paced over {PACED_S:.0f}s, {report.events} records: {stats}, "
          f"{time.monotonic() - t0:.1f}s")


def test_sigkill_mid_stream_and_restart(broker: Any, tmp_path: Path, gen: Generated) -> None:
    t0 = time.monotonic()
    env = _prepare(broker, tmp_path, gen)
    report = _produce(broker, env, gen, speed=None)
    worker = wait_ready(launch_worker(env, tmp_path), 90)
    killed_at = wait_for(lambda: (n := counted(worker.url)) > report.events * 0.25 and n, 120, 0.1)
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(timeout=10)
    assert killed_at < report.events, "the worker finished before it could be killed"
    worker = wait_ready(launch_worker(env, tmp_path), 90)
    try:
        stats = _check(broker, env, gen, copies_allowed=True)
        t1 = time.monotonic()
        stats["features_checked"] = _check_features(worker, gen)  # restored state, records read again: no-ops
        stats["features_s"] = round(time.monotonic() - t1, 1)
    finally:
        _stop([worker])
    print(f"{broker.kind}: killed after {killed_at:.0f} of {report.events} records: {stats}, "
          f"{time.monotonic() - t0:.1f}s")


def test_two_workers_in_one_group(embedded_broker: str, tmp_path: Path, gen: Generated) -> None:
    """On the embedded broker only, to keep the module's time down (the other three run on both)."""
    t0 = time.monotonic()
    broker = embedded_broker
    env = _prepare(broker, tmp_path, gen)
    workers = [launch_worker(_member(env, tmp_path, i), tmp_path, name=f"w{i}") for i in range(2)]
    try:
        for w in workers:
            wait_ready(w, 90)

        def balanced() -> bool:
            owned = [{int(u) for u in w.get("/watermarks")["units"]} for w in workers]
            return all(owned) and sum(map(len, owned)) == PARTITIONS

        wait_for(balanced, 90)  # both members joined before the first record: no rebalance
        done: dict[str, Any] = {}
        # Paced, so that the two workers' event times drift apart while they forward to each other.
        producer = threading.Thread(target=lambda: done.update(
            report=_produce(broker, env, gen, speed=(gen.end_ms - gen.start_ms) / (PACED_S * 1000))))
        producer.start()
        producer.join(timeout=PACED_S * 4)
        stats = _check(broker, env, gen)
        per_worker = [counted(w.url) for w in workers]
    finally:
        _stop(workers)
    assert all(per_worker), per_worker
    print(f"embedded: two workers ({per_worker} records each): {stats}, {time.monotonic() - t0:.1f}s")
