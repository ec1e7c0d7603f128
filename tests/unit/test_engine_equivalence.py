"""The engine's outputs are those of the reference engine, record for record, at every batch size.

``engine_golden.json`` holds, per driver and batch size, a digest per output key (count and a hash chained
over the records in order) recorded from the engine before its batch/running-sum rewrite
(``python -m tests.unit.engine_replay`` re-records it: only do that on purpose, for a change of results).
The drivers (``engine_replay.py``) cover surges, drops, review spikes, multi-line orders forwarded
between units, malformed and late records, a restart from snapshots, expiry and idle closes.
"""

from __future__ import annotations

from typing import Any

import fastjsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.demand import FORCED_PARK_BUCKETS, DemandEngine
from streamproc.events import _fast_check, load_schema

from . import engine_replay as er

GOLDEN: dict[str, Any] = orjson.loads(er.GOLDEN.read_bytes())


def _compare(name: str, got: dict[str, Any]) -> None:
    want = GOLDEN[name]
    differ = sorted(k for k in set(want["keys"]) | set(got["keys"]) if want["keys"].get(k) != got["keys"].get(k))
    assert got["totals"] == want["totals"] and not differ, f"{name}: {len(differ)} keys differ, e.g. {differ[:8]}"


@pytest.mark.parametrize("batch", er.BATCH_SIZES)
@pytest.mark.parametrize("scenario", list(er.SCENARIOS))
def test_runtime_outputs_match_the_reference(scenario: str, batch: int) -> None:
    _compare(f"runtime/{scenario}/{batch}", er.digest(er.run_runtime(scenario, batch)))


@pytest.mark.parametrize("batch", er.BATCH_SIZES)
def test_engine_outputs_with_expiry_match_the_reference(batch: int) -> None:
    _compare(f"engine/surges/{batch}", er.digest(er.run_engine(batch)))


def test_the_comparison_can_fail() -> None:
    out = er.run_runtime("negative-reviews", 500)
    i = next(i for i, o in enumerate(out) if o[0] == "product-features")
    out[i] = (out[i][0], out[i][1], out[i][2].replace(b'"PRESENT"', b'"PRESENT" '))
    with pytest.raises(AssertionError, match="keys differ"):
        _compare("runtime/negative-reviews/500", er.digest(out))


# -- the decoders' fast check accepts nothing the schema rejects ---------------------------------------

_VALUES = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
           | st.integers(0, 10).map(float) | st.text(max_size=3) | st.text(min_size=195, max_size=205)
           | st.sampled_from(["view", "add_to_cart", "2024-04-24T23:06:40Z", "", "x"])
           | st.lists(st.integers(0, 2), max_size=2) | st.dictionaries(st.text(max_size=2), st.integers(0, 2), max_size=2))
_BASE = {
    "click": {"event_id": "e", "ts": 1, "user_id": "u", "product_id": "p", "category": "c", "action": "view",
              "session_id": "s"},
    "order": {"order_id": "o", "ts": 1, "user_id": "u", "currency": "EUR",
              "items": [{"product_id": "p", "quantity": 1, "unit_price": 1.5, "category": "c"}]},
    "review": {"review_id": "r", "ts": 1, "product_id": "p", "text": "t", "user_id": "u", "rating": 4, "title": "x",
               "lang": "en"},
}


_VALIDATORS = {k: fastjsonschema.compile(load_schema(k)) for k in _BASE}


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(sorted(_BASE)), drop=st.lists(st.text(max_size=12), max_size=2),
       changes=st.dictionaries(st.sampled_from(["event_id", "ts", "user_id", "product_id", "category", "action",
                                                "session_id", "order_id", "currency", "items", "review_id", "text",
                                                "rating", "title", "lang"]), _VALUES, max_size=3),
       line=st.dictionaries(st.sampled_from(["product_id", "quantity", "unit_price", "category"]), _VALUES, max_size=2))
def test_the_fast_check_accepts_only_what_the_schema_accepts(kind: str, drop: list[str], changes: dict[str, Any],
                                                            line: dict[str, Any]) -> None:
    obj = orjson.loads(orjson.dumps(_BASE[kind]))
    obj.update(changes)
    for k in drop:
        obj.pop(k, None)
    if kind == "order" and isinstance(obj.get("items"), list) and obj["items"] and isinstance(obj["items"][0], dict):
        obj["items"][0].update(line)
    obj = orjson.loads(orjson.dumps(obj))
    if _fast_check(kind)(obj):
        _VALIDATORS[kind](obj)  # raises if the schema disagrees


def test_the_fast_check_takes_the_common_shape_and_hands_over_the_rest() -> None:
    fast = _fast_check("click")
    assert fast(dict(_BASE["click"]))
    assert not fast({**_BASE["click"], "ts": "2024-04-24T23:06:40Z"})  # valid, but the pattern is fastjsonschema's
    assert not fast({**_BASE["click"], "ts": 1.0})  # valid (an integer to JSON Schema): fastjsonschema decides
    assert not fast({**_BASE["click"], "action": "buy"})


# -- the running totals, where the golden traffic does not reach ---------------------------------------

@pytest.mark.parametrize("bucket_min", [1, 7])  # 7: buckets straddle the hour, the totals are not used
def test_hour_and_day_counts_are_those_of_the_closed_buckets(bucket_min: int) -> None:
    from streamproc.demand import DemandEngine, ProductState
    from streamproc.detectors import DetectorConfig
    from streamproc.events import Click, OrderItem
    from streamproc.windows import WindowSpec

    size, hour = bucket_min * er.MIN, 60 * er.MIN
    eng = DemandEngine(WindowSpec(bucket_ms=size, idle_timeout_ms=1000), DetectorConfig())
    t0 = er.START_MS - er.START_MS % hour
    clicks: list[int] = []
    orders: list[tuple[int, float]] = []
    outs = []
    for i in range(0, 3 * 60 * 6):  # three hours, a record every 10 s, with gaps
        ts = t0 + i * 10_000
        if (i // 50) % 4 == 3:
            continue
        eng.apply_click(0, "clicks/0", Click(f"e{i}", ts, "u", "P", None, "view", None), ts, i)
        clicks.append(ts)
        if i % 7 == 0:
            eng.admit_order(0, "orders/0", ts, ts)
            eng.apply_item(0, ts, OrderItem("P", 1 + i % 3, 0.1 * (i % 11), None), "orders/0", i)
            orders.append((ts, (1 + i % 3) * (0.1 * (i % 11))))
        outs += eng.tick(ts)
    outs += eng.tick(t0 + 4 * hour)
    feats = [o.value for o in outs if o.kind == "features"]
    assert len(feats) > 20
    for f in feats:
        as_of = f["as_of_ms"]
        in_1h = [t for t in clicks if as_of - hour <= t - t % size < as_of]
        assert f["features"]["clicks_1h"] == len(in_1h)
        assert f["features"]["clicks_24h"] == len([t for t in clicks if t - t % size < as_of])
        rev = 0.0  # re-added per closed bucket, in bucket order, as the rows hold them
        for b in sorted({t - t % size for t, _ in orders if as_of - hour <= t - t % size < as_of}):
            row = 0.0
            for t, r in orders:
                if t - t % size == b:
                    row += r
            rev += row
        assert f["features"]["revenue_1h"] == round(rev, 2)
    snap = orjson.dumps(eng.index["P"].to_dict())
    back = ProductState.from_dict(orjson.loads(snap))
    assert orjson.dumps(back.to_dict()) == snap and list(back.m_sum) == list(eng.index["P"].m_sum)


# -- parking: when a quiet product's zero-count closes run, never what they compute ------------------

@pytest.mark.parametrize("mode", ["parked", "never-parked"])
def test_parking_changes_no_output(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    engines = _engines_with(monkeypatch, park=mode == "parked")
    _compare("engine/surges/500", er.digest(er.run_engine(500)))
    for scenario in er.SCENARIOS:
        _compare(f"runtime/{scenario}/500", er.digest(er.run_runtime(scenario, 500)))
    parks, wakes = sum(e.parks for e in engines), sum(e.wakes for e in engines)
    if mode == "never-parked":
        assert parks == wakes == 0
    else:  # the drivers' quiet spells and idle hour park products, and records and due closes wake them
        assert parks > 0 and wakes > 0, (parks, wakes)


@pytest.mark.parametrize("scenario", list(er.SCENARIOS))
def test_a_cap_on_products_in_memory_delays_outputs_but_changes_none(monkeypatch: pytest.MonkeyPatch,
                                                                      scenario: str) -> None:
    # Over the cap, products are parked with closes due and catch up at most FORCED_PARK_BUCKETS buckets later:
    # every record is the reference's, in the same order per key; at the end of the run, only the last few of a
    # key may still be to come.
    _engines_with(monkeypatch, park=False)
    want = _by_key(er.run_runtime(scenario, 500))
    engines = _engines_with(monkeypatch, max_hot=3)
    got = _by_key(er.run_runtime(scenario, 500))
    assert sum(e.parks for e in engines) > 100 and sum(e.wakes for e in engines) > 100
    assert got.keys() == want.keys()
    for key, records in want.items():
        assert got[key] == records[:len(got[key])], key
        assert len(records) - len(got[key]) <= (FORCED_PARK_BUCKETS if key[0] == "product-features" else 0), key


def _by_key(out: list[tuple[str, str, bytes]]) -> dict[tuple[str, str], list[bytes]]:
    grouped: dict[tuple[str, str], list[bytes]] = {}
    for topic, key, value in out:
        grouped.setdefault((topic, key), []).append(value)
    return grouped


def _engines_with(monkeypatch: pytest.MonkeyPatch, **options: Any) -> list[DemandEngine]:
    """Make every DemandEngine built from now on take ``options``; returns the engines built."""
    engines: list[DemandEngine] = []
    init = _ENGINE_INIT

    def make(self: DemandEngine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, **options})
        engines.append(self)

    monkeypatch.setattr(DemandEngine, "__init__", make)
    return engines


_ENGINE_INIT = DemandEngine.__init__


def test_a_tick_in_slices_of_one_close_gives_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamproc import runtime

    monkeypatch.setattr(runtime, "TICK_SLICE", 1)
    for scenario in er.SCENARIOS:
        _compare(f"runtime/{scenario}/500", er.digest(er.run_runtime(scenario, 500)))
