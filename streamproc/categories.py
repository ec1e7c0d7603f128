"""Category-level demand surges, fed from the same closed product buckets as the product detectors.

The engine closes a product's bucket and emits its features record; :meth:`CategoryEngine.observe` takes
those records, adds the closed bucket's orders and clicks (from the product's state) to its category's
bucket, and steps one detector per category and signal once every unit of this worker has closed that
bucket. A category surge is an alert with labels ``scope: category`` and no ``product_id``; the
:class:`~streamproc.lifecycle.Notifier` uses it to inhibit the product surges inside it.

Limits (documented in docs/alert-delivery.md): a worker sees the products of its own partitions, so with
several workers each detects on its share (a site-wide sale still shows in every share); the category
detectors' state is kept in memory only, so after a restart they warm up again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import alerts as alerts_mod
from . import detectors
from .demand import CARTS, NEGATIVE, ORDERS, REVIEWS, SCORED, SENTIMENT_SUM, VIEWS, Output

if TYPE_CHECKING:
    from .demand import DemandEngine

__all__ = ["CategoryEngine", "category_alert"]

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SIGNALS = ("orders", "clicks")
_REVIEW_SLOTS = (REVIEWS, NEGATIVE, SENTIMENT_SUM, SCORED)


def category_alert(*, category: str, signal: str, severity: str, window_start_ms: int, window_end_ms: int,
                   observed: float, expected: float, score: float) -> dict[str, Any]:
    """A firing category-level surge (``dedup_key`` ``demand_surge:<signal>:category:<category>``)."""
    a = alerts_mod.new_alert(alertname="demand_surge", signal=signal, product_id=f"category:{category}",
                             category=category, severity=severity, window_start_ms=window_start_ms,
                             window_end_ms=window_end_ms, observed=observed, expected=expected, score=score)
    labels = {"alertname": "demand_surge", "scope": "category", "category": category, "signal": signal,
              "severity": severity}
    a["labels"] = labels
    a["fingerprint"] = alerts_mod.fingerprint(labels)
    a["annotations"]["summary"] = f"Demand surge in category {category} ({signal})"
    return a


@dataclass
class CategoryState:
    det: dict[str, detectors.DetectorState]
    next_ms: int
    """Start of the next bucket to step."""
    last_active_ms: int
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)


class CategoryEngine:
    """Category totals per bucket and their surge detectors (one worker's share of the products)."""

    def __init__(self, engine: DemandEngine, det_cfg: detectors.DetectorConfig, *, live_ms: int = DAY_MS) -> None:
        self.engine = engine
        self.det_cfg = det_cfg
        self.bucket_ms = engine.spec.bucket_ms
        self.live_ms = live_ms
        self.open: dict[int, dict[str, list[float]]] = {}
        """Bucket start -> category -> [orders, clicks], until every unit closed the bucket."""
        self.cats: dict[str, CategoryState] = {}
        self.review_minutes: dict[str, dict[int, list[float]]] = {}
        """Per category, per closed bucket of the last hour: [reviews, negative, sentiment sum, scored]."""
        self.review_hours: dict[str, dict[int, list[float]]] = {}
        """Same per hour, for the last 24 h."""

    def review_windows(self, category: str) -> dict[str, float | None]:
        """The category's reviews over the last hour and day (of the buckets closed so far): counts, share
        labelled negative, mean P(positive) - P(negative) — as the product features, one level up."""
        out: dict[str, float | None] = {}
        for name, rows in (("1h", self.review_minutes.get(category, {})), ("24h", self.review_hours.get(category, {}))):
            n, neg, sent, scored = (sum(r[i] for r in rows.values()) for i in range(4))
            out[f"reviews_{name}"] = n
            out[f"negative_share_{name}"] = neg / scored if scored else None
            out[f"sentiment_mean_{name}"] = sent / scored if scored else None
        return out

    def _add_reviews(self, category: str, b: int, c: Sequence[float]) -> None:
        if not c[REVIEWS]:
            return
        for rows, key, keep_ms in ((self.review_minutes, b, HOUR_MS), (self.review_hours, b - b % HOUR_MS, DAY_MS)):
            cat = rows.setdefault(category, {})
            acc = cat.setdefault(key, [0.0] * 4)
            for i, slot in enumerate(_REVIEW_SLOTS):
                acc[i] += c[slot]
            for old in [k for k in cat if k <= key - keep_ms]:
                del cat[old]

    def firing(self) -> list[dict[str, Any]]:
        return [a for st in self.cats.values() for a in st.incidents.values()]

    def observe(self, outputs: list[Output]) -> list[Output]:
        """Add the product buckets these outputs closed; step the category buckets now closed everywhere."""
        size = self.bucket_ms
        for o in outputs:
            if o.kind != "features":
                continue
            p = self.engine.peek(o.key)
            if p is None or not p.category:
                continue
            b = int(o.value["as_of_ms"]) - size
            c = p.minutes.get(b)
            if c is None:
                continue
            acc = self.open.setdefault(b, {}).setdefault(p.category, [0.0, 0.0])
            acc[0] += c[ORDERS]
            acc[1] += c[VIEWS] + c[CARTS]
            self._add_reviews(p.category, b, c)
            st = self.cats.get(p.category)
            if st is None:
                st = self.cats[p.category] = CategoryState(
                    {s: detectors.new_state(self.det_cfg) for s in SIGNALS}, b, b)
            st.next_ms = min(st.next_ms, b)
            st.last_active_ms = max(st.last_active_ms, b)
        closes = [u.next_close_ms for u in self.engine.units.values() if u.next_close_ms is not None]
        if not closes:
            return []
        final = min(closes)  # buckets starting before this are closed in every unit
        out: list[Output] = []
        for cat, st in list(self.cats.items()):
            while st.next_ms < final:
                b = st.next_ms
                acc = self.open.get(b, {}).get(cat, [0.0, 0.0])
                self._step(cat, st, b, {"orders": acc[0], "clicks": acc[1]}, out)
                st.next_ms = b + size
            if st.next_ms - st.last_active_ms > self.live_ms and not st.incidents:
                del self.cats[cat]
        for b in [b for b in self.open if b < final]:
            del self.open[b]
        return out

    def _step(self, cat: str, st: CategoryState, b: int, values: dict[str, float], out: list[Output]) -> None:
        size = self.bucket_ms
        for signal in SIGNALS:
            d = detectors.step(st.det[signal], values[signal], b, size, self.det_cfg)
            if d.transition == "firing" and d.kind == "demand_surge":
                a = category_alert(category=cat, signal=signal, severity=d.severity, window_start_ms=b,
                                   window_end_ms=b + size, observed=values[signal], expected=d.expected,
                                   score=d.score)
                st.incidents[signal] = a
                out.append(Output("alert", a["dedup_key"], a))
            elif d.transition == "resolved" and signal in st.incidents:
                a = alerts_mod.resolve_alert(st.incidents.pop(signal), window_start_ms=b, window_end_ms=b + size,
                                             observed=values[signal], expected=d.expected, score=d.score)
                out.append(Output("alert", a["dedup_key"], a))
