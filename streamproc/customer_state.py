"""What is kept about one customer, how events change it, and the features record read from it.

Pure and clock-free like :mod:`streamproc.demand`: every function takes event time as an argument.
The engine that orders events, runs the timers and raises triggers is :mod:`streamproc.customers`;
this module holds the per-customer half so that each stays small.

Everything here is bounded per customer: the open session tracks at most ``SESSION_PRODUCTS``
products, recent views at most ``SEEN_MAX`` (and only within the interest window), categories at
most ``CATEGORIES_MAX``, orders those of the last 90 days plus the last ``GAPS_KEPT + 1``.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CustomerConfig", "CustomerState", "Pending", "apply_click", "apply_order", "usual_gap_ms",
    "build_features", "MINUTE_MS", "HOUR_MS", "DAY_MS",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
SESSION_PRODUCTS = 64
SEEN_MAX = 50
CATEGORIES_MAX = 16
BOUGHT_MAX = 50
GAPS_KEPT = 10
WEIGHT_VIEW, WEIGHT_CART, WEIGHT_ORDER_LINE = 1.0, 3.0, 5.0
"""Affinity points per view, add-to-cart and order line of a category."""
VIEWS_SHIFT, CARTED, ORDERED = 2, 2, 1
"""A session product's flags: ``views << 2 | carted << 1 | ordered`` in one small int."""

Pending = tuple[Any, ...]
"""A received record not applied yet: ``(ts_ms, rank, seq, ...)``; rank 0 = click
``(product_id, category, action, session_id)``, rank 1 = order ``(order_id, ((pid, qty, price, cat), ...))``.
Clicks sort before orders of the same millisecond (carting precedes checkout)."""


@dataclass(frozen=True, slots=True)
class CustomerConfig:
    """Episode rules and retention; every duration is event time in milliseconds."""

    session_gap_ms: int = 30 * MINUTE_MS
    """A session ends after this long without a click (or when the click's session_id changes)."""
    cart_abandon_ms: int = HOUR_MS
    """``cart_abandoned`` when no order follows the carting session's last click within this long."""
    browse_min_views: int = 3
    """``browse_abandoned`` when a session views one product this often without carting or buying it."""
    win_back_factor: float = 3.0
    """``win_back`` after this many usual gaps without an order."""
    win_back_min_orders: int = 2
    interest_window_ms: int = 7 * DAY_MS
    """``interest_surging`` for products viewed this recently when their demand surge starts."""
    affinity_half_life_ms: int = 7 * DAY_MS
    retention_ms: int = 90 * DAY_MS
    """A customer inactive this long is forgotten; erasure markers are kept this long."""
    recent_n: int = 10
    top_categories: int = 5
    recommend_n: int = 5
    features_interval_ms: int = MINUTE_MS
    """A changed customer's features record is emitted when the watermark enters a new interval of this much
    event time (not at every tick: a busy shopper would otherwise cost a record per click)."""


@dataclass(slots=True)
class CustomerState:
    """Everything kept about one customer (a few hundred bytes plus the ids it references)."""

    user_id: str
    last_ms: int = 0
    """Event time of the newest record applied: the retention clock."""
    applied_click: int = -1
    applied_order: int = -1
    """Per input stream, the sequence number of the last record received: a replayed record is a no-op."""
    pending: list[Pending] | None = None
    """Records received but not yet reached by the watermark, in (ts, rank, seq) order."""
    s_start: int | None = None
    """Start of the open session (None: no open session)."""
    s_last: int = 0
    s_id: str | None = None
    s_views: int = 0
    s_carts: int = 0
    s_distinct: int = 0
    s_products: dict[str, int] | None = None
    """Products of the open session -> flags (see ``VIEWS_SHIFT``)."""
    cart: dict[str, int] | None = None
    """Units added to the cart minus units ordered, per product."""
    cart_due: int | None = None
    """When the cart counts as abandoned (armed by an add-to-cart, disarmed by any order)."""
    cart_ep: int = 0
    """Start of the session that armed ``cart_due``: the episode."""
    cart_done: int | None = None
    """The episode whose ``cart_abandoned`` has fired: its session does not arm another."""
    seen: dict[str, int] = field(default_factory=dict)
    """Viewed product -> last view time, most recent last."""
    aff: dict[str, float] = field(default_factory=dict)
    """Category -> affinity points, decayed to ``aff_ms``."""
    aff_ms: int = 0
    orders: list[tuple[int, float]] = field(default_factory=list)
    """(time, value) of the orders of the last 90 days, and at least the last ``GAPS_KEPT + 1``."""
    n_orders: int = 0
    spend: float = 0.0
    bought: dict[str, int] | None = None
    """Recently bought product -> time, most recent last."""
    win_done: int | None = None
    """The last-order time whose ``win_back`` has fired (one per lapse)."""
    sources: dict[str, int] | None = None
    """Per input stream the worker read the record from (``clicks/3``), the offset of the last one received:
    a copy forwarded again after the forwarding worker crashed is a no-op (customer_runtime.py)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot."""
        return {k: getattr(self, k) for k in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CustomerState:
        c = cls(**d)
        if c.pending is not None:  # JSON gave lists back: pending records are tuples, order items too
            c.pending = [tuple(p) if p[1] == 0 else (*p[:4], tuple(tuple(i) for i in p[4])) for p in c.pending]
        c.orders = [(int(t), float(v)) for t, v in c.orders]
        return c


def _touch_affinity(c: CustomerState, category: str | None, ts_ms: int, points: float, cfg: CustomerConfig) -> None:
    if ts_ms > c.aff_ms:
        if c.aff:
            k = 0.5 ** ((ts_ms - c.aff_ms) / cfg.affinity_half_life_ms)
            for cat in c.aff:
                c.aff[cat] *= k
        c.aff_ms = ts_ms
    if not category:
        return
    c.aff[category] = c.aff.get(category, 0.0) + points
    if len(c.aff) > CATEGORIES_MAX:
        del c.aff[min(c.aff, key=lambda k: (c.aff[k], k))]


def _remember(d: dict[str, int], key: str, ts_ms: int, cap: int) -> None:
    d.pop(key, None)
    d[key] = ts_ms
    if len(d) > cap:
        del d[next(iter(d))]


def start_session(c: CustomerState, ts_ms: int, session_id: str | None) -> None:
    c.s_start, c.s_last, c.s_id = ts_ms, ts_ms, session_id
    c.s_views = c.s_carts = c.s_distinct = 0
    c.s_products = {}


def end_session(c: CustomerState, cfg: CustomerConfig) -> list[str]:
    """Close the open session; the products it browsed without carting or buying (browse_abandoned)."""
    looped = sorted(p for p, f in (c.s_products or {}).items()
                    if f >> VIEWS_SHIFT >= cfg.browse_min_views and not f & (CARTED | ORDERED))
    c.s_start, c.s_id, c.s_products = None, None, None
    c.s_views = c.s_carts = c.s_distinct = 0
    return looped


def apply_click(c: CustomerState, ts_ms: int, product_id: str, category: str | None, action: str,
                cfg: CustomerConfig) -> None:
    """Count a click into the open session (the caller has ended the previous one where due)."""
    if c.s_start is None:
        start_session(c, ts_ms, None)
    start = c.s_start if c.s_start is not None else ts_ms
    c.s_last = max(c.s_last, ts_ms)
    c.last_ms = max(c.last_ms, ts_ms)
    prods = c.s_products if c.s_products is not None else {}
    c.s_products = prods
    flags = prods.get(product_id)
    if flags is None:
        c.s_distinct += 1
        if len(prods) < SESSION_PRODUCTS:
            flags = 0
    carting = action == "add_to_cart"
    if carting:
        c.s_carts += 1
        cart = c.cart if c.cart is not None else {}
        c.cart = cart
        cart[product_id] = cart.get(product_id, 0) + 1
        if c.cart_done != start:  # one per session, even when it fired before the session ended
            c.cart_due, c.cart_ep = ts_ms + cfg.cart_abandon_ms, start
        if flags is not None:
            prods[product_id] = flags | CARTED
    else:
        c.s_views += 1
        if flags is not None:
            prods[product_id] = flags + (1 << VIEWS_SHIFT)
        _remember(c.seen, product_id, ts_ms, SEEN_MAX)
        if c.cart_due is not None and c.cart_ep == start and c.cart:
            c.cart_due = ts_ms + cfg.cart_abandon_ms
    _touch_affinity(c, category, ts_ms, WEIGHT_CART if carting else WEIGHT_VIEW, cfg)
    cut = ts_ms - cfg.interest_window_ms
    while c.seen and next(iter(c.seen.values())) < cut:
        del c.seen[next(iter(c.seen))]


def apply_order(c: CustomerState, ts_ms: int, items: Sequence[tuple[str, int, float, str | None]],
                cfg: CustomerConfig) -> float:
    """Count an order: cart, spend, affinity; returns its value."""
    c.last_ms = max(c.last_ms, ts_ms)
    value = 0.0
    for pid, qty, price, cat in items:
        value += qty * price
        if c.cart and pid in c.cart:
            left = c.cart[pid] - qty
            if left > 0:
                c.cart[pid] = left
            else:
                del c.cart[pid]
        if c.s_products is not None and pid in c.s_products:
            c.s_products[pid] |= ORDERED
        bought = c.bought if c.bought is not None else {}
        c.bought = bought
        _remember(bought, pid, ts_ms, BOUGHT_MAX)
        _touch_affinity(c, cat, ts_ms, WEIGHT_ORDER_LINE, cfg)
    if not c.cart:
        c.cart = None
    c.cart_due = None
    c.orders.append((ts_ms, value))
    c.orders.sort(key=lambda o: o[0])  # a late order lands in its place
    while len(c.orders) > GAPS_KEPT + 1 and c.orders[0][0] < c.orders[-1][0] - 90 * DAY_MS:
        del c.orders[0]
    c.n_orders += 1
    c.spend += value
    return value


def usual_gap_ms(c: CustomerState) -> float | None:
    """Median of the gaps between the last ``GAPS_KEPT + 1`` orders (None with fewer than two)."""
    ts = [t for t, _ in c.orders[-(GAPS_KEPT + 1):]]
    if len(ts) < 2:
        return None
    return float(statistics.median(b - a for a, b in zip(ts, ts[1:], strict=False)))


def win_back_due(c: CustomerState, cfg: CustomerConfig) -> int | None:
    """When the customer counts as lapsed: ``win_back_factor`` usual gaps after the last order."""
    if c.n_orders < cfg.win_back_min_orders or not c.orders:
        return None
    gap = usual_gap_ms(c)
    last = c.orders[-1][0]
    if not gap or c.win_done == last:
        return None
    return last + int(cfg.win_back_factor * gap)


def top_categories(c: CustomerState, as_of_ms: int, cfg: CustomerConfig) -> list[tuple[str, float]]:
    """The customer's categories by affinity decayed to ``as_of_ms``, best first."""
    k = 0.5 ** (max(0, as_of_ms - c.aff_ms) / cfg.affinity_half_life_ms)
    ranked = sorted(c.aff.items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.top_categories]
    return [(cat, score * k) for cat, score in ranked]


def build_features(c: CustomerState, as_of_ms: int, cfg: CustomerConfig, prices: dict[str, tuple[int, float]],
                   trending: Callable[[str], Sequence[str]]) -> dict[str, Any]:
    """The customer's features record as of ``as_of_ms`` (the watermark)."""
    session = None if c.s_start is None else {
        "session_id": c.s_id, "start_ms": c.s_start, "last_ms": c.s_last, "views": c.s_views,
        "add_to_carts": c.s_carts, "distinct_products": c.s_distinct,
    }
    items, value, priced = [], 0.0, False
    for pid, qty in sorted((c.cart or {}).items()):
        price = prices[pid][1] if pid in prices else None
        items.append({"product_id": pid, "quantity": qty, "unit_price": price})
        if price is not None:
            value, priced = value + qty * price, True
    o30 = [v for t, v in c.orders if as_of_ms - t < 30 * DAY_MS]
    o90 = [v for t, v in c.orders if as_of_ms - t < 90 * DAY_MS]
    gap = usual_gap_ms(c)
    last = c.orders[-1][0] if c.orders else None
    cats = top_categories(c, as_of_ms, cfg)
    return {
        "user_id": c.user_id,
        "as_of_ms": as_of_ms,
        "session": session,
        "cart": {"items": items, "units": sum(q for q in (c.cart or {}).values()), "value": value if priced else None},
        "recent_views": list(reversed(c.seen))[: cfg.recent_n],
        "top_categories": [{"category": cat, "score": s} for cat, s in cats],
        "orders_30d": len(o30), "spend_30d": sum(o30),
        "orders_90d": len(o90), "spend_90d": sum(o90),
        "orders_total": c.n_orders,
        "average_order_value": c.spend / c.n_orders if c.n_orders else None,
        "usual_gap_days": None if gap is None else gap / DAY_MS,
        "days_since_last_order": None if last is None else (as_of_ms - last) / DAY_MS,
        "recommended": recommend(c, cats, cfg, trending),
    }


def recommend(c: CustomerState, cats: list[tuple[str, float]], cfg: CustomerConfig,
              trending: Callable[[str], Sequence[str]]) -> list[dict[str, str]]:
    """Products trending now in the customer's top categories that they have not bought, with why."""
    out: list[dict[str, str]] = []
    bought = c.bought or {}
    for rank, (cat, _score) in enumerate(cats, 1):
        for pid in trending(cat):
            if pid in bought or any(r["product_id"] == pid for r in out):
                continue
            out.append({"product_id": pid, "category": cat,
                        "reason": f"trending now in {cat}, your #{rank} category; not bought yet"})
            if len(out) >= cfg.recommend_n:
                return out
    return out
