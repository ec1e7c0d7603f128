"""Routing and duplicate checks between decoding and counting."""

from __future__ import annotations

import orjson

from streamproc.admission import DUPLICATE, Admission, RecentIds, partition_for
from streamproc.events import DecodeError, decode_click, decode_order
from streamproc.metrics import Metrics

T = 1_780_000_000_000


def click(pid: str, eid: str = "e1", ts: int = T) -> bytes:
    return orjson.dumps({"event_id": eid, "ts": ts, "user_id": "u", "product_id": pid})


def test_a_click_keyed_by_another_product_is_misrouted() -> None:
    adm = Admission(4, dedup_horizon_ms=0, dedup_max_ids=10)
    ev = decode_click(click("MISKEY"))
    home = partition_for("MISKEY", 4)
    assert adm.check("clicks", ev, b"MISKEY", home) is ev
    assert adm.check("clicks", ev, None, home) is ev  # unkeyed but on its product's partition
    for key, part in ((b"OTHER_42", home), (b"MISKEY", (home + 1) % 4), (None, (home + 1) % 4)):
        err = adm.check("clicks", ev, key, part)
        assert isinstance(err, DecodeError) and err.kind == "misrouted", (key, part)


def test_orders_are_not_routed_by_key() -> None:
    adm = Admission(4, dedup_horizon_ms=0, dedup_max_ids=10)
    ev = decode_order(orjson.dumps({"order_id": "o", "ts": T, "user_id": "u",
                                    "items": [{"product_id": "A", "quantity": 1, "unit_price": 1}]}))
    assert adm.check("orders", ev, b"anything", 3) is ev


def test_an_id_seen_again_within_the_horizon_is_a_duplicate_and_counted() -> None:
    m = Metrics()
    adm = Admission(4, dedup_horizon_ms=60_000, dedup_max_ids=1000, metrics=m)
    home = partition_for("P", 4)
    first = decode_click(click("P", "e1"))
    assert adm.check("clicks", first, b"P", home) is first
    assert adm.check("clicks", decode_click(click("P", "e1")), b"P", home) is DUPLICATE
    assert m.registry.get_sample_value("streamproc_duplicates_total", {"topic": "clicks"}) == 1
    later = decode_click(click("P", "e2", T + 61_000))
    assert adm.check("clicks", later, b"P", home) is later  # moves the horizon past e1
    again = decode_click(click("P", "e1"))
    assert adm.check("clicks", again, b"P", home) is again  # older than the horizon: not judged


def test_remembered_ids_are_bounded() -> None:
    ids = RecentIds(horizon_ms=10**9, max_ids=100)
    for i in range(1000):
        assert not ids.seen("s", f"e{i}", T + i)
    assert ids.size == 100
    assert ids.seen("s", "e999", T) and not ids.seen("s", "e0", T + 1000)
