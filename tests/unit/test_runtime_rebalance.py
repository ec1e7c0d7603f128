"""What a worker keeps of a unit across rebalances (Runtime.revoke / Runtime.reclaim)."""

from __future__ import annotations

from typing import Any

import orjson

from streamproc.clock import FakeClock
from streamproc.runtime import Record, Runtime, partition_for
from streamproc.settings import Settings

T0 = 1_780_000_000_000
UNIT = 2


def _runtime() -> Runtime:
    async def send(topic: str, key: bytes | None, value: bytes, headers: Any) -> None:
        pass

    rt = Runtime(Settings(partitions=4), send, clock=FakeClock(T0))
    rt.assigned = set()
    for logical in ("clicks", "orders", "reviews"):
        rt.assign(logical, UNIT)
    return rt


def _pid() -> str:
    return next(f"P{i}" for i in range(1000) if partition_for(f"P{i}", 4) == UNIT)


async def _clicks(rt: Runtime, n: int, first_offset: int = 0) -> None:
    pid = _pid()
    for i in range(first_offset, first_offset + n):
        ev = orjson.dumps({"event_id": f"e{i}", "ts": T0 + i * 1000, "user_id": "u", "product_id": pid})
        await rt.on_records("clicks", [Record("clicks", UNIT, i, pid.encode(), ev)])


def _clicks_counted(rt: Runtime) -> float:
    p = rt.engine.index[_pid()]
    return sum(c[0] + c[1] for c in p.open.values())


async def test_a_unit_that_comes_straight_back_keeps_its_products() -> None:
    rt = _runtime()
    await _clicks(rt, 10)
    rt.revoke(UNIT)
    assert _pid() not in rt.engine.index
    assert rt.reclaim(UNIT)
    assert _clicks_counted(rt) == 10
    assert rt.engine.index[_pid()].applied["clicks/2"] == 9


async def test_a_revocation_before_recovery_finished_keeps_what_was_set_aside() -> None:
    """Two rebalances in a row: the second revocation came while the unit was only registered (its
    recovery had not run), and must not replace the products set aside at the first one with nothing."""
    rt = _runtime()
    await _clicks(rt, 10)
    rt.revoke(UNIT)  # rebalance 1: products set aside
    for logical in ("clicks", "orders", "reviews"):
        rt.assign(logical, UNIT)  # assigned again: the unit exists, with its streams only
    assert rt.engine.units[UNIT].products == {}
    rt.revoke(UNIT, recovered=False)  # rebalance 2 before the recovery of rebalance 1's assignment
    assert rt.reclaim(UNIT)  # recovery after rebalance 2: the unit comes back with its products
    assert _clicks_counted(rt) == 10
    await _clicks(rt, 1, first_offset=9)  # read again after the rebalance: counted before, skipped
    assert _clicks_counted(rt) == 10


async def test_a_recovered_unit_sets_aside_its_newest_state() -> None:
    rt = _runtime()
    await _clicks(rt, 5)
    rt.revoke(UNIT)
    assert rt.reclaim(UNIT)
    await _clicks(rt, 5, first_offset=5)
    rt.revoke(UNIT)  # recovered: replaces what was set aside before
    assert rt.reclaim(UNIT)
    assert _clicks_counted(rt) == 10
    assert not rt.reclaim(UNIT)  # taken back once


async def test_parked_products_come_back_with_their_unit() -> None:
    rt = _runtime()
    rt.assigned = None  # one worker owning every unit: no other worker's fronts to wait for
    pids = [f"Q{i}" for i in range(400) if partition_for(f"Q{i}", 4) == UNIT]
    for i, pid in enumerate(pids):  # one click each, then 20 minutes of another product's clicks
        ev = orjson.dumps({"event_id": f"q{i}", "ts": T0 + i, "user_id": "u", "product_id": pid})
        await rt.on_records("clicks", [Record("clicks", UNIT, i, pid.encode(), ev)])
    await _clicks(rt, 0)
    clock = _pid()
    for m in range(1, 21):
        off = len(pids) + m
        ev = orjson.dumps({"event_id": f"c{m}", "ts": T0 + m * 60_000, "user_id": "u", "product_id": clock})
        await rt.on_records("clicks", [Record("clicks", UNIT, off, clock.encode(), ev)])
        rt.clock.advance(60_000)  # type: ignore[attr-defined]
        await rt.tick()
    assert rt.engine.parked_count() == len(pids)
    tracked = rt.engine.product_count()
    rt.revoke(UNIT)
    assert rt.engine.product_count() == 0
    assert rt.reclaim(UNIT)
    assert rt.engine.product_count() == tracked and rt.engine.parked_count() == len(pids)
    snap = orjson.loads(rt.engine.snapshot(pids[0]) or b"{}")
    assert snap["applied"] == {"clicks/2": 0}
    assert rt.engine.peek(pids[0]).features["features"]["clicks_24h"] == 1  # type: ignore[union-attr]
