"""Seeded, reproducible shop traffic: scenarios with injected anomalies, the events, and the ground truth.

Pure: no I/O and no wall clock, so the same ``(scenario, seed)`` gives byte-identical events anywhere.
Sending them to Kafka is :mod:`streamproc.loadgen`'s job; the shop model itself is in
:mod:`streamproc.traffic`.

    sc = scenario("surges", start_ms=t0, duration_ms=3 * 3_600_000, rate_eps=500, seed=7)
    for topic, key, value, ts_ms in events(sc, seed=7): ...
    truth(sc)  # [{"product_id", "kind", "start_ms", "end_ms", "category", ...}, ...]

``rate_eps`` is the mean of the *baseline* traffic over the scenario (clicks + orders + reviews per
second of event time, following a daily cycle); anomalies add (surges) or remove (drops) traffic on
top of it. Anomaly windows are aligned to whole minutes of event time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import orjson

from streamproc.errors import ConfigError
from streamproc.traffic import (
    ALL_PRODUCTS,
    KIND_ORDER,
    KIND_REVIEW,
    KIND_VIEW,
    REVIEW_TEXTS,
    REVIEW_TITLES,
    Catalog,
    Simulation,
    baseline_per_minute,
    catalog,
)

__all__ = [
    "Anomaly", "Scenario", "SCENARIO_NAMES", "ALL_PRODUCTS", "DEMO_WARMUP_MS", "ANOMALY_KINDS",
    "scenario", "events", "truth", "catalog_of", "Event",
]

Event = tuple[str, bytes, bytes, int]
"""``(topic, key, value, ts_ms)``: logical topic name, product id, JSON bytes, event time."""

MINUTE_MS = 60_000
SCENARIO_NAMES = ("steady", "surges", "demo", "negative-reviews", "sale", "weekly")
ANOMALY_KINDS = ("demand_surge", "demand_drop", "negative_review_spike", "review_volume_spike")
DEMO_WARMUP_MS = 30 * MINUTE_MS
"""Event time before the demo's live part: history the detectors warm up on."""
_DEMO_CYCLE_MS = 40 * MINUTE_MS
_MIN_ANOMALY_MS = 5 * MINUTE_MS


@dataclass(frozen=True)
class Anomaly:
    """A change injected into one product's traffic (or every product's, with ``product_id="*"``)."""

    product_id: str
    kind: str
    """``demand_surge``, ``demand_drop``, ``negative_review_spike``, or ``review_volume_spike`` (a decoy:
    more reviews with the usual sentiment, which should *not* raise an alert)."""
    start_ms: int
    end_ms: int
    """Exclusive."""
    factor: float
    """Multiplier on the product's rate: views and orders for surges (e.g. 8.0) and drops (0.0: no orders,
    and views fall to 15%); review volume for the review kinds."""


@dataclass(frozen=True)
class Scenario:
    """Everything that shapes a run of traffic except the random seed."""

    name: str
    products: int
    categories: int
    start_ms: int
    duration_ms: int
    rate_eps: float
    """Mean baseline events per second of event time (clicks + orders + reviews) over the scenario."""
    anomalies: tuple[Anomaly, ...]
    zipf_s: float = 1.1
    """Exponent of the Zipf law of product popularity."""
    daily_amplitude: float = 0.5
    """Relative amplitude of the daily cycle (0 = flat)."""
    review_share: float = 0.02
    """Share of reviews among all events."""
    peak_hour_utc: float = 20.0
    """Hour of day (UTC, event time) of peak traffic."""
    users: int = 100_000
    """Number of distinct shoppers."""
    weekly: bool = False
    """Add the weekly calendar: day-of-week and evening effects, a payday bump, a holiday-like dip
    (:func:`streamproc.traffic.calendar_effect`). These are rhythm, not anomalies: no truth rows."""

    @property
    def end_ms(self) -> int:
        """End of the scenario's event time (exclusive)."""
        return self.start_ms + self.duration_ms


def catalog_of(sc: Scenario) -> Catalog:
    """The scenario's product catalogue (ids, categories, prices, popularity)."""
    return catalog(sc.products, sc.categories, sc.zipf_s)


# --- scenarios ---------------------------------------------------------------------------------------

def scenario(
    name: str, *, start_ms: int, duration_ms: int, rate_eps: float, seed: int,
    products: int | None = None, warmup_ms: int | None = None,
) -> Scenario:
    """A named scenario with anomalies placed (reproducibly for ``seed``) where a detector can see them.

    ``steady``: no anomalies. ``surges``: surges (x8-x12 on products with >= 1 order/min) and drops
    (to zero orders, on products with >= 3 orders/min), 10-20 min each, one after another after a
    warm-up of a third of the duration. ``negative-reviews``: mostly-negative review bursts on a few
    products (one at the usual volume, others x2.5-x3) and one volume-only decoy. ``sale``: every
    product x5 for 30-60 min. ``demo``: after ``warmup_ms`` (default 30 min) of history, a x10 surge
    on a top-5 product 3 min into the live part, a negative-review spike at +6 min and a drop at
    +24 min, repeating every 40 min. ``weekly`` (meant for weeks: 6 weeks, 200 products): the weekly
    calendar on top of the daily cycle, and after a first week one surge (x8-x12, 20-60 min) or drop
    (to zero orders, 30-90 min) a day at a random hour (weekends, evenings and paydays included),
    each on a product not used in the previous 3 days. For the other scenarios ``warmup_ms`` only lengthens the
    warm-up beyond a third of the duration.
    """
    if name not in SCENARIO_NAMES:
        raise ConfigError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIO_NAMES)}")
    if duration_ms <= 0 or rate_eps <= 0:
        raise ConfigError(f"duration and rate must be positive, got {duration_ms} ms and {rate_eps} events/s")
    n_products = products if products is not None else (200 if name == "demo" else 1000)
    if n_products < 1:
        raise ConfigError(f"products must be >= 1, got {n_products}")
    base = Scenario(
        name=name, products=n_products, categories=min(12, n_products), start_ms=start_ms,
        duration_ms=duration_ms, rate_eps=float(rate_eps), anomalies=(), weekly=name == "weekly",
    )
    rng = np.random.default_rng([seed, 0x5CE7A])
    warmup = warmup_ms if warmup_ms is not None else (DEMO_WARMUP_MS if name == "demo" else 0)
    placed = _PLANNERS[name](base, rng, warmup)
    return dataclasses.replace(base, anomalies=tuple(sorted(placed, key=lambda a: (a.start_ms, a.product_id))))


def _ceil_minute(t_ms: int) -> int:
    return -(-t_ms // MINUTE_MS) * MINUTE_MS


def _windows(sc: Scenario, rng: np.random.Generator, count: int, warmup_ms: int,
             lengths_min: tuple[int, int] = (10, 20)) -> list[tuple[int, int]]:
    """Up to ``count`` minute-aligned windows one after another, after the warm-up, 5-15 min apart."""
    tail = min(5 * MINUTE_MS, sc.duration_ms // 10)
    cursor = _ceil_minute(sc.start_ms + max(warmup_ms, sc.duration_ms // 3))
    out: list[tuple[int, int]] = []
    for _ in range(count):
        length = int(rng.integers(lengths_min[0], lengths_min[1] + 1)) * MINUTE_MS
        length = min(length, (sc.end_ms - tail - cursor) // MINUTE_MS * MINUTE_MS)
        if length < _MIN_ANOMALY_MS:
            break
        out.append((cursor, cursor + length))
        cursor += length + int(rng.integers(5, 16)) * MINUTE_MS
    return out


def _pick(rng: np.random.Generator, cat: Catalog, rate: np.ndarray, *, at_least: float, among: int,
          used: set[str]) -> str:
    """A product not yet used, among the ``among`` most popular ones with ``rate >= at_least``."""
    ranked = [int(i) for i in cat.ranks if cat.product_ids[i] not in used]
    pool = [i for i in ranked if rate[i] >= at_least][:among] or ranked[: max(1, among // 3)]
    chosen = cat.product_ids[pool[int(rng.integers(len(pool)))]]
    used.add(chosen)
    return chosen


def _plan_steady(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    return []


def _plan_surges(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    _, orders, _ = baseline_per_minute(sc)
    cat, used = catalog_of(sc), set[str]()
    kinds = ["demand_surge", "demand_drop", "demand_surge", "demand_surge", "demand_drop"]
    out = []
    for kind, (start, end) in zip(kinds, _windows(sc, rng, len(kinds), warmup_ms), strict=False):
        if kind == "demand_surge":
            pid = _pick(rng, cat, orders, at_least=1.0, among=30, used=used)
            factor = float(rng.choice([8.0, 10.0, 12.0]))
        else:
            pid, factor = _pick(rng, cat, orders, at_least=3.0, among=10, used=used), 0.0
        out.append(Anomaly(pid, kind, start, end, factor))
    return out


def _plan_negative_reviews(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    _, _, reviews = baseline_per_minute(sc)
    cat, used = catalog_of(sc), set[str]()
    plan = [("negative_review_spike", 2.5), ("review_volume_spike", 3.0), ("negative_review_spike", 1.0),
            ("negative_review_spike", 3.0)]
    return [
        Anomaly(_pick(rng, cat, reviews, at_least=1.0, among=15, used=used), kind, start, end, factor)
        for (kind, factor), (start, end) in zip(plan, _windows(sc, rng, len(plan), warmup_ms, (12, 20)), strict=False)
    ]


def _plan_sale(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    return [Anomaly(ALL_PRODUCTS, "demand_surge", s, e, 5.0) for s, e in _windows(sc, rng, 1, warmup_ms, (30, 60))]


def _plan_demo(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    cat = catalog_of(sc)
    top = [cat.product_ids[i] for i in cat.ranks[:8].tolist()]
    out: list[Anomaly] = []
    cycle = _ceil_minute(sc.start_ms + warmup_ms)
    while cycle < sc.end_ms:
        surge, neg, drop = (str(p) for p in rng.permutation(top[:5])[:3])
        for pid, kind, offset_min, length_min, factor in (
            (surge, "demand_surge", 3, 12, 10.0),
            (neg, "negative_review_spike", 6, 15, 2.5),
            (drop, "demand_drop", 24, 12, 0.0),
        ):
            start = cycle + offset_min * MINUTE_MS
            end = min(start + length_min * MINUTE_MS, (sc.end_ms - MINUTE_MS) // MINUTE_MS * MINUTE_MS)
            if end - start >= 3 * MINUTE_MS:
                out.append(Anomaly(pid, kind, start, end, factor))
        cycle += _DEMO_CYCLE_MS
    return out


def _plan_weekly(sc: Scenario, rng: np.random.Generator, warmup_ms: int) -> list[Anomaly]:
    _, orders, _ = baseline_per_minute(sc)
    cat = catalog_of(sc)
    day_ms = 24 * 60 * MINUTE_MS
    recent: list[set[str]] = []
    out = []
    day = _ceil_minute(sc.start_ms + max(warmup_ms, 7 * day_ms)) // day_ms * day_ms
    while day + day_ms <= sc.end_ms:
        used = set().union(*recent[-3:]) if recent else set()
        surge = bool(rng.random() < 0.6)
        length = int(rng.integers(20, 61) if surge else rng.integers(30, 91)) * MINUTE_MS
        start = day + int(rng.integers(0, (24 * 60 - 90) // 5)) * 5 * MINUTE_MS  # on the 5-minute bucket grid
        if surge:
            pid = _pick(rng, cat, orders, at_least=0.1, among=40, used=used)
            out.append(Anomaly(pid, "demand_surge", start, start + length, float(rng.choice([8.0, 10.0, 12.0]))))
        else:
            pid = _pick(rng, cat, orders, at_least=0.5, among=15, used=used)
            out.append(Anomaly(pid, "demand_drop", start, start + length, 0.0))
        recent.append({pid})
        day += day_ms
    return out


_PLANNERS: dict[str, Callable[[Scenario, np.random.Generator, int], list[Anomaly]]] = {
    "steady": _plan_steady,
    "surges": _plan_surges,
    "negative-reviews": _plan_negative_reviews,
    "sale": _plan_sale,
    "demo": _plan_demo,
    "weekly": _plan_weekly,
}


def truth(sc: Scenario) -> list[dict[str, object]]:
    """Ground truth, one row per anomaly in start order.

    Rows: ``product_id`` (``"*"`` = every product), ``kind``, ``start_ms``, ``end_ms`` (exclusive),
    ``category`` (``"*"`` for every product), ``factor``, and ``expect_alert`` (false for the
    ``review_volume_spike`` decoy, which a good detector stays quiet about).
    """
    cat = catalog_of(sc)
    return [
        {
            "product_id": a.product_id,
            "kind": a.kind,
            "start_ms": a.start_ms,
            "end_ms": a.end_ms,
            "category": ALL_PRODUCTS if a.product_id == ALL_PRODUCTS else cat.categories[cat.index(a.product_id)],
            "factor": a.factor,
            "expect_alert": a.kind != "review_volume_spike",
        }
        for a in sorted(sc.anomalies, key=lambda a: (a.start_ms, a.product_id))
    ]


# --- events ------------------------------------------------------------------------------------------

def events(sc: Scenario, seed: int) -> Iterator[Event]:
    """The scenario's events as ``(topic, key, value, ts_ms)``, in non-decreasing ``ts_ms`` order.

    ``topic`` is the logical input topic (``clicks``, ``orders``, ``reviews``); ``key`` the UTF-8
    product id (for orders, that of the first item); ``value`` the JSON event of the contract. IDs are
    unique within a run and carry the seed (``c<seed>-<n>``, ``o<seed>-<n>``, ``r<seed>-<n>``).
    """
    sim = Simulation(sc, seed)
    cat = sim.catalog
    pids, cats, prices = cat.product_ids, cat.categories, cat.prices
    keys = [p.encode() for p in pids]
    items_of = sim.order_items
    # orjson's result keeps its oversized allocation (about 4 KiB) alive; copying it into an exact-size
    # bytes object keeps memory flat for callers that hold many events (and is faster for them too).
    def dumps(obj: dict[str, object], _dumps: Callable[[object], bytes] = orjson.dumps) -> bytes:
        return bytes(memoryview(_dumps(obj)))

    click_pre, order_pre, review_pre, session_pre = f"c{seed}-", f"o{seed}-", f"r{seed}-", f"s{seed}-"
    n_click = n_order = n_review = 0
    for block in sim.chunks():
        for ts, kind, p, user, a, b, c in zip(*block.tolist(), strict=True):
            if kind < KIND_ORDER:
                n_click += 1
                value = dumps({
                    "event_id": f"{click_pre}{n_click}", "ts": ts, "user_id": f"U{user:06d}",
                    "session_id": f"{session_pre}{a}", "product_id": pids[p], "category": cats[p],
                    "action": "view" if kind == KIND_VIEW else "add_to_cart",
                })
                yield "clicks", keys[p], value, ts
            elif kind == KIND_REVIEW:
                n_review += 1
                text, lang = REVIEW_TEXTS[b]
                value = dumps({
                    "review_id": f"{review_pre}{n_review}", "ts": ts, "user_id": f"U{user:06d}",
                    "product_id": pids[p], "rating": a, "title": REVIEW_TITLES[c], "text": text, "lang": lang,
                })
                yield "reviews", keys[p], value, ts
            else:
                n_order += 1
                items = [
                    {"product_id": pids[q], "quantity": n, "unit_price": prices[q], "category": cats[q]}
                    for q, n in items_of.pop(a)
                ]
                value = dumps({
                    "order_id": f"{order_pre}{n_order}", "ts": ts, "user_id": f"U{user:06d}",
                    "items": items, "currency": "EUR",
                })
                yield "orders", keys[p], value, ts
