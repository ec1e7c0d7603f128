"""The shop model behind the traffic generator: catalogue, sessions and reviews, sampled with numpy.

Pure and seeded: no I/O, no wall clock. :class:`Simulation` walks event time in chunks that divide a
minute. Per chunk it draws shopping sessions (views, add-to-carts, an order for some) and reviews in
vectorised form, and yields the events whose ``ts`` falls in the chunk as rows of one int64 array,
sorted by ``ts``; events of sessions that run past the chunk are carried over to later chunks.

Rows (see ``ROW_*``): ts, kind, product index, user number, then ``a, b, c`` whose meaning depends on
the kind: clicks ``a`` = session number; orders ``a`` = order number (its items are in
``Simulation.order_items``); reviews ``a`` = rating, ``b`` = index into :data:`REVIEW_TEXTS`,
``c`` = index into :data:`REVIEW_TITLES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from streamproc.review_texts import LANGS, SENTIMENTS, TEXTS, TITLES

if TYPE_CHECKING:
    from streamproc.generator import Anomaly, Scenario

__all__ = [
    "CATEGORIES", "ALL_PRODUCTS", "Catalog", "catalog", "Simulation", "baseline_per_minute", "shape_at",
    "calendar_effect",
    "REVIEW_TEXTS", "REVIEW_TITLES", "KIND_VIEW", "KIND_CART", "KIND_ORDER", "KIND_REVIEW",
]

CATEGORIES = (
    "electronics", "fashion", "shoes", "home", "kitchen", "beauty", "books", "toys", "sports", "garden",
    "grocery", "health", "automotive", "pet-supplies", "office", "jewelry", "music", "baby", "outdoor",
    "video-games",
)
"""Category names; a scenario with ``categories=n`` uses the first n."""

_MEDIAN_PRICE_EUR = (180, 35, 70, 45, 30, 18, 14, 22, 40, 28, 6, 15, 55, 20, 12, 90, 16, 25, 60, 50)

ALL_PRODUCTS = "*"
"""``Anomaly.product_id`` for a site-wide anomaly (every product)."""

KIND_VIEW, KIND_CART, KIND_ORDER, KIND_REVIEW = 0, 1, 2, 3
ROW_TS, ROW_KIND, ROW_PRODUCT, ROW_USER, ROW_A, ROW_B, ROW_C = range(7)

# Session model (per session: views, each view may be carted, carted sessions may check out).
MEAN_VIEWS = 3.0
VIEW_GAP_MS = 25_000.0
P_CART = 0.08
CART_DELAY_MS = (3_000, 40_000)
P_CHECKOUT = 0.35
ORDER_DELAY_MS = (15_000, 120_000)
EXTRA_ITEMS_P = (0.94, 0.045, 0.015)  # 0, 1 or 2 cross-sell items added at checkout
QUANTITY_P = (0.86, 0.10, 0.04)  # quantity 1, 2, 3
DROP_VIEW_FLOOR = 0.15  # a dropped product still gets this share of its views (but no carts/orders)
ZH_SHARE = 0.3
PRE_ROLL_MS = 5 * 60_000  # simulate this long before the start, so sessions are in full swing at t=start
_TARGET_EVENTS_PER_CHUNK = 50_000
_CHUNK_SECONDS = (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60)

# Star-rating distributions (1..5): good product, mediocre product, product under a negative spike.
_RATING_P = np.array([
    [0.03, 0.04, 0.10, 0.30, 0.53],
    [0.10, 0.10, 0.20, 0.30, 0.30],
    [0.55, 0.25, 0.10, 0.05, 0.05],
])
_RATING_CUM = np.cumsum(_RATING_P, axis=1)
_RATING_CUM[:, -1] = 1.0
_SENTIMENT_OF_RATING = np.array([0, 0, 0, 1, 2, 2])  # index by rating 1..5

_POOLS = [(s, lang) for s in SENTIMENTS for lang in LANGS]  # pool = sentiment * 2 + lang
REVIEW_TEXTS: tuple[tuple[str, str], ...] = tuple((t, lang) for s, lang in _POOLS for t in TEXTS[s, lang])
"""Flat list of ``(text, lang)``; review rows index into it."""
REVIEW_TITLES: tuple[str, ...] = tuple(t for key in _POOLS for t in TITLES[key])
"""Flat list of titles; review rows index into it."""
_TEXT_LEN = np.array([len(TEXTS[k]) for k in _POOLS])
_TEXT_OFF = np.concatenate([[0], np.cumsum(_TEXT_LEN)[:-1]])
_TITLE_LEN = np.array([len(TITLES[k]) for k in _POOLS])
_TITLE_OFF = np.concatenate([[0], np.cumsum(_TITLE_LEN)[:-1]])


@dataclass(frozen=True, eq=False)
class Catalog:
    """The shop's products. The same for every seed: it depends only on the sizes and the Zipf exponent."""

    product_ids: tuple[str, ...]
    """``P00001`` ... in index order."""
    categories: tuple[str, ...]
    """Category of each product."""
    prices: tuple[float, ...]
    """Unit price in EUR of each product."""
    popularity: np.ndarray
    """Share of views of each product (Zipf over a fixed shuffle of the products; sums to 1)."""
    ranks: np.ndarray
    """Product indices, most popular first."""
    quality: np.ndarray
    """0 for a well-rated product, 1 for a mediocre one (shapes its star ratings)."""

    def index(self, product_id: str) -> int:
        """The index of a product id; ``KeyError`` for an unknown one."""
        return _index_of(self.product_ids)[product_id]


@cache
def _index_of(product_ids: tuple[str, ...]) -> dict[str, int]:
    return {p: i for i, p in enumerate(product_ids)}


@cache
def catalog(products: int, categories: int, zipf_s: float) -> Catalog:
    """The deterministic catalogue of ``products`` products in the first ``categories`` categories."""
    if not 1 <= categories <= len(CATEGORIES):
        raise ValueError(f"categories must be between 1 and {len(CATEGORIES)}, got {categories}")
    if products < 1:
        raise ValueError(f"products must be >= 1, got {products}")
    rng = np.random.default_rng([products, categories, 0xCA7A])
    cat_idx = rng.permutation(np.arange(products) % categories)
    median = np.array(_MEDIAN_PRICE_EUR)[cat_idx]
    prices = np.maximum(np.floor(median * rng.lognormal(0.0, 0.5, products)), 0.0) + 0.99
    ranks = rng.permutation(products)
    popularity = np.empty(products)
    popularity[ranks] = 1.0 / np.arange(1, products + 1) ** zipf_s
    popularity /= popularity.sum()
    quality = (rng.random(products) < 0.15).astype(np.int64)
    for shared in (popularity, ranks, quality):
        shared.setflags(write=False)  # the catalogue is cached and shared
    return Catalog(
        product_ids=tuple(f"P{i:05d}" for i in range(1, products + 1)),
        categories=tuple(CATEGORIES[c] for c in cat_idx.tolist()),
        prices=tuple(round(p, 2) for p in prices.tolist()),
        popularity=popularity,
        ranks=ranks,
        quality=quality,
    )


def _events_per_session() -> float:
    """Expected clicks + orders of one session under the base model."""
    q, x = 1.0 / MEAN_VIEWS, 1.0 - P_CART
    p_no_cart = q * x / (1.0 - (1.0 - q) * x)  # E[x**k] for k ~ Geometric(q) on 1, 2, ...
    return MEAN_VIEWS * (1.0 + P_CART) + P_CHECKOUT * (1.0 - p_no_cart)


def _daily_shape(sc: Scenario, t_ms: np.ndarray) -> np.ndarray:
    """Rate multiplier at event times ``t_ms``, mean 1 over the scenario: a sinusoid on hour of day, times
    the weekly calendar (:func:`calendar_effect`) when the scenario has one."""
    omega = 2.0 * np.pi / 86_400_000.0
    phase = 2.0 * np.pi * sc.peak_hour_utc / 24.0
    if sc.weekly:
        return np.asarray((1.0 + sc.daily_amplitude * np.cos(omega * t_ms - phase)) * calendar_effect(sc, t_ms)
                          / _calendar_mean(sc))
    a0, a1 = omega * sc.start_ms - phase, omega * (sc.start_ms + max(sc.duration_ms, 1)) - phase
    mean_cos = (np.sin(a1) - np.sin(a0)) / (a1 - a0)
    shape: np.ndarray = (1.0 + sc.daily_amplitude * np.cos(omega * t_ms - phase)) / (
        1.0 + sc.daily_amplitude * mean_cos)
    return shape


WEEKDAY_FACTOR = (1.0, 1.1, 1.3, 1.2, 0.9, 0.9, 0.95)
"""Traffic by UTC day of week, Thursday first (1970-01-01 was a Thursday): busy weekends, quiet Mon/Tue."""
EVENING_FACTOR = 1.3
"""Extra evening traffic, 18:00-22:00 UTC, on top of the daily sinusoid."""
PAYDAY_FACTOR = 1.4
"""All-day bump on the 1st and the 15th of the month (UTC)."""
HOLIDAY_FACTOR = 0.6
"""A holiday-like dip: the whole of the scenario's 30th day (if it has one)."""


def calendar_effect(sc: Scenario, t_ms: np.ndarray) -> np.ndarray:
    """The weekly scenario's calendar multiplier (day of week, evening, payday, holiday) at ``t_ms``."""
    t = np.asarray(t_ms, dtype=np.float64)
    day = np.floor(t / 86_400_000.0).astype(np.int64)
    hour = (t % 86_400_000.0) / 3_600_000.0
    out = np.asarray(WEEKDAY_FACTOR)[day % 7]
    out = out * np.where((hour >= 18.0) & (hour < 22.0), EVENING_FACTOR, 1.0)
    dates = day.astype("datetime64[D]")
    dom = (dates - dates.astype("datetime64[M]")).astype(np.int64) + 1
    out = out * np.where((dom == 1) | (dom == 15), PAYDAY_FACTOR, 1.0)
    holiday = sc.start_ms // 86_400_000 + 29
    return np.asarray(out * np.where(day == holiday, HOLIDAY_FACTOR, 1.0))


@cache
def _calendar_mean(sc: Scenario) -> float:
    omega = 2.0 * np.pi / 86_400_000.0
    phase = 2.0 * np.pi * sc.peak_hour_utc / 24.0
    t = np.arange(sc.start_ms, sc.start_ms + max(sc.duration_ms, 1), 60_000, dtype=np.float64)
    return float(np.mean((1.0 + sc.daily_amplitude * np.cos(omega * t - phase)) * calendar_effect(sc, t)))


def shape_at(sc: Scenario, t_ms: np.ndarray) -> np.ndarray:
    """The scenario's traffic multiplier at ``t_ms`` (mean 1 over the scenario)."""
    return _daily_shape(sc, np.asarray(t_ms, dtype=np.float64))


def baseline_per_minute(sc: Scenario) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-product (views, orders, reviews) per minute without anomalies, at the scenario's quietest hour."""
    cat = catalog(sc.products, sc.categories, sc.zipf_s)
    minutes = np.arange(sc.start_ms, sc.start_ms + sc.duration_ms, 60_000, dtype=np.float64)
    trough = float(_daily_shape(sc, minutes).min()) if minutes.size else 1.0
    sessions = sc.rate_eps * (1.0 - sc.review_share) / _events_per_session()
    views = sessions * MEAN_VIEWS * cat.popularity * 60.0 * trough
    orders = views * P_CART * P_CHECKOUT
    reviews = sc.rate_eps * sc.review_share * cat.popularity * 60.0 * trough
    return views, orders, reviews


class _ReviewMix:
    """Review sampling tables for one set of active review anomalies."""

    def __init__(self, cat: Catalog, active: list[tuple[Anomaly, int]]) -> None:
        volume = np.ones(len(cat.product_ids))
        negative = np.zeros(len(cat.product_ids), dtype=bool)
        for a, p in active:
            idx: slice | int = slice(None) if p < 0 else p
            volume[idx] *= a.factor
            negative[idx] |= a.kind == "negative_review_spike"
        weights = cat.popularity * volume
        self.cdf = _cdf(weights)
        self.weight = float(weights.sum())
        self.rating_class = np.where(negative, 2, cat.quality)


def _cdf(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    cdf = np.cumsum(weights / total) if total > 0 else np.linspace(0, 1, weights.size + 1)[1:]
    cdf[-1] = 1.0
    return cdf


def _chunk_ms(rate_eps: float) -> int:
    want = _TARGET_EVENTS_PER_CHUNK / max(rate_eps, 1e-9)
    return 1000 * max([s for s in _CHUNK_SECONDS if s <= want], default=1)


def _live(a: Anomaly, ts: np.ndarray) -> np.ndarray:
    return (ts >= a.start_ms) & (ts < a.end_ms)


class Simulation:
    """One seeded run of a scenario; iterate :meth:`chunks` once.

    Anomalies act at event time. A site-wide surge multiplies the session rate; a product surge adds
    single-view sessions on that product; a drop thins the product's views to ``max(factor, 15%)``,
    removes its add-to-carts, and (factor 0) takes it out of orders placed during the window; review
    anomalies reweight the reviews drawn in each second.
    """

    def __init__(self, sc: Scenario, seed: int) -> None:
        self.sc = sc
        self.catalog = cat = catalog(sc.products, sc.categories, sc.zipf_s)
        self.rng = np.random.default_rng(seed)
        self.chunk_ms = _chunk_ms(sc.rate_eps)
        self.order_items: dict[int, list[tuple[int, int]]] = {}
        """Order number -> [(product index, quantity)], first item first; pop them as orders are emitted."""
        self._anomalies = [(a, self._product_index(a)) for a in sc.anomalies]
        self._view_cdf = _cdf(cat.popularity)
        self._sessions_per_s = sc.rate_eps * (1.0 - sc.review_share) / _events_per_session()
        self._reviews_per_s = sc.rate_eps * sc.review_share
        self._next_session = 0
        self._next_order = 0
        self._review_mixes: dict[tuple[int, ...], _ReviewMix] = {}

    def _product_index(self, a: Anomaly) -> int:
        if a.kind not in ("demand_surge", "demand_drop", "negative_review_spike", "review_volume_spike"):
            raise ValueError(f"unknown anomaly kind {a.kind!r}")
        if (a.kind == "demand_drop" and not 0 <= a.factor <= 1) or a.factor < 0 or (
                a.kind == "demand_surge" and a.factor < 1):
            raise ValueError(f"factor {a.factor} does not fit a {a.kind}")
        if a.product_id == ALL_PRODUCTS:
            return -1
        if a.product_id not in _index_of(self.catalog.product_ids):
            raise ValueError(f"anomaly on unknown product {a.product_id!r}")
        return self.catalog.index(a.product_id)

    def chunks(self) -> Iterator[np.ndarray]:
        """Yield ``(7, n)`` int64 arrays of events sorted by ts, covering [start_ms, start_ms + duration_ms)."""
        sc, step = self.sc, self.chunk_ms
        end = sc.start_ms + sc.duration_ms
        carry = np.empty((7, 0), dtype=np.int64)
        t = (sc.start_ms - PRE_ROLL_MS) // step * step
        while t < end:
            fresh = self._chunk(t, step)
            # Events outside the scenario are never emitted: dropped here, the pre-roll's own events do not
            # ride along in the carry (at 50k events/s it held millions of rows, copied at every step).
            outside = (fresh[ROW_TS] >= end) | (fresh[ROW_TS] < sc.start_ms)
            self._forget_orders(fresh[:, outside])
            rows = np.concatenate([carry, fresh[:, ~outside]], axis=1)
            due = rows[ROW_TS] < t + step
            carry = rows[:, ~due]
            out = rows[:, due]
            if out.shape[1]:
                yield out[:, np.argsort(out[ROW_TS], kind="stable")]
            t += step

    def _forget_orders(self, rows: np.ndarray) -> None:
        """Drop the items of orders that fall outside the scenario and will never be emitted."""
        for gid in rows[ROW_A, rows[ROW_KIND] == KIND_ORDER].tolist():
            del self.order_items[gid]

    def _chunk(self, t0: int, step: int) -> np.ndarray:
        secs = np.arange(t0, t0 + step, 1000, dtype=np.int64)
        shape = _daily_shape(self.sc, secs.astype(np.float64))
        # Drops that may touch events of sessions starting now (sessions last minutes, not hours).
        drops = [(a, p) for a, p in self._anomalies
                 if a.kind == "demand_drop" and a.end_ms > t0 and a.start_ms < t0 + step + 7_200_000]
        rate = shape * self._sessions_per_s
        for a, p in self._anomalies:
            if a.kind == "demand_surge" and p < 0:
                rate = np.where(_live(a, secs), rate * a.factor, rate)
        parts = [self._sessions(secs, rate, None, drops)]
        for a, p in self._anomalies:
            if a.kind == "demand_surge" and p >= 0 and a.start_ms < t0 + step and a.end_ms > t0:
                extra = np.where(_live(a, secs), rate * MEAN_VIEWS * self.catalog.popularity[p] * (a.factor - 1), 0.0)
                parts.append(self._sessions(secs, extra, p, drops))
        parts.append(self._reviews(secs, shape))
        return np.concatenate(parts, axis=1)

    def _thin(self, ts: np.ndarray, prod: np.ndarray, drops: list[tuple[Anomaly, int]], views: bool) -> np.ndarray:
        """Which events survive the drops: views with ``max(factor, floor)``, carts with the rest."""
        keep = np.ones(ts.size, dtype=bool)
        for a, p in drops:
            hit = _live(a, ts) if p < 0 else _live(a, ts) & (prod == p)
            floor = max(a.factor, DROP_VIEW_FLOOR)
            chance = floor if views else a.factor / floor
            keep[hit] &= self.rng.random(int(hit.sum())) < chance
        return keep

    def _sessions(self, secs: np.ndarray, rate: np.ndarray, product: int | None,
                  drops: list[tuple[Anomaly, int]]) -> np.ndarray:
        """Sessions starting in ``secs`` at ``rate`` per second: browsing ones, or one view of ``product``."""
        rng = self.rng
        per_sec = rng.poisson(rate)
        n = int(per_sec.sum())
        start = np.repeat(secs, per_sec) + rng.integers(0, 1000, n)
        users = rng.integers(0, self.sc.users, n)
        sess_id = self._next_session + np.arange(n, dtype=np.int64)
        self._next_session += n
        k = rng.geometric(1.0 / MEAN_VIEWS, n) if product is None else np.ones(n, dtype=np.int64)
        first = np.cumsum(k) - k
        gaps = rng.exponential(VIEW_GAP_MS, int(k.sum()))
        gaps[first] = 0.0
        elapsed = np.cumsum(gaps)
        v_sess = np.repeat(np.arange(n), k)
        v_ts = start[v_sess] + (elapsed - np.repeat(elapsed[first], k)).astype(np.int64)
        v_prod = self._sample(self._view_cdf, v_ts.size) if product is None else np.full(v_ts.size, product)
        if drops:
            kept = self._thin(v_ts, v_prod, drops, views=True)
            v_ts, v_sess, v_prod = v_ts[kept], v_sess[kept], v_prod[kept]
        views = _rows(v_ts, KIND_VIEW, v_prod, users[v_sess], sess_id[v_sess])

        ci = np.flatnonzero(rng.random(v_ts.size) < P_CART)
        c_ts = v_ts[ci] + rng.integers(*CART_DELAY_MS, ci.size)
        c_sess, c_prod = v_sess[ci], v_prod[ci]
        if drops:
            kept = self._thin(c_ts, c_prod, drops, views=False)
            c_ts, c_sess, c_prod = c_ts[kept], c_sess[kept], c_prod[kept]
        carts = _rows(c_ts, KIND_CART, c_prod, users[c_sess], sess_id[c_sess])
        orders = self._orders(c_ts, c_sess, c_prod, users, drops)
        return np.concatenate([views, carts, orders], axis=1)

    def _orders(self, c_ts: np.ndarray, c_sess: np.ndarray, c_prod: np.ndarray, users: np.ndarray,
                drops: list[tuple[Anomaly, int]]) -> np.ndarray:
        """Check out some carted sessions; items are the carted products plus a few cross-sells."""
        rng = self.rng
        if c_ts.size == 0:
            return np.empty((7, 0), dtype=np.int64)
        bounds = np.flatnonzero(np.r_[True, c_sess[1:] != c_sess[:-1]])
        ends = np.r_[bounds[1:], c_ts.size]
        last_ts = np.maximum.reduceat(c_ts, bounds)
        chosen = np.flatnonzero(rng.random(bounds.size) < P_CHECKOUT)
        o_ts = last_ts[chosen] + rng.integers(*ORDER_DELAY_MS, chosen.size)
        qty = (rng.random(c_ts.size)[:, None] > np.cumsum(QUANTITY_P)[:-1]).sum(axis=1) + 1
        n_extra = rng.choice(len(EXTRA_ITEMS_P), chosen.size, p=EXTRA_ITEMS_P)
        extra = self._sample(self._view_cdf, int(n_extra.sum())).tolist()
        zero_drops = [(a, p) for a, p in drops if a.factor == 0]
        prod_l, qty_l = c_prod.tolist(), qty.tolist()
        placed: list[int] = []
        first_prod: list[int] = []
        e = 0
        spans = zip(bounds[chosen].tolist(), ends[chosen].tolist(), n_extra.tolist(), o_ts.tolist(), strict=True)
        for j, (lo, hi, ne, ts) in enumerate(spans):
            items: dict[int, int] = {}
            for x in range(lo, hi):
                items[prod_l[x]] = items.get(prod_l[x], 0) + qty_l[x]
            for p in extra[e:e + ne]:
                items.setdefault(p, 1)
            e += ne
            for a, p in zero_drops:  # out of stock at checkout time
                if a.start_ms <= ts < a.end_ms:
                    items = {} if p < 0 else {q: n for q, n in items.items() if q != p}
            if items:
                self.order_items[self._next_order] = list(items.items())
                self._next_order += 1
                placed.append(j)
                first_prod.append(next(iter(items)))
        kept = np.array(placed, dtype=np.int64)
        gids = np.arange(self._next_order - kept.size, self._next_order, dtype=np.int64)
        o_users = users[c_sess[bounds[chosen[kept]]]]
        return _rows(o_ts[kept], KIND_ORDER, np.array(first_prod, dtype=np.int64), o_users, gids)

    def _sample(self, cdf: np.ndarray, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(cdf, self.rng.random(size), side="right"), cdf.size - 1)

    def _reviews(self, secs: np.ndarray, shape: np.ndarray) -> np.ndarray:
        rng, t0 = self.rng, int(secs[0])
        active = tuple(i for i, (a, _) in enumerate(self._anomalies)
                       if a.kind in ("negative_review_spike", "review_volume_spike") and a.start_ms <= t0 < a.end_ms)
        if active not in self._review_mixes:
            self._review_mixes[active] = _ReviewMix(self.catalog, [self._anomalies[i] for i in active])
        mix = self._review_mixes[active]
        per_sec = rng.poisson(shape * self._reviews_per_s * mix.weight)
        m = int(per_sec.sum())
        ts = np.repeat(secs, per_sec) + rng.integers(0, 1000, m)
        prod = self._sample(mix.cdf, m)
        rating = (rng.random(m)[:, None] > _RATING_CUM[mix.rating_class[prod]]).sum(axis=1) + 1
        pool = _SENTIMENT_OF_RATING[rating] * 2 + (rng.random(m) < ZH_SHARE)
        text = _TEXT_OFF[pool] + (rng.random(m) * _TEXT_LEN[pool]).astype(np.int64)
        title = _TITLE_OFF[pool] + (rng.random(m) * _TITLE_LEN[pool]).astype(np.int64)
        return _rows(ts, KIND_REVIEW, prod, rng.integers(0, self.sc.users, m), rating, text, title)


def _rows(
    ts: np.ndarray, kind: int, prod: np.ndarray, user: np.ndarray, a: np.ndarray,
    b: np.ndarray | int = 0, c: np.ndarray | int = 0,
) -> np.ndarray:
    out = np.empty((7, ts.size), dtype=np.int64)
    out[ROW_TS], out[ROW_KIND], out[ROW_PRODUCT], out[ROW_USER] = ts, kind, prod, user
    out[ROW_A], out[ROW_B], out[ROW_C] = a, b, c
    return out
