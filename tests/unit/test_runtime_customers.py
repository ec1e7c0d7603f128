"""The customer side in the worker's runtime (customer_runtime.py), driven through the testing harness:
clicks and orders in, customer events forwarded and read back, triggers and features out."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest

from streamproc.admission import partition_for
from streamproc.customer_gen import Generated, generate
from streamproc.customer_runtime import SHARED_KEY, products_final
from streamproc.customer_state import HOUR_MS
from streamproc.runtime import CUSTOMER_EVENTS, Record
from streamproc.settings import Settings
from streamproc.testing import Harness
from streamproc.web import make_web_app
from streamproc.windows import UnitWatermark

N_CUSTOMERS = 500
T0 = 1_767_225_600_000
SETTINGS = Settings.from_env({"STREAMPROC_BUCKET_MS": str(HOUR_MS)})
"""Hour buckets: 60 days of minute buckets for 600 products is minutes of product closes; the customer
watermark follows the products' closes, so it moves an hour at a time."""


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(N_CUSTOMERS, seed=11)


def _restart(h: Harness) -> Harness:
    """A new worker restored from what the old one wrote to its changelogs (products and customers)."""
    upserts, _deletes = h.runtime.drain_dirty()
    tables: dict[int, dict[bytes, bytes]] = defaultdict(dict)
    for unit, key, value in h.runtime.customers.drain():
        if value is None:
            tables[unit].pop(key, None)
        else:
            tables[unit][key] = value
    fresh = Harness(h.settings, start_ms=h.clock.now_ms(), assign=True)
    fresh.offsets = h.offsets  # the topics go on where they were
    fresh.sent = h.sent
    for snap in upserts.values():
        fresh.runtime.restore(snap)
    for unit in range(h.settings.partitions):
        fresh.runtime.customers.restore(unit, tables.get(unit, {}))
    return fresh


async def _drive(gen: Generated, settings: Settings, *, chunk_ms: int = HOUR_MS,
                 restart_at: int | None = None) -> Harness:
    """Clicks and orders an hour of event time at a time (the wall clock at the hour's end), the product
    alerts due by then, a tick; at the end, ticks until the customer watermark reaches ``gen.end_ms``."""
    h = Harness(settings, start_ms=gen.start_ms, assign=True)
    clicks, orders, alerts = list(gen.clicks), list(gen.orders), list(gen.alerts)
    t = gen.start_ms
    n = 0
    while clicks or orders:
        t += chunk_ms
        h.clock.set(t)
        for topic, items in (("clicks", clicks), ("orders", orders)):
            batch = []
            while items and items[0]["ts"] < t:
                ev = items.pop(0)
                key = ev["product_id"] if topic == "clicks" else ev["items"][0]["product_id"]
                batch.append((key, orjson.dumps(ev)))
            if batch:
                await h.feed(topic, [(k.encode(), v) for k, v in batch])
        while alerts and alerts[0]["window"]["end_ms"] < t:
            h.runtime.customers.on_product_alert(alerts.pop(0))
        await h.tick()
        n += 1
        if n == restart_at:
            h = _restart(h)
    while (final := h.runtime._products_final() or 0) < gen.end_ms:
        h.clock.advance(max(30_000, gen.end_ms - final - 600_000))
        while alerts and alerts[0]["window"]["end_ms"] < h.clock.now_ms():
            h.runtime.customers.on_product_alert(alerts.pop(0))
        await h.tick()
    assert h.runtime._products_final() == gen.end_ms
    return h


def _key(t: dict[str, Any]) -> tuple[Any, ...]:
    return (t["kind"], t["user_id"], t["episode"], t["ts"])


def _assert_truth(gen: Generated, h: Harness) -> None:
    triggers = h.outputs("marketing-triggers")
    got = {_key(t): t for t in triggers}
    want = {_key(t): t for t in gen.truth}
    assert len(got) == len(triggers), "a trigger was published twice"
    assert {k[0] for k in want} == {"cart_abandoned", "browse_abandoned", "win_back", "interest_surging"}
    assert got.keys() - want.keys() == set()
    assert want.keys() - got.keys() == set()
    for k, t in want.items():
        if t["product_ids"] is not None:
            assert got[k]["product_ids"] == t["product_ids"], k
    keys = [(k or b"").decode() for topic, k, _v in h.sent if topic == "marketing-triggers"]
    assert keys == [t["user_id"] for t in triggers]  # keyed by user


def test_published_triggers_equal_the_ground_truth(gen: Generated) -> None:
    h = asyncio.run(_drive(gen, SETTINGS))
    _assert_truth(gen, h)
    assert h.outputs("dead-letters") == []
    features = h.outputs("customer-features")
    assert {f["user_id"] for f in features} == {c["user_id"] for c in gen.clicks} | {o["user_id"] for o in gen.orders}
    assert h.runtime.customer_features("C00001") is not None


def test_a_restart_from_the_changelogs_midway_changes_nothing(gen: Generated) -> None:
    h = asyncio.run(_drive(gen, SETTINGS, restart_at=24 * 20))
    _assert_truth(gen, h)


def test_a_replayed_input_record_is_forwarded_once() -> None:
    h = Harness(Settings.from_env({}), start_ms=1_767_225_600_000, assign=True)
    click = orjson.dumps({"event_id": "e1", "ts": 1_767_225_600_000, "user_id": "u1", "product_id": "P1",
                          "action": "add_to_cart", "session_id": "s1"})
    forwarded: list[bytes | None] = []
    send = h.runtime.send

    async def spy(logical: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        if logical == CUSTOMER_EVENTS:
            forwarded.append(key)
        await send(logical, key, value, headers)

    h.runtime.send = spy
    rec = h.record("clicks", b"P1", click)
    no_user = h.record("clicks", b"P1", orjson.dumps({"event_id": "e2", "ts": 1_767_225_600_001, "user_id": "",
                                                       "product_id": "P1"}))

    async def run() -> None:
        await h.runtime.on_records("clicks", [rec])
        await h.runtime.on_records("clicks", [rec])  # read again after a restart: counted before
        await h.runtime.on_records("clicks", [no_user])  # dead-lettered (schema): no user

    asyncio.run(run())
    assert forwarded == [b"u1"]


def test_a_customer_event_read_again_is_a_no_op_and_a_late_one_is_dead_lettered() -> None:
    h = Harness(Settings.from_env({}), start_ms=1_767_225_600_000, assign=True)
    rt = h.runtime
    t0 = 1_767_225_600_000
    value = orjson.dumps({"k": "c", "ts": t0, "u": "u1", "id": "e1", "p": "P1", "c": None, "a": "view", "s": "s"})
    unit = rt.customers.unit_of("u1")

    async def run() -> None:
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, unit, 5, b"u1", value)])
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, unit, 5, b"u1", value)])
        for eng in rt.customers.engines.values():
            eng.tick(t0 + 1_000)
        late = orjson.dumps({"k": "c", "ts": t0 + 1, "u": "u2", "id": "e2", "p": "P1", "a": "view"})
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, rt.customers.unit_of("u2"), 0, b"u2", late)])
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, unit, 6, b"u1", b"{not json")])

    asyncio.run(run())
    assert rt.customer_features("u1")["session"]["views"] == 1  # type: ignore[index]
    kinds = [d["error"]["kind"] for d in h.outputs("dead-letters")]
    assert kinds == ["late", "schema"]


def test_the_changelog_has_each_units_shared_state_and_tombstones_for_erased_customers() -> None:
    h = Harness(Settings.from_env({}), start_ms=1_767_225_600_000, assign=True)
    rt = h.runtime
    t0 = 1_767_225_600_000
    value = orjson.dumps({"k": "c", "ts": t0, "u": "u1", "id": "e1", "p": "P1", "c": "c", "a": "view", "s": "s"})
    unit = rt.customers.unit_of("u1")

    async def run() -> list[tuple[int, bytes, bytes | None]]:
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, unit, 0, b"u1", value)])
        first = rt.customers.drain()
        assert (unit, b"u1") in {(u, k) for u, k, v in first if v is not None}
        assert (unit, SHARED_KEY) in {(u, k) for u, k, _v in first}
        assert await rt.erase_customer("u1") is True
        return rt.customers.drain()

    second = asyncio.run(run())
    assert (unit, b"u1", None) in second
    shared = next(v for u, k, v in second if k == SHARED_KEY and u == unit)
    assert "u1" in orjson.loads(shared or b"{}")["erased"]
    assert h.tombstones("customer-features") == ["u1"]


# -- HTTP --------------------------------------------------------------------------------------------------


async def _known_customer(settings: Settings) -> Harness:
    h = Harness(settings, start_ms=T0, assign=True)
    click = {"event_id": "e1", "ts": T0, "user_id": "u1", "product_id": "P1", "category": "shoes",
             "action": "view", "session_id": "s1"}
    await h.feed("clicks", [(b"P1", orjson.dumps(click))])
    h.clock.set(T0 + 10 * 60_000)
    await h.tick()
    return h


async def test_customer_api_reads_features_and_delete_needs_the_token_then_erases(aiohttp_client: Any) -> None:
    settings = Settings.from_env({"STREAMPROC_API_TOKEN": "s3cret-0123456789abcdef"})
    h = await _known_customer(settings)
    client = await aiohttp_client(make_web_app(h.runtime, settings))
    r = await client.get("/customers/u1")
    assert r.status == 200
    body = await r.json()
    assert body["status"] == "OK" and body["features"]["user_id"] == "u1"
    assert body["features"]["recent_views"]
    r = await client.get("/customers", params={"ids": "u1,nobody"})
    assert [x["status"] for x in (await r.json())["results"]] == ["OK", "NOT_FOUND"]
    assert (await client.get("/customers", params={"ids": ",".join(f"u{i}" for i in range(1001))})).status == 400
    assert (await client.get("/customers/nobody")).status == 404

    assert (await client.delete("/customers/u1")).status == 401
    assert (await client.delete("/customers/u1", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/customers/u1")).status == 200  # refused: nothing erased
    r = await client.delete("/customers/u1", headers={"Authorization": "Bearer s3cret-0123456789abcdef"})
    assert r.status == 200 and (await r.json())["was_known"] is True
    assert (await client.get("/customers/u1")).status == 404
    assert h.tombstones("customer-features") == ["u1"]

    # Their records are ignored from now on: a late copy of the click does not bring them back.
    await h.feed("clicks", [(b"P1", orjson.dumps({"event_id": "e2", "ts": T0 + 11 * 60_000, "user_id": "u1",
                                                   "product_id": "P1", "action": "view"}))])
    h.clock.set(T0 + 30 * 60_000)
    await h.tick()
    assert (await client.get("/customers/u1")).status == 404
    assert [f["user_id"] for f in h.outputs("customer-features")] == ["u1"]  # the one before the erasure


async def test_delete_of_a_customer_owned_by_another_worker_is_404(aiohttp_client: Any) -> None:
    settings = Settings.from_env({})
    h = await _known_customer(settings)
    h.runtime.assigned = {p for p in range(settings.partitions) if p != h.runtime.customers.unit_of("u1")}
    client = await aiohttp_client(make_web_app(h.runtime, settings))
    assert (await client.delete("/customers/u1")).status == 404
    assert h.tombstones("customer-features") == []


def test_the_customer_watermark_is_where_the_slowest_product_unit_still_admits_records() -> None:
    # bucket 60 s, lateness 5 s, grace 0
    #   unit 0: wm 185 s -> buckets [0,60) [60,120) final, [120,180) final (180 <= 185) -> admits ts >= 180 s
    #   unit 1: wm 130 s -> [60,120) final, [120,180) open                              -> admits ts >= 120 s
    #   unit 2: no watermark, its streams idle: left out; active: everything waits
    spec = Settings.from_env({}).window
    units = [UnitWatermark(spec), UnitWatermark(spec), UnitWatermark(spec)]
    units[0].watermark_ms, units[1].watermark_ms = 185_000, 130_000
    units[2].register("clicks/2", 0)
    assert products_final(units, spec, wall_ms=spec.idle_timeout_ms) == 120_000
    assert products_final(units, spec, wall_ms=spec.idle_timeout_ms - 1) is None
    assert products_final(units[:1], spec, wall_ms=0) == 180_000
    assert products_final([], spec, wall_ms=0) is None


def test_a_replayed_order_with_lines_on_another_workers_products_is_forwarded_once() -> None:
    settings = Settings.from_env({"STREAMPROC_DEDUP_HORIZON_MS": "0"})  # as after a restart: no id seen before
    h = Harness(settings, start_ms=T0, assign=True)
    home = partition_for("P1", settings.partitions)
    remote = next(f"R{i}" for i in range(100) if partition_for(f"R{i}", settings.partitions) != home)
    h.runtime.assigned = {home}  # the remote product's unit belongs to another worker: its lines go there
    order = orjson.dumps({"order_id": "o1", "ts": T0, "user_id": "u1", "items": [
        {"product_id": "P1", "quantity": 1, "unit_price": 2.0}, {"product_id": remote, "quantity": 1, "unit_price": 3.0}]})
    forwarded: list[tuple[str, bytes | None]] = []
    send = h.runtime.send

    async def spy(logical: str, key: bytes | None, value: bytes | None, headers: Any) -> None:
        forwarded.append((logical, key))
        await send(logical, key, value, headers)

    h.runtime.send = spy
    rec = h.record("orders", b"P1", order)

    async def run() -> None:
        await h.runtime.on_records("orders", [rec])
        await h.runtime.on_records("orders", [rec])  # read again after a restart

    asyncio.run(run())
    assert [k for t, k in forwarded if t == CUSTOMER_EVENTS] == [b"u1"]
    assert [k for t, k in forwarded if t == "order-items"] == [remote.encode()] * 2  # the product side re-forwards
