"""The customer engine on hand-made cases: erasure, session boundaries, retention, replays, odd inputs,
and the memory a customer costs."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from streamproc.customer_gen import generate
from streamproc.customers import CustomerConfig, CustomerEngine, Output, trigger_id
from streamproc.events import Click, Order, OrderItem, decode_click, decode_order

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_767_225_600_000


def click(user: str, ts: int, pid: str = "P1", action: str = "view", sid: str | None = "s1") -> Click:
    return Click(event_id=f"c-{user}-{ts}", ts_ms=ts, user_id=user, product_id=pid, category="shoes",
                 action=action, session_id=sid)


def order(user: Any, ts: int, *lines: tuple[str, int, float], oid: str = "o1") -> Order:
    return Order(order_id=oid, ts_ms=ts, user_id=user,
                 items=tuple(OrderItem(p, q, price, "shoes") for p, q, price in lines), currency="EUR")


class Feed:
    """An engine with the per-stream sequence numbers kept for the caller."""

    def __init__(self, cfg: CustomerConfig | None = None) -> None:
        self.engine = CustomerEngine(cfg)
        self.n = {"clicks": 0, "orders": 0}

    def __call__(self, *events: Click | Order) -> None:
        for ev in events:
            stream = "clicks" if isinstance(ev, Click) else "orders"
            self.n[stream] += 1
            if isinstance(ev, Click):
                self.engine.process_click(ev, self.n[stream])
            else:
                self.engine.process_order(ev, self.n[stream])

    def triggers(self, wm: int) -> list[dict[str, Any]]:
        return [o.value for o in self.engine.tick(wm) if o.kind == "trigger" and o.value]


def test_erase_forgets_now_and_for_good() -> None:
    feed = Feed()
    feed(click("u", T0, "P1"), click("u", T0 + MIN, "P1", "add_to_cart"), click("v", T0, "P1", "add_to_cart"))
    feed(click("u", T0 + 2 * HOUR, "P2"))  # pending: beyond the watermark below
    assert feed.triggers(T0 + 10 * MIN) == []
    assert feed.engine.features("u") is not None
    assert feed.engine.erase("u") == [Output("features", "u", None)]
    assert feed.engine.features("u") is None
    assert "u" in feed.engine.evicted and "u" not in feed.engine.dirty
    later = feed.triggers(T0 + 5 * HOUR)
    assert [t["user_id"] for t in later] == ["v"]  # u's cart was abandoned too, but u is gone
    assert not feed.engine.process_click(click("u", T0 + MIN, "P1", "add_to_cart"), 1)  # a replay
    assert not feed.engine.process_click(click("u", T0 + 6 * HOUR, "P3"), 99)  # new records too, for now
    assert feed.triggers(T0 + 2 * DAY) == [] and feed.engine.features("u") is None
    # once the marker expires (retention after the erasure), the old records are older than the retention
    feed.engine.tick(T0 + 10 * MIN + feed.engine.cfg.retention_ms + 1)
    assert "u" not in feed.engine.erased
    assert not feed.engine.process_click(click("u", T0 + MIN, "P1", "add_to_cart"), 1)
    assert feed.engine.features("u") is None


def test_erase_survives_a_restart() -> None:
    feed = Feed()
    feed(click("u", T0))
    feed.engine.tick(T0 + MIN)
    feed.engine.erase("u")
    fresh = CustomerEngine()
    fresh.restore_shared(feed.engine.snapshot_shared())
    assert not fresh.process_click(click("u", T0), 1)


def test_session_ends_on_inactivity_or_a_new_session_id() -> None:
    feed = Feed()
    loop = [click("u", T0 + i * MIN, "P1") for i in range(3)]
    feed(*loop, click("u", T0 + 3 * MIN, "P2", sid="s2"))  # a new session_id ends the first at once
    feed(click("w", T0, "P9"), click("w", T0 + 30 * MIN, "P9"), click("w", T0 + 60 * MIN, "P9"))  # gaps of exactly 30 min
    got = feed.triggers(T0 + 4 * HOUR)
    assert [(t["kind"], t["user_id"], t["ts"], t["product_ids"]) for t in got] == [
        ("browse_abandoned", "u", T0 + 3 * MIN, ["P1"]),
        ("browse_abandoned", "w", T0 + 90 * MIN, ["P9"]),  # one session: a gap of 30 min does not end it
    ]
    assert got[0]["trigger_id"] == trigger_id("browse_abandoned", "u", str(T0))


def test_timers_fire_only_once_the_watermark_is_past_them() -> None:
    feed = Feed()
    feed(click("u", T0, "P1", "add_to_cart"))
    assert feed.triggers(T0 + HOUR) == []  # due at T0 + 1 h: an order at that very ms may still come
    assert [t["ts"] for t in feed.triggers(T0 + HOUR + 1)] == [T0 + HOUR]
    assert feed.triggers(T0 + 3 * HOUR) == []  # once


def test_win_back_after_three_usual_gaps_and_once_per_lapse() -> None:
    feed = Feed()
    feed(order("u", T0, ("P1", 1, 10.0), oid="a"), order("u", T0 + 5 * DAY, ("P1", 1, 10.0), oid="b"),
         order("u", T0 + 5 * DAY, ("P1", 1, 10.0), oid="c"))  # a second order the same ms: a zero gap
    got = feed.triggers(T0 + 40 * DAY)
    assert [(t["kind"], t["ts"]) for t in got] == [("win_back", T0 + 5 * DAY + int(3 * 2.5 * DAY))]
    assert feed.triggers(T0 + 80 * DAY) == []


def test_interest_surging_for_recent_viewers_once_per_surge() -> None:
    feed = Feed()
    a = T0 + 8 * DAY
    feed(click("near", a - 7 * DAY, "P7"), click("far", a - 7 * DAY - 1, "P7"), click("now", a, "P7"))
    alert = {"alert_id": "x", "dedup_key": "demand_surge:orders:P7", "status": "firing",
             "labels": {"alertname": "demand_surge", "product_id": "P7", "category": "shoes"},
             "window": {"start_ms": a - MIN, "end_ms": a}}
    assert feed.engine.on_product_alert(alert)
    assert feed.engine.on_product_alert(dict(alert, window={"start_ms": a, "end_ms": a + MIN}))  # a repeat
    assert not feed.engine.on_product_alert({"labels": {"alertname": "demand_drop", "product_id": "P7"},
                                             "window": {"end_ms": a}})
    assert not feed.engine.on_product_alert({"nonsense": True})
    assert feed.engine.on_product_alert({"labels": {"alertname": "demand_surge", "product_id": "P8"},
                                         "window": {"end_ms": a}})  # no dedup_key, no category
    got = feed.triggers(a + HOUR)
    assert sorted(t["user_id"] for t in got if t["kind"] == "interest_surging") == ["near", "now"]
    assert feed.engine.trending("shoes") == ["P7"]


def test_retention_drops_inactive_customers_with_a_tombstone() -> None:
    feed = Feed(CustomerConfig(retention_ms=2 * DAY))
    feed(click("u", T0), click("v", T0 + DAY))
    out = feed.engine.tick(T0 + 2 * DAY + 1)
    assert Output("features", "u", None) in out and "u" not in feed.engine.customers
    assert "v" in feed.engine.customers
    assert not feed.engine.process_click(click("u", T0), 5)  # a replay, older than the retention: ignored
    assert feed.engine.process_click(click("u", T0 + 1), 6)  # young enough to count (until the next tick)


def test_odd_inputs_do_not_crash() -> None:
    feed = Feed()
    assert not feed.engine.process_order(order(None, T0, ("P1", 1, 5.0)), 1)
    assert not feed.engine.process_order(order("", T0, ("P1", 1, 5.0)), 2)
    assert feed.engine.process_order(order("u", T0, oid="empty"), 3)
    assert feed.engine.process_order(order("u", T0 + 1, ("", 1, 5.0), ("P2", 0, 0.0), oid="odd"), 4)
    assert not feed.engine.process_order(order("u", T0 + 1, ("P2", 1, 1.0), oid="odd"), 4)  # replayed seq
    feed(click("u", T0 + MIN, "P1", action="wishlist", sid=None))
    feed.engine.tick(T0 + HOUR)
    feed(click("u", T0, "P3"))  # late: the runner should have dead-lettered it; applied at the next tick
    feed.engine.tick(T0 + 2 * HOUR)
    f = feed.engine.features("u")
    assert f is not None and f["orders_total"] == 2 and f["average_order_value"] == 0.0
    assert feed.engine.features("nobody") is None


def test_memory_per_customer() -> None:
    """What a customer costs once its records are applied, measured by restoring snapshots under
    tracemalloc (every id string then belongs to the state: an upper bound). docs/customers.md quotes it."""
    g = generate(1_000, seed=5)
    engine = CustomerEngine()
    for i, c in enumerate(g.clicks):
        engine.process_click(decode_click(orjson.dumps(c)), i)  # type: ignore[arg-type]
    for i, o in enumerate(g.orders):
        engine.process_order(decode_order(orjson.dumps(o)), i)  # type: ignore[arg-type]
    engine.tick(g.end_ms)
    snaps = [engine.snapshot(u) for u in engine.customers]
    gc.collect()
    tracemalloc.start()
    fresh = CustomerEngine()
    before = tracemalloc.get_traced_memory()[0]
    for s in snaps:
        fresh.restore(s)
    gc.collect()
    per_customer = (tracemalloc.get_traced_memory()[0] - before) / len(snaps)
    tracemalloc.stop()
    print(f"bytes per customer: {per_customer:.0f}")
    assert per_customer < 4_000


def test_a_session_abandons_its_cart_once_even_when_the_abandonment_is_shorter_than_the_session_gap() -> None:
    """With ``cart_abandon_ms`` (here 5 min) below the 30-min session gap, a customer may come back to the same
    session after its cart_abandoned fired and cart more: that session's episode has fired, so no second
    trigger (it would carry the same trigger_id with other content). A later session is a new episode."""
    feed = Feed(CustomerConfig(cart_abandon_ms=5 * MIN))
    feed(click("u", T0, "P1", "add_to_cart"))
    first = feed.triggers(T0 + 6 * MIN)
    assert [(t["kind"], t["episode"], t["product_ids"]) for t in first] == [("cart_abandoned", str(T0), ["P1"])]
    feed(click("u", T0 + 10 * MIN, "P2", "add_to_cart"))  # same session (within 30 min of the last click)
    assert feed.triggers(T0 + 20 * MIN) == []
    later = T0 + 2 * HOUR  # a new session
    feed(click("u", later, "P3", "add_to_cart", sid="s2"))
    again = feed.triggers(later + 6 * MIN)
    assert [(t["kind"], t["episode"]) for t in again] == [("cart_abandoned", str(later))]
    assert again[0]["trigger_id"] != first[0]["trigger_id"]
    snap = feed.engine.snapshot("u")  # the fired episode survives a snapshot/restore
    restored = CustomerEngine(CustomerConfig(cart_abandon_ms=5 * MIN))
    restored.restore(snap)
    assert orjson.loads(restored.snapshot("u")) == orjson.loads(snap)
