"""Customer features against a plain reference computed from the raw event dicts (no engine helpers:
``tests/customer_reference.py``, shared with the worker's acceptance test)."""

from __future__ import annotations

import random

import orjson
import pytest

from streamproc.customer_gen import Generated, generate
from streamproc.customers import CustomerEngine
from streamproc.events import decode_click, decode_order
from tests.customer_reference import GAP, by_user, reference

MIN = 60_000


@pytest.fixture(scope="module")
def gen() -> Generated:
    return generate(2_000, seed=11)


@pytest.mark.parametrize("when", ["sessions open", "surges firing", "end"])
def test_features_match_a_reference_computed_from_the_raw_events(gen: Generated, when: str) -> None:
    if when == "sessions open":  # just after a click
        as_of = gen.clicks[len(gen.clicks) // 3]["ts"] + 1
    elif when == "surges firing":
        as_of = gen.alerts[len(gen.alerts) // 2]["window"]["end_ms"] + 5 * MIN
    else:
        as_of = gen.end_ms
    engine = CustomerEngine()
    for i, c in enumerate(gen.clicks):
        engine.process_click(decode_click(orjson.dumps(c)), i)  # type: ignore[arg-type]
    for i, o in enumerate(gen.orders):
        engine.process_order(decode_order(orjson.dumps(o)), i)  # type: ignore[arg-type]
    for a in gen.alerts:
        engine.on_product_alert(a)
    engine.tick(as_of)  # everything was given, the later records wait for their time
    users = by_user(gen.clicks, gen.orders)
    open_now = [u for u, (cs, _os) in users.items() if any(as_of - GAP <= c["ts"] < as_of for c in cs)]
    sample = sorted(set(random.Random(3).sample(sorted(users), 300)) | set(open_now))
    checked = 0
    for uid in sample:
        clicks, orders = users[uid]
        got = engine.features(uid)
        assert got is not None
        want = reference(clicks, orders, gen.orders, gen.alerts, as_of)
        assert {k: got[k] for k in want} == want, uid
        assert got["as_of_ms"] == as_of
        checked += 1
    assert checked >= 300
    if when == "sessions open":
        assert any(engine.features(u)["session"] for u in open_now)  # type: ignore[index]
    if when == "surges firing":
        assert any(engine.features(u)["recommended"] for u in users)  # type: ignore[index]
    assert any(engine.features(u)["cart"]["value"] for u in sample)  # type: ignore[index]
