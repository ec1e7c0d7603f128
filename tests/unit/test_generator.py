"""The traffic generator: reproducible, contract-shaped events with anomalies a detector can see."""

from __future__ import annotations

import collections
import itertools
import re
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc import events as contract
from streamproc.errors import ConfigError
from streamproc.generator import (
    DEMO_WARMUP_MS,
    SCENARIO_NAMES,
    Anomaly,
    Scenario,
    catalog_of,
    events,
    scenario,
    truth,
)
from streamproc.traffic import baseline_per_minute

MIN = 60_000
HOUR = 60 * MIN
START = 1_700_000_040_000  # a whole minute, 22:14 UTC

Event = tuple[str, bytes, bytes, int]


def _orders_per_minute(evs: list[Event], product_id: str, start_ms: int) -> collections.Counter[int]:
    """Orders containing ``product_id``, by minute since ``start_ms``."""
    per_minute: collections.Counter[int] = collections.Counter()
    for topic, _, value, ts in evs:
        if topic == "orders" and any(it["product_id"] == product_id for it in orjson.loads(value)["items"]):
            per_minute[(ts - start_ms) // MIN] += 1
    return per_minute


@pytest.fixture(scope="module")
def surges() -> tuple[Scenario, list[Event]]:
    sc = scenario("surges", start_ms=START, duration_ms=2 * HOUR, rate_eps=40, seed=11)
    return sc, list(events(sc, seed=11))


@pytest.fixture(scope="module")
def steady() -> tuple[Scenario, list[Event]]:
    sc = scenario("steady", start_ms=START, duration_ms=30 * MIN, rate_eps=40, seed=3)
    return sc, list(events(sc, seed=3))


def test_same_seed_gives_identical_bytes_and_another_seed_does_not() -> None:
    sc = scenario("surges", start_ms=START, duration_ms=5 * MIN, rate_eps=30, seed=1)

    first, again = list(events(sc, seed=1)), list(events(sc, seed=1))
    other = list(itertools.islice(events(sc, seed=2), 1000))

    assert first == again
    assert first[:1000] != other


def test_scenario_is_reproducible_for_a_seed() -> None:
    make = lambda seed: scenario("surges", start_ms=START, duration_ms=6 * HOUR, rate_eps=100, seed=seed)  # noqa: E731

    assert make(4) == make(4)
    assert make(4).anomalies != make(5).anomalies


def test_timestamps_are_non_decreasing_and_inside_the_scenario(surges: tuple[Scenario, list[Event]]) -> None:
    sc, evs = surges
    ts = np.array([e[3] for e in evs])

    assert np.all(np.diff(ts) >= 0)
    assert ts[0] >= sc.start_ms and ts[-1] < sc.end_ms
    assert all(orjson.loads(v)["ts"] == t for _, _, v, t in evs[:2000])


def _check_shape(topic: str, key: bytes, obj: dict[str, Any], products: set[str]) -> None:
    assert isinstance(obj["ts"], int) and isinstance(obj["user_id"], str)
    if topic == "clicks":
        assert set(obj) == {"event_id", "ts", "user_id", "session_id", "product_id", "category", "action"}
        assert obj["action"] in ("view", "add_to_cart") and isinstance(obj["category"], str)
        assert key == obj["product_id"].encode()
    elif topic == "orders":
        assert set(obj) == {"order_id", "ts", "user_id", "items", "currency"} and obj["currency"] == "EUR"
        assert obj["items"] and key == obj["items"][0]["product_id"].encode()
        for item in obj["items"]:
            assert set(item) == {"product_id", "quantity", "unit_price", "category"}
            assert type(item["quantity"]) is int and item["quantity"] >= 1
            assert isinstance(item["unit_price"], float) and item["unit_price"] >= 0
            assert item["product_id"] in products
        assert len({it["product_id"] for it in obj["items"]}) == len(obj["items"])
    else:
        assert topic == "reviews"
        assert set(obj) == {"review_id", "ts", "user_id", "product_id", "rating", "title", "text", "lang"}
        assert obj["rating"] in (1, 2, 3, 4, 5) and obj["lang"] in ("en", "zh") and obj["text"] and obj["title"]
        assert key == obj["product_id"].encode()
    assert obj.get("product_id", obj.get("items", [{}])[0].get("product_id")) in products


def test_every_event_fits_the_contract(surges: tuple[Scenario, list[Event]]) -> None:
    sc, evs = surges
    products = set(catalog_of(sc).product_ids)
    decode = {"clicks": contract.decode_click, "orders": contract.decode_order, "reviews": contract.decode_review}
    ids: set[str] = set()

    for topic, key, value, _ in evs:
        obj = orjson.loads(value)
        _check_shape(topic, key, obj, products)
        ids.add(obj.get("event_id") or obj.get("order_id") or obj["review_id"])
    for topic, _, value, _ in evs[::50]:
        assert not isinstance(decode[topic](value), contract.DecodeError)

    assert len(ids) == len(evs)


def test_traffic_mix_looks_like_a_shop(steady: tuple[Scenario, list[Event]]) -> None:
    _, evs = steady
    by_topic = collections.Counter(t for t, *_ in evs)
    orders = [orjson.loads(v) for t, _, v, _ in evs if t == "orders"]
    views = sum(1 for t, _, v, _ in evs if t == "clicks" and b'"view"' in v)
    multi_item = sum(len(o["items"]) > 1 for o in orders) / len(orders)

    assert 0.01 <= by_topic["reviews"] / len(evs) <= 0.03
    assert 0.01 <= len(orders) / views <= 0.05  # conversion: a few percent
    assert 0.08 <= multi_item <= 0.25
    assert 0 < sum(1 for t, _, v, _ in evs if t == "clicks" and b"add_to_cart" in v) < views


def test_event_count_follows_the_rate(steady: tuple[Scenario, list[Event]]) -> None:
    sc, evs = steady

    assert len(evs) == pytest.approx(sc.rate_eps * sc.duration_ms / 1000, rel=0.10)


def test_popularity_is_zipf_skewed(steady: tuple[Scenario, list[Event]]) -> None:
    sc, evs = steady
    per_product = collections.Counter(k for t, k, _, _ in evs if t == "clicks")
    counts = sorted((per_product.get(p.encode(), 0) for p in catalog_of(sc).product_ids), reverse=True)

    assert counts[0] > 50 * max(1, int(np.median(counts)))


def test_daily_cycle_peaks_in_the_evening() -> None:
    sc = scenario("steady", start_ms=START - 22 * HOUR - 14 * MIN, duration_ms=24 * HOUR, rate_eps=2, seed=1)
    hours = collections.Counter((ts // HOUR) % 24 for _, _, _, ts in events(sc, seed=1))

    assert hours[20] > 2 * hours[8]


def test_truth_lists_exactly_the_scenario_anomalies(surges: tuple[Scenario, list[Event]]) -> None:
    sc, _ = surges
    cat = catalog_of(sc)
    rows = truth(sc)

    assert [(r["product_id"], r["kind"], r["start_ms"], r["end_ms"], r["factor"]) for r in rows] == [
        (a.product_id, a.kind, a.start_ms, a.end_ms, a.factor) for a in sc.anomalies
    ]
    assert all(r["category"] == cat.categories[cat.index(str(r["product_id"]))] for r in rows)
    assert {r["kind"] for r in rows} == {"demand_surge", "demand_drop"}


def test_surge_anomalies_are_placed_where_a_detector_can_see_them() -> None:
    sc = scenario("surges", start_ms=START, duration_ms=8 * HOUR, rate_eps=100, seed=2)
    _, orders, _ = baseline_per_minute(sc)
    cat = catalog_of(sc)
    kinds = collections.Counter(a.kind for a in sc.anomalies)

    assert kinds["demand_surge"] >= 2 and kinds["demand_drop"] >= 1
    assert len({a.product_id for a in sc.anomalies}) == len(sc.anomalies)
    for a, b in itertools.pairwise(sc.anomalies):
        assert b.start_ms >= a.end_ms  # spaced apart
    for a in sc.anomalies:
        assert a.start_ms >= sc.start_ms + sc.duration_ms // 3 and a.start_ms % MIN == 0
        assert 10 * MIN <= a.end_ms - a.start_ms <= 20 * MIN
        baseline = orders[cat.index(a.product_id)]
        if a.kind == "demand_surge":
            assert a.factor >= 5 and baseline >= 1
        else:
            assert a.factor == 0 and baseline >= 3


def test_surge_multiplies_the_products_orders(surges: tuple[Scenario, list[Event]]) -> None:
    sc, evs = surges
    for a in (a for a in sc.anomalies if a.kind == "demand_surge"):
        per_minute = _orders_per_minute(evs, a.product_id, sc.start_ms)
        lo, hi = (a.start_ms - sc.start_ms) // MIN, (a.end_ms - sc.start_ms) // MIN
        inside = [per_minute[m] for m in range(lo, hi)]
        outside = [per_minute[m] for m in range(sc.duration_ms // MIN) if not lo <= m < hi + 5]

        assert np.mean(inside) >= 5 * np.mean(outside) > 0


def test_drop_stops_the_products_orders(surges: tuple[Scenario, list[Event]]) -> None:
    sc, evs = surges
    for a in (a for a in sc.anomalies if a.kind == "demand_drop"):
        per_minute = _orders_per_minute(evs, a.product_id, sc.start_ms)
        lo, hi = (a.start_ms - sc.start_ms) // MIN, (a.end_ms - sc.start_ms) // MIN
        before = [per_minute[m] for m in range(lo - 20, lo)]

        assert sum(per_minute[m] for m in range(lo, hi)) == 0
        assert np.mean(before) >= 2


def test_negative_review_spikes_turn_reviews_negative() -> None:
    sc = scenario("negative-reviews", start_ms=START, duration_ms=3 * HOUR, rate_eps=60, seed=8)
    reviews = [orjson.loads(v) for t, _, v, _ in events(sc, seed=8) if t == "reviews"]
    rows = truth(sc)

    assert {r["kind"] for r in rows} == {"negative_review_spike", "review_volume_spike"}
    assert [r["expect_alert"] for r in rows] == [r["kind"] != "review_volume_spike" for r in rows]
    for a in sc.anomalies:
        mine = [r for r in reviews if r["product_id"] == a.product_id]
        inside = [r["rating"] <= 2 for r in mine if a.start_ms <= r["ts"] < a.end_ms]
        outside = [r["rating"] <= 2 for r in mine if not a.start_ms <= r["ts"] < a.end_ms]
        if a.kind == "negative_review_spike":
            assert np.mean(inside) >= 0.6 and np.mean(outside) <= 0.3
        else:
            assert np.mean(inside) <= 0.3
            minutes_in = (a.end_ms - a.start_ms) / MIN
            assert len(inside) / minutes_in >= 2 * len(outside) / (sc.duration_ms / MIN - minutes_in)


def test_review_texts_match_their_rating_and_language() -> None:
    sc = scenario("steady", start_ms=START, duration_ms=HOUR, rate_eps=50, seed=4)
    reviews = [orjson.loads(v) for t, _, v, _ in events(sc, seed=4) if t == "reviews"]
    han = re.compile(r"[\u4e00-\u9fff]")

    assert {r["lang"] for r in reviews} == {"en", "zh"}
    assert all(bool(han.search(r["text"])) == (r["lang"] == "zh") for r in reviews)
    assert any(re.search(r"[A-Za-z]", r["text"]) and han.search(r["text"]) for r in reviews)  # code-switched
    negative_words = ("disappoint", "terrible", "waste", "差", "失望", "坏", "broken", "do not buy")
    for r in reviews:
        looks_negative = any(w in r["text"].lower() for w in negative_words)
        if r["rating"] >= 4:
            assert not looks_negative, r


def test_demo_surges_a_top_product_right_after_the_warm_up() -> None:
    sc = scenario("demo", start_ms=START, duration_ms=DEMO_WARMUP_MS + 20 * MIN, rate_eps=50, seed=9)
    cat = catalog_of(sc)
    top5 = {cat.product_ids[i] for i in cat.ranks[:5]}
    surge = next(a for a in sc.anomalies if a.kind == "demand_surge")

    assert surge.product_id in top5 and surge.factor >= 10
    assert surge.start_ms == START + DEMO_WARMUP_MS + 3 * MIN
    assert all(a.start_ms >= START + DEMO_WARMUP_MS for a in sc.anomalies)
    assert baseline_per_minute(sc)[1][cat.index(surge.product_id)] >= 1


def test_sale_surges_every_product() -> None:
    sc = scenario("sale", start_ms=START, duration_ms=3 * HOUR, rate_eps=10, seed=1)

    assert [(a.product_id, a.kind) for a in sc.anomalies] == [("*", "demand_surge")]
    assert truth(sc)[0]["category"] == "*" and sc.anomalies[0].factor >= 5


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_every_named_scenario_generates(name: str) -> None:
    sc = scenario(name, start_ms=START, duration_ms=90 * MIN, rate_eps=5, seed=1)

    assert sum(1 for _ in events(sc, seed=1)) > 0
    assert all(sc.start_ms <= a.start_ms < a.end_ms <= sc.end_ms for a in sc.anomalies)


def test_bad_scenarios_are_refused() -> None:
    with pytest.raises(ConfigError):
        scenario("rush-hour", start_ms=START, duration_ms=MIN, rate_eps=1, seed=0)
    with pytest.raises(ConfigError):
        scenario("steady", start_ms=START, duration_ms=MIN, rate_eps=0, seed=0)
    sc = scenario("steady", start_ms=START, duration_ms=MIN, rate_eps=1, seed=0)
    bad = Scenario(**{**sc.__dict__, "anomalies": (Anomaly("P99999", "demand_surge", START, START + MIN, 5.0),)})
    with pytest.raises(ValueError):
        next(events(bad, seed=0))


@settings(max_examples=15, deadline=None, database=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200),
    duration_s=st.integers(min_value=1, max_value=900),
    seed=st.integers(min_value=0, max_value=2**32),
    name=st.sampled_from(SCENARIO_NAMES),
    offset_ms=st.integers(min_value=0, max_value=86_400_000),
)
def test_any_small_scenario_is_ordered_and_in_range(
    rate: float, duration_s: int, seed: int, name: str, offset_ms: int
) -> None:
    sc = scenario(name, start_ms=START + offset_ms, duration_ms=duration_s * 1000, rate_eps=rate, seed=seed)
    ts = [t for _, _, _, t in events(sc, seed=seed)]

    assert ts == sorted(ts)
    assert all(sc.start_ms <= t < sc.end_ms for t in ts)


DAY = 24 * HOUR


def test_weekly_scenario_has_the_calendar_rhythm_in_its_events() -> None:
    # two weeks at a low rate: Saturdays busier than Mondays, evenings busier than afternoons,
    # and the 1st of the month (a payday) busier than the same weekday a week later
    day0 = START // DAY * DAY
    sc = scenario("weekly", start_ms=day0, duration_ms=14 * DAY, rate_eps=0.2, seed=2, products=50)
    per_day: collections.Counter[int] = collections.Counter()
    for _, _, _, ts in events(sc, seed=2):
        per_day[ts // DAY] += 1
    sat = [d for d in per_day if d % 7 == 2]
    mon = [d for d in per_day if d % 7 == 4]
    assert min(per_day[d] for d in sat) > 1.2 * max(per_day[d] for d in mon)
    from streamproc.traffic import calendar_effect
    t = np.array([day0 + h * HOUR for h in range(14 * 24)], dtype=np.float64)
    eff = calendar_effect(sc, t)
    hour = (t % DAY) // HOUR
    assert np.median(eff[hour == 20]) > np.median(eff[hour == 14])
    payday = np.datetime64("2023-12-01").astype("datetime64[ms]").astype(np.int64)
    assert calendar_effect(sc, np.array([payday + 14 * HOUR], dtype=np.float64))[0] == pytest.approx(
        1.4 * calendar_effect(sc, np.array([payday + 7 * DAY + 14 * HOUR], dtype=np.float64))[0])


def test_weekly_scenario_places_one_anomaly_a_day_after_a_week_on_the_bucket_grid() -> None:
    day0 = START // DAY * DAY
    sc = scenario("weekly", start_ms=day0, duration_ms=42 * DAY, rate_eps=30, seed=4, products=200)
    rows = truth(sc)
    assert len(rows) == 35  # days 8..42
    assert all(r["start_ms"] >= day0 + 7 * DAY and r["start_ms"] % (5 * MIN) == 0 for r in rows)
    assert {r["kind"] for r in rows} == {"demand_surge", "demand_drop"}
    for a, b in itertools.pairwise(rows):
        assert b["start_ms"] - a["start_ms"] < 2 * DAY
    by_product: dict[str, list[int]] = collections.defaultdict(list)
    for r in rows:
        by_product[r["product_id"]].append(r["start_ms"])
    for starts in by_product.values():
        assert all(b - a >= 3 * DAY - 2 * HOUR for a, b in itertools.pairwise(sorted(starts)))
