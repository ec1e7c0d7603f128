"""Per-product feature records (what the recommendation service reads) and their freshness status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import detectors, forecast

if TYPE_CHECKING:
    from .demand import Counts, ProductState

__all__ = ["build_features", "with_status", "not_found", "trending"]

VIEWS, CARTS, ORDERS, UNITS, REVENUE, REVIEWS, NEGATIVE, SENTIMENT_SUM, SCORED = range(9)


def _sum(rows: dict[int, Counts], since_ms: int) -> list[float]:
    total = [0.0] * 9
    for start, c in rows.items():
        if start >= since_ms:
            for i, v in enumerate(c):
                total[i] += v
    return total


def _recent(rows: dict[int, Counts], since_ms: int) -> list[float]:
    """``_sum`` over the newest rows (``rows`` are in bucket order): the same additions in the same order."""
    newest = []
    for start in reversed(rows):
        if start < since_ms:
            break
        newest.append(rows[start])
    total = [0.0] * 9
    for c in reversed(newest):
        for i, v in enumerate(c):
            total[i] += v
    return total


def _slot_sum(rows: dict[int, Counts], slot: int) -> float:
    total = 0.0
    for c in rows.values():
        total += c[slot]
    return total


def build_features(p: ProductState, *, as_of_ms: int, bucket_ms: int, det_cfg: detectors.DetectorConfig) -> dict[str, Any]:
    """The features record of a product as of the end of its latest closed bucket.

    Called right after the close of the bucket ending at ``as_of_ms``, when ``p.minutes`` holds exactly the
    last hour and ``p.hours`` the last 24 h (with buckets that divide an hour): the 1 h and 24 h counts are
    the running totals, and only the fractional slots (revenue, sentiment) are re-added, in bucket order,
    when there is something to add."""
    m5 = _recent(p.minutes, as_of_ms - 5 * 60_000)
    h1: Sequence[float]
    d1: Sequence[float]
    if 3_600_000 % bucket_ms:  # buckets that straddle the hour: the window cuts inside the rows kept
        h1 = _sum(p.minutes, as_of_ms - 3_600_000)
        d1 = _sum(p.hours, as_of_ms - 24 * 3_600_000)
        revenue_1h, sentiment_24h = h1[REVENUE], d1[SENTIMENT_SUM]
    else:
        h1, d1 = p.m_sum, p.h_sum
        revenue_1h = _slot_sum(p.minutes, REVENUE) if h1[ORDERS] else 0.0
        sentiment_24h = _slot_sum(p.hours, SENTIMENT_SUM) if d1[SCORED] else 0.0
    clicks_5m = m5[VIEWS] + m5[CARTS]
    f5, f1h = forecast.units_ahead(p.fc, p.det["orders"], as_of_ms, bucket_ms, det_cfg)
    return {
        "product_id": p.product_id,
        "category": p.category,
        "status": "PRESENT",
        "as_of_ms": as_of_ms,
        "features": {
            "clicks_5m": clicks_5m,
            "add_to_carts_5m": m5[CARTS],
            "orders_5m": m5[ORDERS],
            "units_5m": m5[UNITS],
            "revenue_5m": round(m5[REVENUE], 2),
            "conversion_5m": (m5[ORDERS] / clicks_5m) if clicks_5m else None,
            "clicks_1h": h1[VIEWS] + h1[CARTS],
            "orders_1h": h1[ORDERS],
            "units_1h": h1[UNITS],
            "revenue_1h": round(revenue_1h, 2),
            "clicks_24h": d1[VIEWS] + d1[CARTS],
            "orders_24h": d1[ORDERS],
            "units_24h": d1[UNITS],
            "expected_units_next_5m": round(f5.expected, 4),
            "expected_units_next_5m_low": round(f5.low, 4),
            "expected_units_next_5m_high": round(f5.high, 4),
            "expected_units_next_1h": round(f1h.expected, 4),
            "expected_units_next_1h_low": round(f1h.low, 4),
            "expected_units_next_1h_high": round(f1h.high, 4),
            "surge_score": round(max(p.last_scores.values(), default=0.0), 4),
            "reviews_24h": d1[REVIEWS],
            "sentiment_mean_24h": (sentiment_24h / d1[SCORED]) if d1[SCORED] else None,
            "negative_share_24h": (d1[NEGATIVE] / d1[SCORED]) if d1[SCORED] else None,
        },
    }


def with_status(record: dict[str, Any] | None, product_id: str, *, age_ms: int | None, max_age_ms: int) -> dict[str, Any]:
    """The record as served over HTTP, with PRESENT / OUTSIDE_MAX_AGE / NOT_FOUND."""
    if record is None:
        return not_found(product_id)
    out = dict(record)
    out["status"] = "OUTSIDE_MAX_AGE" if age_ms is not None and age_ms > max_age_ms else "PRESENT"
    return out


def not_found(product_id: str) -> dict[str, Any]:
    return {"product_id": product_id, "status": "NOT_FOUND", "as_of_ms": None, "features": {}}


def trending(index: dict[str, ProductState], signal: str, limit: int) -> list[tuple[ProductState, dict[str, Any]]]:
    """Products ranked by their latest surge score on ``signal`` (ties by id), with the row served by
    ``GET /trending``."""
    ranked = sorted(((p.last_scores.get(signal, 0.0), pid, p) for pid, p in index.items()),
                    key=lambda t: (-t[0], t[1]))[:limit]
    rows = []
    for score, pid, p in ranked:
        f = (p.features or {}).get("features", {})
        rows.append((p, {"product_id": pid, "category": p.category, "surge_score": score,
                         "orders_5m": f.get("orders_5m"), "clicks_5m": f.get("clicks_5m"),
                         "firing": signal in p.incidents}))
    return rows
