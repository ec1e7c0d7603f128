"""The customer side with several workers in one group, on an in-memory log: customer front markers,
product alerts broadcast on customer-events, and copies forwarded again after a crash.

Two runtimes share partitions 0-3 (A owns 0 and 1, B owns 2 and 3). B reads its clicks hours behind its
orders, so a customer unit of A would, if it followed only A's product units, pass the event time of clicks
B has not forwarded yet (what the README listed as a limitation: dead-lettered as ``late``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import orjson
import pytest

from streamproc.admission import partition_for
from streamproc.clock import FakeClock
from streamproc.customer_gen import Generated, generate
from streamproc.customer_runtime import ALERT_PREFIX, encode_alert
from streamproc.customer_state import HOUR_MS
from streamproc.demand import Output
from streamproc.runtime import CUSTOMER_EVENTS, ORDER_ITEMS, Record, Runtime
from streamproc.settings import INPUT_TOPICS, Settings

PARTITIONS = 4
SETTINGS = Settings.from_env({"STREAMPROC_BUCKET_MS": str(HOUR_MS), "STREAMPROC_PARTITIONS": str(PARTITIONS)})
CLICK_LAG_H = 6
"""How many hours of event time worker B reads its clicks behind everything else."""


class Group:
    """Runtimes of one consumer group over an in-memory log (partition = Kafka's default partitioner)."""

    def __init__(self, owners: list[set[int]], start_ms: int) -> None:
        self.clock = FakeClock(start_ms)
        self.logs: dict[tuple[str, int], list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
        self.pos: dict[tuple[int, str, int], int] = defaultdict(int)
        self.out: list[tuple[str, bytes | None, bytes | None]] = []
        self.owners = owners
        self.workers: list[Runtime] = []
        for i, units in enumerate(owners):
            rt = Runtime(SETTINGS, self._sender(i), clock=self.clock)
            rt.assigned = set()
            for logical in (*INPUT_TOPICS, ORDER_ITEMS, CUSTOMER_EVENTS):
                for p in sorted(units):
                    rt.assign(logical, p)
            rt.ready = True
            self.workers.append(rt)

    def _sender(self, _i: int) -> Any:
        async def send(logical: str, key: bytes | None, value: bytes | None, _headers: Any) -> None:
            if logical in (ORDER_ITEMS, CUSTOMER_EVENTS):
                self.produce(logical, key, value)
            else:
                self.out.append((logical, key, value))
        return send

    def produce(self, logical: str, key: bytes | None, value: bytes | None) -> None:
        p = partition_for(key.decode(), PARTITIONS) if key else 0
        self.logs[(logical, p)].append((key, value))

    async def pump(self, i: int, logical: str, *, until_ts: int | None = None) -> int:
        """Worker ``i`` reads what is new on its partitions of ``logical`` (input records: only those before
        ``until_ts``); returns how many it read."""
        n = 0
        for p in sorted(self.owners[i]):
            log, at = self.logs[(logical, p)], self.pos[(i, logical, p)]
            end = at
            while end < len(log) and (until_ts is None or orjson.loads(log[end][1] or b"{}")["ts"] < until_ts):
                end += 1
            if end > at:
                await self.workers[i].on_records(logical, [Record(logical, p, o, *log[o]) for o in range(at, end)])
                self.pos[(i, logical, p)] = end
                n += end - at
        return n

    async def internal(self) -> None:
        """Both workers read the order lines, customer events and markers until nothing new is left."""
        while sum([await self.pump(i, t) for i in range(len(self.workers)) for t in (ORDER_ITEMS, CUSTOMER_EVENTS)]):
            pass

    async def tick(self) -> None:
        for i, rt in enumerate(self.workers):
            for logical in INPUT_TOPICS:  # records waiting: slow, not idle (as the runner does)
                for p in sorted(self.owners[i]):
                    if self.pos[(i, logical, p)] < len(self.logs[(logical, p)]):
                        rt.engine.touch_stream(p, f"{logical}/{p}", self.clock.now_ms())
            await rt.tick()
        await self.internal()

    def outputs(self, logical: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for t, _k, v in self.out if t == logical and v is not None]


async def _drive(gen: Generated) -> Group:
    g = Group([{0, 1}, {2, 3}], gen.start_ms)
    for ev in gen.clicks:
        g.produce("clicks", ev["product_id"].encode(), orjson.dumps(ev))
    for ev in gen.orders:
        g.produce("orders", ev["items"][0]["product_id"].encode(), orjson.dumps(ev))
    alerts = list(gen.alerts)
    t = gen.start_ms
    last = max(gen.clicks[-1]["ts"], gen.orders[-1]["ts"])
    while t <= last + CLICK_LAG_H * HOUR_MS:
        t += HOUR_MS
        g.clock.set(t)
        await g.pump(0, "clicks", until_ts=t)
        await g.pump(1, "clicks", until_ts=t - CLICK_LAG_H * HOUR_MS)
        for i in (0, 1):
            await g.pump(i, "orders", until_ts=t)
        await g.internal()
        while alerts and alerts[0]["window"]["end_ms"] < t:  # raised by the worker owning the product
            a = alerts.pop(0)
            owner = next(i for i, units in enumerate(g.owners)
                         if partition_for(a["labels"]["product_id"], PARTITIONS) in units)
            await g.workers[owner]._tick_customers([Output("alert", a["dedup_key"], a)])  # noqa: SLF001
        await g.tick()
    for _ in range(200):
        if min(eng.watermark_ms or 0 for rt in g.workers for eng in rt.customers.engines.values()) >= gen.end_ms:
            break
        g.clock.advance(6 * HOUR_MS)
        await g.tick()
    return g


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(300, seed=5)


def test_two_workers_one_reading_its_clicks_hours_behind_give_the_ground_truth(gen: Generated) -> None:
    g = asyncio.run(_drive(gen))
    assert g.outputs("dead-letters") == []
    triggers = g.outputs("marketing-triggers")
    got = {(t["kind"], t["user_id"], t["episode"], t["ts"]) for t in triggers if t["ts"] < gen.end_ms}
    want = {(t["kind"], t["user_id"], t["episode"], t["ts"]) for t in gen.truth}
    assert len(got) == len([t for t in triggers if t["ts"] < gen.end_ms]), "a trigger was published twice"
    assert got == want
    assert {k for k, *_ in want} == {"cart_abandoned", "browse_abandoned", "win_back", "interest_surging"}
    # Both workers own customers, and alerts crossed: each worker's engines saw surges of the other's products.
    for rt in g.workers:
        assert rt.customers.engines and any(eng.customers for eng in rt.customers.engines.values())
    alert_records = [k for (logical, _p), log in g.logs.items() if logical == CUSTOMER_EVENTS
                     for k, _v in log if k and k.startswith(ALERT_PREFIX)]
    assert alert_records


def test_a_copy_forwarded_again_after_the_forwarders_crash_is_applied_once() -> None:
    g = Group([{0, 1, 2, 3}], 1_767_225_600_000)
    rt = g.workers[0]
    t0 = 1_767_225_600_000
    click = {"event_id": "e1", "ts": t0, "user_id": "u1", "product_id": "P1", "action": "view", "session_id": "s"}
    p = partition_for("P1", PARTITIONS)
    copy = rt.customers.forward(_decoded(click), track=False, src=f"clicks/{p}", offset=7)
    again = rt.customers.forward(_decoded(click), track=False, src=f"clicks/{p}", offset=7)  # after a restart
    assert copy and again and copy[1] != again[1]  # another worker instance would tag it differently too
    unit = rt.customers.unit_of("u1")

    async def run() -> None:
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, unit, 0, *copy),
                                              Record(CUSTOMER_EVENTS, unit, 1, *again)])

    asyncio.run(run())
    c = rt.customers.engines[unit].customers["u1"]
    assert len(c.pending or []) == 1 and c.sources == {f"clicks/{p}": 7}


def test_an_alert_record_is_applied_once_and_ignored_once_the_watermark_passed_it() -> None:
    g = Group([{0, 1}, {2, 3}], 1_767_225_600_000)
    rt = g.workers[0]
    alert = {"labels": {"alertname": "demand_surge", "product_id": "P1", "category": "c"}, "status": "firing",
             "dedup_key": "demand_surge:orders:P1", "window": {"start_ms": 0, "end_ms": 60_000}}

    async def run() -> None:
        rec = Record(CUSTOMER_EVENTS, 0, 0, rt.customers.alert_keys[0], encode_alert(alert))
        await rt.on_records(CUSTOMER_EVENTS, [rec])
        assert len(rt.customers.engines[0].alerts) == 1
        rt.customers.engines[0].tick(120_000)
        await rt.on_records(CUSTOMER_EVENTS, [rec])  # read again: its time is behind the watermark
        assert rt.customers.engines[0].alerts == []
        await rt.on_records(CUSTOMER_EVENTS, [Record(CUSTOMER_EVENTS, 0, 1, b"\x00what", b"{}")])

    asyncio.run(run())
    assert [d["error"]["kind"] for d in g.outputs("dead-letters")] == ["schema"]


def _decoded(click: dict[str, Any]) -> Any:
    from streamproc.events import decoder_for
    return decoder_for("clicks")(orjson.dumps(click), 1 << 20)
