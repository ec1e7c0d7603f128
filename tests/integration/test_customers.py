"""Customers end to end on both brokers (the ``broker`` fixture: embedded, then Apache Kafka): clicks and
orders -> worker -> marketing triggers, customer features, the customer API, and an erasure: 404, a tombstone
on the compacted topic, no trigger afterwards, and none of it undone by a restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc.admission import partition_for
from streamproc.customers import trigger_id

from .support import isolated_env, read_topic, start_worker, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = int(time.time() * 1000) // MIN * MIN - 3 * 60 * MIN  # three hours ago: in the past, not too far
SAME_PARTITION_AS_U2 = next(f"v{i}" for i in range(100) if partition_for(f"v{i}", 4) == partition_for("u2", 4))


def _events() -> list[tuple[str, str, dict[str, Any]]]:
    """(topic, key, value): u1 carts and leaves, u2 carts and orders in time, u3 views P7 three times; then
    a click per partition two hours on, so every unit's watermark passes the cart deadline."""
    c = 0

    def click(uid: str, ts: int, pid: str, action: str = "view", sid: str = "s") -> tuple[str, str, dict[str, Any]]:
        nonlocal c
        c += 1
        return "clicks", pid, {"event_id": f"e{c}", "ts": ts, "user_id": uid, "product_id": pid, "category": "shoes",
                               "action": action, "session_id": f"{uid}-{sid}"}

    evs = [click("u1", T0, "P1"), click("u1", T0 + MIN, "P1", "add_to_cart"),
           click("u2", T0, "P2"), click("u2", T0 + MIN, "P2", "add_to_cart"),
           ("orders", "P2", {"order_id": "o1", "ts": T0 + 10 * MIN, "user_id": "u2",
                             "items": [{"product_id": "P2", "quantity": 1, "unit_price": 9.5}]}),
           click("u3", T0, "P7"), click("u3", T0 + MIN, "P7"), click("u3", T0 + 2 * MIN, "P7")]
    return evs + _clock(T0 + 120 * MIN, "first")


def _clock(ts: int, tag: str) -> list[tuple[str, str, dict[str, Any]]]:
    """A click at ``ts`` on a product of each partition (user ``clock``): every unit's event time reaches it."""
    later: dict[int, str] = {}
    for i in range(200):
        later.setdefault(partition_for(f"Q{i}", 4), f"Q{i}")
    return [("clicks", pid, {"event_id": f"clock-{tag}-{i}", "ts": ts + i, "user_id": "clock", "product_id": pid,
                             "category": "shoes", "action": "view", "session_id": f"clock-{tag}"})
            for i, pid in enumerate(sorted(later.values()))]


async def _produce(bootstrap: str, env: dict[str, str], events: list[tuple[str, str, dict[str, Any]]] | None = None,
                   ) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await p.start()
    try:
        for topic, key, value in events or _events():
            await p.send_and_wait(env[f"STREAMPROC_TOPIC_{topic.upper()}"], orjson.dumps(value), key=key.encode())
    finally:
        await p.stop()


async def _call(method: str, url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url) as r:
        return r.status, await r.json(content_type=None)


def test_triggers_features_and_erasure_on_a_real_broker(broker: Any, tmp_path: Path) -> None:
    env = isolated_env(broker, tmp_path, {"STREAMPROC_PARTITIONS": "4"})
    worker = start_worker(env, tmp_path)
    try:
        asyncio.run(_produce(broker, env))
        recs = asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_MARKETING_TRIGGERS"],
                                      until=lambda rs: len(rs) >= 2, timeout_s=40, idle_s=2.0))
        triggers = {(r.key.decode(), orjson.loads(r.value)["kind"]): orjson.loads(r.value) for r in recs}
        assert len(recs) == len(triggers) == 2, [r.value for r in recs]
        cart = triggers[("u1", "cart_abandoned")]
        assert cart["trigger_id"] == trigger_id("cart_abandoned", "u1", str(T0)) and cart["product_ids"] == ["P1"]
        assert triggers[("u3", "browse_abandoned")]["product_ids"] == ["P7"]

        status, body = asyncio.run(_call("GET", worker.url + "/customers/u2"))
        assert status == 200 and body["features"]["orders_total"] == 1
        assert asyncio.run(_call("DELETE", worker.url + "/customers/u2"))[0] == 200
        assert asyncio.run(_call("GET", worker.url + "/customers/u2"))[0] == 404

        def tombstoned() -> bool:
            rs = asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_CUSTOMER_FEATURES"], timeout_s=10,
                                        idle_s=0.5))
            last = {r.key: r.value for r in rs}
            return b"u2" in last and last[b"u2"] is None and last.get(b"u1") is not None

        wait_for(tombstoned, 20)
        changelog = asyncio.run(read_topic(broker, f"{env['STREAMPROC_APP_ID']}-customers-changelog",
                                           timeout_s=10, idle_s=0.5))
        assert any(r.key == b"u1" and r.value for r in changelog)

        # A restart: the next worker restores the customers and the erasure from the changelog.
        assert worker.stop() is not None
        worker = start_worker(env, tmp_path)
        status, body = asyncio.run(_call("GET", worker.url + "/customers/u1"))
        assert status == 200 and body["features"]["cart"]["units"] == 1
        # After the restart u2 and a customer of the same unit put P2 in their cart and leave; then the unit's
        # event time passes their cart deadline. The other customer's cart_abandoned shows that it did; u2 stays
        # erased: no state, no trigger.
        twin = SAME_PARTITION_AS_U2
        asyncio.run(_produce(broker, env, [
            ("clicks", "P2", {"event_id": f"again-{u}", "ts": T0 + 121 * MIN, "user_id": u, "product_id": "P2",
                              "category": "shoes", "action": "add_to_cart", "session_id": f"{u}-again"})
            for u in ("u2", twin)] + _clock(T0 + 190 * MIN, "later")))
        again = asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_MARKETING_TRIGGERS"], timeout_s=40, idle_s=1.0,
                                       until=lambda rs: any(r.key == twin.encode() for r in rs)))
        kinds = sorted((r.key.decode(), orjson.loads(r.value)["kind"]) for r in again)
        assert kinds == sorted([("u1", "cart_abandoned"), ("u3", "browse_abandoned"), (twin, "cart_abandoned")])
        assert asyncio.run(_call("GET", worker.url + "/customers/u2"))[0] == 404  # the erasure holds
    finally:
        assert worker.stop() is not None
