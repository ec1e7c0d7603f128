"""Event-time fronts between workers (streamproc/fronts.py) and how the runtime uses them."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streamproc.clock import FakeClock
from streamproc.fronts import KEEPALIVE_MS, MARKER_INTERVAL_MS, WAIT, Fronts
from streamproc.runtime import ORDER_ITEMS, Record, Runtime, partition_for
from streamproc.settings import Settings

T0 = 1_780_000_000_000


@pytest.mark.parametrize("partitions", [1, 4, 6, 12])
def test_each_marker_key_goes_to_its_partition(partitions: int) -> None:
    fronts = Fronts(partitions)
    for p, key in enumerate(fronts.keys):
        assert fronts.is_marker(key)
        assert partition_for(key.decode(), partitions) == p


def test_a_unit_waits_for_every_unit_owned_elsewhere_and_follows_the_slowest() -> None:
    f = Fronts(4)
    remote = {2, 3}
    assert f.holds([0, 1], remote) == {0: WAIT, 1: WAIT}  # nothing heard yet
    assert f.receive(0, orjson.dumps({"unit": 2, "front": T0 + 5_000})) is None
    assert f.holds([0], remote) == {0: WAIT}  # unit 3 still unheard
    f.receive(0, orjson.dumps({"unit": 3, "front": T0 + 9_000}))
    assert f.holds([0], remote) == {0: T0 + 5_000}
    f.receive(0, orjson.dumps({"unit": 2, "front": None}))  # unit 2's orders stream went idle
    assert f.holds([0], remote) == {0: T0 + 9_000}
    f.receive(0, orjson.dumps({"unit": 3, "front": None}))
    assert f.holds([0], remote) == {}  # no constraint left
    f.forget(0)  # unit 0 moved away: what was read on its partition is forgotten
    assert f.holds([0], remote) == {0: WAIT}


def test_malformed_markers_are_reported_not_applied() -> None:
    f = Fronts(4)
    assert f.receive(0, b"not json")
    assert f.receive(0, orjson.dumps({"unit": 9, "front": 1}))
    assert f.receive(0, orjson.dumps({"unit": 1, "front": "x"}))
    assert f.seen == {}


def test_markers_are_written_when_the_front_moves_and_as_a_keepalive() -> None:
    f = Fronts(4)
    assert f.due({0: T0}, set(), 0) == []  # nobody else: nothing to tell
    first = f.due({0: T0, 1: None}, {2, 3}, 0)
    assert sorted((k, orjson.loads(v)["unit"]) for k, v in first) == sorted(
        [(f.keys[2], 0), (f.keys[3], 0), (f.keys[2], 1), (f.keys[3], 1)])
    assert f.due({0: T0 + 1, 1: None}, {2, 3}, MARKER_INTERVAL_MS - 1) == []  # rate-limited
    moved = f.due({0: T0 + 1, 1: None}, {2, 3}, MARKER_INTERVAL_MS)
    assert {orjson.loads(v)["unit"] for _k, v in moved} == {0}  # only the unit whose front moved
    assert f.due({0: T0 + 1, 1: None}, {2, 3}, KEEPALIVE_MS - 1) == []
    assert len(f.due({0: T0 + 1, 1: None}, {2, 3}, KEEPALIVE_MS + MARKER_INTERVAL_MS)) == 4


def _click(pid: str, ts: int) -> bytes:
    return orjson.dumps({"event_id": f"{pid}-{ts}", "ts": ts, "user_id": "u", "product_id": pid})


def _product_of(unit: int, partitions: int) -> str:
    return next(f"P{i}" for i in range(1000) if partition_for(f"P{i}", partitions) == unit)


async def test_a_worker_does_not_close_buckets_another_worker_may_still_forward_lines_to() -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((topic, key, value))

    settings = Settings(partitions=4)
    clock = FakeClock(T0)
    b = Runtime(settings, send, clock=clock)
    b.assigned = set()  # a group member owning units 2 and 3; 0 and 1 are another worker's
    for unit in (2, 3):
        for logical in ("clicks", "orders", "reviews", ORDER_ITEMS):
            b.assign(logical, unit)
    pid = _product_of(2, 4)
    for i in range(120):  # two minutes of clicks on unit 2 (unit 3 gets one, so it has spoken)
        clock._ms = T0 + i * 1000  # noqa: SLF001
        await b.on_records("clicks", [Record("clicks", 2, i, pid.encode(), _click(pid, T0 + i * 1000))])
        await b.on_records("orders", [])
    await b.on_records("clicks", [Record("clicks", 3, 0, _product_of(3, 4).encode(), _click(_product_of(3, 4), T0 + 119_000))])
    for unit in (2, 3):
        b.engine.unit(unit).watermark.observe(f"orders/{unit}", T0 + 119_000, clock.now_ms())
        b.engine.unit(unit).watermark.observe(f"reviews/{unit}", T0 + 119_000, clock.now_ms())
    await b.tick()
    wm = b.engine.units[2].watermark.watermark_ms
    assert wm is None or wm < T0  # units 0 and 1 not heard from: wait
    assert not [s for s in sent if s[0] == "product-features"]
    markers = [s for s in sent if s[0] == ORDER_ITEMS]
    assert {partition_for(k.decode(), 4) for _t, k, _v in markers} == {0, 1}  # b tells the others
    for unit, front in ((0, T0 + 30_000), (1, T0 + 90_000)):
        await b.on_records(ORDER_ITEMS, [Record(ORDER_ITEMS, 2, unit, b.fronts.keys[2],
                                                orjson.dumps({"unit": unit, "front": front}))])
    await b.tick()
    lateness = settings.window.allowed_lateness_ms
    assert b.engine.units[2].watermark.watermark_ms == T0 + 30_000 - lateness  # the slowest other unit
    line = orjson.dumps({"ts": T0 + 31_000, "order_id": "o", "product_id": pid, "quantity": 1, "unit_price": 2.0,
                         "source": "orders/0", "seq": 5})
    await b.on_records(ORDER_ITEMS, [Record(ORDER_ITEMS, 2, 9, pid.encode(), line)])
    assert not [s for s in sent if s[0] == "dead-letters"]  # a line the other worker forwards late counts
    assert b.engine.index[pid].open  # still open: counted into its bucket


def test_in_flight_knows_its_oldest_event_time_as_records_come_back() -> None:
    from streamproc.fronts import InFlight

    q = InFlight()
    sent = [(0, 50), (1, 30), (2, 40), (3, 10), (4, 60), (5, 20)]
    for n, ts in sent:
        q.append(n, ts)
    assert q.oldest() == 10 and len(q) == 6
    for n in range(6):
        q.read_back(n)
        rest = [ts for m, ts in sent if m > n]
        assert q.oldest() == (min(rest) if rest else None) and len(q) == len(rest)
