"""The in-package harness (streamproc.testing) and the local snapshot files of ``rocksdb://``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from streamproc.runtime import partition_for
from streamproc.settings import Settings
from streamproc.state_store import LocalSnapshots
from streamproc.testing import Harness

MIN = 60_000
T0 = 1_780_000_000_000 - 1_780_000_000_000 % MIN


def _two_products_on_two_units(n: int) -> tuple[str, str]:
    ids = [f"P{i:03d}" for i in range(200)]
    a = ids[0]
    b = next(p for p in ids if partition_for(p, n) != partition_for(a, n))
    return a, b


def test_an_order_line_forwarded_to_another_unit_is_handed_back_and_counted_there() -> None:
    settings = Settings.from_env({})
    a, b = _two_products_on_two_units(settings.partitions)
    h = Harness(settings, start_ms=T0, assign=True)
    order = {"order_id": "o1", "ts": T0 + 1_000, "user_id": "u1",
             "items": [{"product_id": a, "quantity": 1, "unit_price": 2.0},
                       {"product_id": b, "quantity": 3, "unit_price": 5.0}]}

    async def run() -> None:
        await h.feed("orders", [(a.encode(), orjson.dumps(order))])
        h.clock.set(T0 + 10 * MIN)
        await h.tick()

    asyncio.run(run())
    units = {f["product_id"]: f["features"]["units_5m"] for f in h.outputs("product-features")
             if f["as_of_ms"] == T0 + MIN}
    assert units == {a: 1, b: 3}
    # The line for b went through the order-items "topic" on b's partition, offset 0.
    assert h.offsets[("order-items", partition_for(b, settings.partitions))] == 1


def test_records_get_kafka_like_partitions_and_offsets() -> None:
    h = Harness(Settings.from_env({}))
    first = h.record("clicks", b"P1", b"{}")
    second = h.record("clicks", b"P1", b"{}")
    assert (first.partition, first.offset, second.offset) == (partition_for("P1", 4), 0, 1)


def test_local_snapshots_keep_the_newest_value_and_the_changelog_offset(tmp_path: Path) -> None:
    local = LocalSnapshots(tmp_path)
    assert local.next_offset(2) is None
    local.apply(2, [(b"P1", b"one"), (b"P2", b"two")], 5)
    local.apply(2, [(b"P1", b"uno"), (b"P2", None)], 9)
    assert local.snapshots(2) == {b"P1": b"uno"}
    assert local.next_offset(2) == 9
    local.close()
    again = LocalSnapshots(tmp_path)  # what a restarted worker finds on disk
    assert again.snapshots(2) == {b"P1": b"uno"} and again.next_offset(2) == 9
    again.close()
