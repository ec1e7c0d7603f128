"""Customer features computed the obvious way from the raw event dicts (no engine helpers): the reference
the engine (``tests/unit/test_customers_features.py``) and a worker's ``GET /customers/{id}``
(``tests/integration/test_customer_triggers.py``) are checked against.

Floats are compared with ``pytest.approx`` (sums in another order), so the result is for ``==`` in a test.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import pytest

__all__ = ["reference", "by_user", "GAP"]

MIN = 60_000
DAY = 24 * 60 * MIN
GAP, HALF_LIFE, WINDOW = 30 * MIN, 7 * DAY, 7 * DAY
POINTS = {"view": 1.0, "add_to_cart": 3.0, "order": 5.0}


def reference(clicks: list[dict[str, Any]], orders: list[dict[str, Any]], all_orders: list[dict[str, Any]],
              alerts: list[dict[str, Any]], as_of: int) -> dict[str, Any]:
    """What the features record of the customer with ``clicks`` and ``orders`` should say at ``as_of`` (events
    before it). ``all_orders``: the orders the engine learns cart prices from (all of them for one engine; in a
    worker, those of the customers of the same unit); ``alerts``: the demand surge alerts it was given."""
    clicks = [c for c in clicks if c["ts"] < as_of]
    orders = [o for o in orders if o["ts"] < as_of]
    session: dict[str, Any] | None = None
    for c in clicks:
        if session is None or c["ts"] - session["last_ms"] > GAP or (
                c["session_id"] and session["session_id"] and c["session_id"] != session["session_id"]):
            session = {"session_id": c["session_id"], "start_ms": c["ts"], "products": set(), "views": 0, "carts": 0}
        session["last_ms"] = c["ts"]
        session["products"].add(c["product_id"])
        session["views" if c["action"] == "view" else "carts"] += 1
    if session is not None and as_of - session["last_ms"] > GAP:
        session = None
    cart: dict[str, int] = defaultdict(int)
    for _ts, kind, ev in sorted([(c["ts"], 0, c) for c in clicks] + [(o["ts"], 1, o) for o in orders],
                                key=lambda x: x[:2]):
        if kind == 0 and ev["action"] == "add_to_cart":
            cart[ev["product_id"]] += 1
        elif kind == 1:
            for it in ev["items"]:
                if it["product_id"] in cart:
                    cart[it["product_id"]] -= it["quantity"]
                    if cart[it["product_id"]] <= 0:
                        del cart[it["product_id"]]
    price: dict[str, tuple[int, float]] = {}
    for o in all_orders:
        for it in o["items"]:
            if o["ts"] < as_of:
                price[it["product_id"]] = max(price.get(it["product_id"], (-1, 0.0)), (o["ts"], it["unit_price"]))
    priced = [q * price[p][1] for p, q in cart.items() if p in price]
    last_click = max((c["ts"] for c in clicks), default=0)
    last_view: dict[str, int] = {}
    for c in clicks:
        if c["action"] == "view":
            last_view[c["product_id"]] = c["ts"]
    recent = [p for p, t in sorted(last_view.items(), key=lambda kv: -kv[1]) if t >= last_click - WINDOW][:10]
    score: dict[str, float] = defaultdict(float)
    for c in clicks:
        score[c["category"]] += POINTS[c["action"]] * 0.5 ** ((as_of - c["ts"]) / HALF_LIFE)
    for o in orders:
        for it in o["items"]:
            score[it["category"]] += POINTS["order"] * 0.5 ** ((as_of - o["ts"]) / HALF_LIFE)
    top = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    values = [sum(it["quantity"] * it["unit_price"] for it in o["items"]) for o in orders]
    times = [o["ts"] for o in orders]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)][-10:]
    surging: dict[str, tuple[int, str]] = {}
    keys: dict[str, set[str]] = defaultdict(set)
    for a in alerts:
        end, pid = a["window"]["end_ms"], a["labels"]["product_id"]
        if end >= as_of:
            continue
        if a["status"] == "firing":
            if not keys[pid]:
                surging[pid] = (end, a["labels"]["category"])
            keys[pid].add(a["dedup_key"])
        else:
            keys[pid].discard(a["dedup_key"])
            if not keys[pid]:
                surging.pop(pid, None)
    bought = {it["product_id"] for o in orders for it in o["items"]}
    recommended = []
    for rank, (cat, _s) in enumerate(top, 1):
        for _since, pid in sorted((-t, p) for p, (t, c) in surging.items() if c == cat):
            if pid not in bought and len(recommended) < 5:
                recommended.append({"product_id": pid, "category": cat,
                                    "reason": f"trending now in {cat}, your #{rank} category; not bought yet"})
    return {
        "session": None if session is None else {
            "session_id": session["session_id"], "start_ms": session["start_ms"], "last_ms": session["last_ms"],
            "views": session["views"], "add_to_carts": session["carts"],
            "distinct_products": len(session["products"])},
        "cart": {"items": [{"product_id": p, "quantity": q, "unit_price": price[p][1] if p in price else None}
                           for p, q in sorted(cart.items())],
                 "units": sum(cart.values()), "value": sum(priced) if priced else None},
        "recent_views": recent,
        "top_categories": [{"category": c, "score": pytest.approx(s, rel=1e-9)} for c, s in top],
        "orders_30d": sum(1 for t in times if as_of - t < 30 * DAY),
        "spend_30d": pytest.approx(sum(v for t, v in zip(times, values, strict=True) if as_of - t < 30 * DAY)),
        "orders_90d": sum(1 for t in times if as_of - t < 90 * DAY),
        "spend_90d": pytest.approx(sum(v for t, v in zip(times, values, strict=True) if as_of - t < 90 * DAY)),
        "orders_total": len(orders),
        "average_order_value": pytest.approx(sum(values) / len(values)) if values else None,
        "usual_gap_days": statistics.median(gaps) / DAY if gaps else None,
        "days_since_last_order": (as_of - times[-1]) / DAY if times else None,
        "recommended": recommended,
    }


def by_user(clicks: list[dict[str, Any]], orders: list[dict[str, Any]],
            ) -> dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """Each user's clicks and orders, in the given (time) order."""
    out: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = defaultdict(lambda: ([], []))
    for c in clicks:
        out[c["user_id"]][0].append(c)
    for o in orders:
        out[o["user_id"]][1].append(o)
    return out
