"""The customer engine on generated journeys: triggers equal the generator's ground truth, and do not
depend on batching, interleaving of the streams, ticks or a snapshot/restore in the middle."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streamproc.customer_gen import Generated, generate
from streamproc.customers import CustomerEngine
from streamproc.events import Click, Order, decode_click, decode_order

N_CUSTOMERS = 5_000


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(N_CUSTOMERS, seed=7)


@pytest.fixture(scope="module")
def decoded(gen: Generated) -> tuple[list[Click], list[Order]]:
    clicks = [decode_click(orjson.dumps(c)) for c in gen.clicks]
    orders = [decode_order(orjson.dumps(o)) for o in gen.orders]
    assert all(isinstance(c, Click) for c in clicks) and all(isinstance(o, Order) for o in orders)
    return clicks, orders  # type: ignore[return-value]


def run(gen: Generated, decoded: tuple[list[Click], list[Order]], *, batch: int | None = None,
        restore_at: float | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], CustomerEngine]:
    """Drive the engine like a batch runner: records in chunks (each stream in its own order, the two
    streams interleaved differently per chunk), alerts before the tick they are due in, a tick after each
    chunk at the newest time delivered; optionally move to a fresh engine through snapshots midway."""
    clicks, orders = decoded
    recs = sorted([(c.ts_ms, 0, i) for i, c in enumerate(clicks)] + [(o.ts_ms, 1, i) for i, o in enumerate(orders)])
    alerts = list(gen.alerts)
    engine = CustomerEngine()
    triggers: list[dict[str, Any]] = []
    rng = random.Random(seed)
    size = batch or len(recs)
    restore_after = None if restore_at is None else int(len(recs) * restore_at) // size
    for n, lo in enumerate(range(0, len(recs), size)):
        chunk = recs[lo:lo + size]
        first = rng.random() < 0.5
        for stream in (0, 1) if first else (1, 0):
            for _ts, s, i in chunk:
                if s == stream:
                    if s == 0:
                        engine.process_click(clicks[i], i)
                    else:
                        engine.process_order(orders[i], i)
        wm = chunk[-1][0] if lo + size < len(recs) else gen.end_ms
        while alerts and alerts[0]["window"]["end_ms"] < wm:
            engine.on_product_alert(alerts.pop(0))
        triggers += [o.value for o in engine.tick(wm) if o.kind == "trigger" and o.value]
        if n == restore_after:
            fresh = CustomerEngine()
            fresh.restore_shared(engine.snapshot_shared())
            for uid in engine.customers:
                fresh.restore(engine.snapshot(uid))
            engine = fresh
            for _ts, s, i in chunk:  # the runner replays the last batch after the restart: no-ops
                assert not (engine.process_click(clicks[i], i) if s == 0 else engine.process_order(orders[i], i))
    return triggers, engine


@pytest.fixture(scope="module")
def at_once(gen: Generated, decoded: tuple[list[Click], list[Order]]) -> tuple[list[dict[str, Any]], CustomerEngine]:
    return run(gen, decoded)


def key(t: dict[str, Any]) -> tuple[Any, ...]:
    return (t["kind"], t["user_id"], t["episode"], t["ts"])


def test_triggers_equal_the_ground_truth(gen: Generated, at_once: tuple[list[dict[str, Any]], CustomerEngine]) -> None:
    triggers, _ = at_once
    got = {key(t): t for t in triggers}
    want = {key(t): t for t in gen.truth}
    assert len(got) == len(triggers), "a trigger fired twice"
    assert {k[0] for k in want} == {"cart_abandoned", "browse_abandoned", "win_back", "interest_surging"}
    assert len(want) > 5_000
    assert got.keys() - want.keys() == set()  # precision 1.0
    assert want.keys() - got.keys() == set()  # recall 1.0
    for k, t in want.items():
        if t["product_ids"] is not None:
            assert got[k]["product_ids"] == t["product_ids"], k
    assert len({t["trigger_id"] for t in triggers}) == len(triggers)


def test_trigger_records_say_what_and_why(at_once: tuple[list[dict[str, Any]], CustomerEngine]) -> None:
    triggers, _ = at_once
    for t in triggers[:200]:
        assert {"trigger_id", "kind", "user_id", "ts", "product_ids", "reason", "episode"} <= t.keys()
        assert t["reason"] and isinstance(t["product_ids"], list)
    carts = [t for t in triggers if t["kind"] == "cart_abandoned"]
    assert all(t["product_ids"] for t in carts)
    assert any(t["cart_value"] is None for t in carts)  # no order has priced the product yet
    assert any(t["cart_value"] and t["cart_value"] > 0 for t in carts)


@pytest.mark.parametrize(("batch", "restore_at"), [(997, None), (5_000, 0.5), (40_000, 0.3)])
def test_same_triggers_and_state_whatever_the_batching(
    gen: Generated, decoded: tuple[list[Click], list[Order]],
    at_once: tuple[list[dict[str, Any]], CustomerEngine], batch: int, restore_at: float | None,
) -> None:
    expected, whole = at_once
    triggers, engine = run(gen, decoded, batch=batch, restore_at=restore_at, seed=batch)
    assert triggers == expected
    sample = sorted(whole.customers)[::25]
    assert [engine.features(u) for u in sample] == [whole.features(u) for u in sample]
    assert engine.customers.keys() == whole.customers.keys()


def test_retention_forgets_inactive_customers(gen: Generated, decoded: tuple[list[Click], list[Order]]) -> None:
    _, engine = run(gen, decoded)
    n = len(engine.customers)
    assert n == N_CUSTOMERS
    out = engine.tick(gen.end_ms + engine.cfg.retention_ms + 1)
    assert not engine.customers
    tombstones = [o for o in out if o.kind == "features"]
    assert len(tombstones) == n and all(o.value is None for o in tombstones)
    assert not [o for o in out if o.kind == "trigger" and o.value and o.value["ts"] >= gen.end_ms + 90 * 86_400_000]
    clicks, _ = decoded
    assert not engine.process_click(clicks[-1], 10**9)  # too old to matter now: not resurrected
    assert engine.features(clicks[-1].user_id) is None
