"""The demand engine: event-time buckets per product, closing on the unit watermark, detectors at close.

Pure logic, no Kafka, no Faust, no clock: the worker feeds it decoded events with the wall time of
arrival and calls :meth:`DemandEngine.tick`; tests feed it directly. Everything the engine emits comes
out of ``tick`` as :class:`Output` values (features records and alert transitions), so that given the
same records per stream the outputs are the same whatever the speed or batching.

State per product (one :class:`ProductState`) is small and serialisable; the worker keeps a copy in a
changelog-backed Faust table, written once per batch for the products that changed (``dirty``).

A close costs the same whatever the history kept: the last hour's and day's counts are running totals
(``m_sum``/``h_sum``, whole-number slots, so exact), rows leave from the oldest end, and only the fractional
slots (revenue, sentiment) are re-added in bucket order when a features record needs them, so that every
output is bit for bit what summing the rows gives (``tests/unit/test_engine_equivalence.py``).
"""

from __future__ import annotations

import heapq
import zlib
from array import array
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from . import alerts as alerts_mod
from . import detectors, forecast, review_spikes
from .events import Click, DecodeError, OrderItem, Review
from .features import build_features
from .windows import UnitWatermark, WindowSpec, bucket_start

__all__ = ["DemandEngine", "ProductState", "Output", "Counts", "SIGNALS"]

# Counter slots of a bucket.
VIEWS, CARTS, ORDERS, UNITS, REVENUE, REVIEWS, NEGATIVE, SENTIMENT_SUM, SCORED = range(9)
NSLOTS = 9
SIGNALS = ("orders", "clicks")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
FEATURE_TAIL_BUCKETS = 5
"""A product emits features at each close until this many buckets after its last activity."""
MIN_PARK_BUCKETS = 3
"""A product is parked only if it can skip at least this many closes (else parking costs more than it saves)."""
FORCED_PARK_BUCKETS = 5
"""A product parked over the cap catches up after this many buckets (or when a record touches it)."""
_MU_FLOOR = 1e-3  # detectors._MU_FLOOR: the drop test's expectation per bucket is never below this

if TYPE_CHECKING:
    Counts = array[float]
else:
    Counts = array
"""A bucket's counters: flat C doubles (the same float arithmetic as a list of floats, a third of the
memory, and nothing for the garbage collector to walk)."""
_ZEROS = array("d", [0.0] * NSLOTS)


def _zeros() -> Counts:
    return array("d", _ZEROS)


_NO_COUNTS: Counts = array("d", _ZEROS)
"""The counts of a bucket without activity (read only)."""
_INT_SLOTS = (VIEWS, CARTS, ORDERS, UNITS, REVIEWS, NEGATIVE, SCORED)
"""Slots that only ever hold whole numbers: their running totals are exact, whatever the order of the
additions and subtractions. REVENUE and SENTIMENT_SUM are re-added in bucket order when read (features.py)."""


def _total(rows: dict[int, Counts]) -> Counts:
    total = _zeros()
    for c in rows.values():
        for i in _INT_SLOTS:
            total[i] += c[i]
    return total


@dataclass(frozen=True)
class Output:
    """Something the engine emits at a bucket close: a features record or an alert transition."""

    kind: str  # "features" | "alert"
    key: str  # product_id for features, dedup_key for alerts
    value: dict[str, Any]


@dataclass(slots=True)
class ProductState:
    """Everything kept about one product."""

    product_id: str
    category: str | None = None
    unit: int = 0
    open: dict[int, Counts] = field(default_factory=dict)
    """Buckets not yet final: start -> counts."""
    minutes: dict[int, Counts] = field(default_factory=dict)
    """Closed buckets of the last hour with any activity: start -> counts."""
    hours: dict[int, Counts] = field(default_factory=dict)
    """Hourly totals of the last 24 h (the current hour included): hour start -> counts."""
    next_close_ms: int = 0
    """Start of the next bucket to close for this product."""
    last_event_ms: int = 0
    last_active_ms: int = 0
    """Start of the newest *closed* bucket with any activity. Emission and expiry decide on this, not on
    ``last_event_ms``, so that they do not depend on how far ahead the input has been read."""
    det: dict[str, detectors.DetectorState] = field(default_factory=dict)
    fc: forecast.ForecastState = field(default_factory=forecast.ForecastState)
    """Units forecaster (16 numbers, see streamproc.forecast)."""
    incidents: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Open (firing) alert per signal."""
    last_scores: dict[str, float] = field(default_factory=dict)
    features: dict[str, Any] | None = None
    """The last features record emitted."""
    applied: dict[str, int] = field(default_factory=dict)
    """Per input stream, the sequence number (offset, or offset*1000+line for order lines) of the last
    record counted here: a record replayed after a crash is recognised and not counted twice."""
    closes: int = 0
    """Buckets closed so far."""
    review: review_spikes.ReviewSpikeState = field(default_factory=review_spikes.ReviewSpikeState)
    """The negative-review spike test's baseline and incident state."""
    neg_top: dict[int, list[list[Any]]] = field(default_factory=dict)
    """Per bucket (open or within the longest review window), its most negative reviews: evidence."""
    m_sum: Counts = field(init=False, repr=False, compare=False)
    """Running totals of ``minutes`` over the whole-number slots (derived, not stored)."""
    h_sum: Counts = field(init=False, repr=False, compare=False)
    """Running totals of ``hours`` over the whole-number slots (derived, not stored)."""

    def __post_init__(self) -> None:
        self.m_sum = _total(self.minutes)
        self.h_sum = _total(self.hours)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (for the changelog-backed table)."""
        return {
            "product_id": self.product_id,
            "category": self.category,
            "unit": self.unit,
            "open": [[k, *v] for k, v in self.open.items()],
            "minutes": [[k, *v] for k, v in self.minutes.items()],
            "hours": [[k, *v] for k, v in self.hours.items()],
            "next_close_ms": self.next_close_ms,
            "last_event_ms": self.last_event_ms,
            "last_active_ms": self.last_active_ms,
            "det": {k: v.to_dict() for k, v in self.det.items()},
            "fc": self.fc.to_dict(),
            "incidents": self.incidents,
            "last_scores": self.last_scores,
            "features": self.features,
            "applied": self.applied,
            "closes": self.closes,
            "review": self.review.to_dict(),
            "neg_top": [[k, v] for k, v in self.neg_top.items()],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProductState:
        def rows(r: list[list[float]]) -> dict[int, Counts]:
            return {int(x[0]): array("d", x[1:]) for x in r}

        return cls(
            product_id=d["product_id"],
            category=d.get("category"),
            unit=d.get("unit", 0),
            open=rows(d["open"]),
            minutes=rows(d["minutes"]),
            hours=rows(d["hours"]),
            next_close_ms=d["next_close_ms"],
            last_event_ms=d["last_event_ms"],
            last_active_ms=d.get("last_active_ms", d["last_event_ms"]),
            det={k: detectors.DetectorState.from_dict(v) for k, v in d["det"].items()},
            fc=forecast.ForecastState.from_dict(d.get("fc")),
            incidents=d.get("incidents", {}),
            last_scores=d.get("last_scores", {}),
            features=d.get("features"),
            applied=d.get("applied", {}),
            closes=d.get("closes", 0),
            review=review_spikes.ReviewSpikeState.from_dict(d.get("review")),
            neg_top={int(k): v for k, v in d.get("neg_top", [])},
        )


def _prune(rows: dict[int, Counts], cut_ms: int, total: Counts) -> None:
    """Drop the rows starting at or before ``cut_ms`` (the oldest come first) and take them off ``total``."""
    while rows:
        k = next(iter(rows))
        if k > cut_ms:
            return
        c = rows.pop(k)
        for i in _INT_SLOTS:
            total[i] -= c[i]


@dataclass
class Unit:
    """The state fed by one partition number of the input topics."""

    watermark: UnitWatermark
    products: dict[str, ProductState] = field(default_factory=dict)
    """Products in the heap (hot): closed at every bucket."""
    next_close_ms: int | None = None
    frontier_ms: int | None = None
    """Start of the first bucket not yet final: every hot product has closed every bucket before it."""
    cold: MutableMapping[str, bytes] = field(default_factory=dict)
    """Parked products: compressed snapshots of products that need no close for a while (see ``_park_due``)."""
    wake: list[tuple[int, str]] = field(default_factory=list)
    """Heap of (bucket start at which a parked product must close again, product id); stale entries are
    harmless (a product woken early catches up and parks again)."""


class DemandEngine:
    """Per-product event-time windows, detection at close, features and alert transitions."""

    def __init__(self, spec: WindowSpec, det_cfg: detectors.DetectorConfig, *, live_ms: int = DAY_MS,
                 review_cfg: review_spikes.ReviewSpikeConfig | None = None, max_hot: int | None = None,
                 park: bool = True, wake_budget: int = 2_000) -> None:
        self.spec = spec
        self.det_cfg = det_cfg
        self.review_cfg = review_cfg or review_spikes.ReviewSpikeConfig()
        self.live_ms = live_ms
        self.units: dict[int, Unit] = {}
        self.index: dict[str, ProductState] = {}
        """Hot products (in the heap) by id; parked ones are in their unit's ``cold``."""
        self.dirty: set[str] = set()
        self.evicted: set[str] = set()
        self.wall_updated: dict[str, int] = {}
        self.park = park
        """Park products that need no close for a while (False: every product stays hot, closed every bucket)."""
        self.max_hot = max_hot
        """Cap on hot products: past it the least recently active are parked even with closes due; they
        catch up (the same outputs, later) when touched or after ``FORCED_PARK_BUCKETS``."""
        self.wake_budget = wake_budget
        """Parked products woken per unit and tick at most (the rest next tick): a tick stays short."""
        self.cold_store: Callable[[int], MutableMapping[str, bytes]] = lambda _unit: {}
        """Makes a unit's store of parked products: a dict (in the heap) unless the worker sets another."""
        self.pending: list[Output] = []
        """Outputs of closes caught up outside ``tick`` (a parked product woken by a record), emitted by the next tick."""
        self._candidates: list[ProductState] = []
        self._wall_ms = 0
        self.more = False
        """Set by a ``tick`` that stopped at its budget with closes still due."""
        self.parks = 0
        self.wakes = 0

    # -- input ---------------------------------------------------------------------------------

    def unit(self, unit_id: int) -> Unit:
        u = self.units.get(unit_id)
        if u is None:
            u = self.units[unit_id] = Unit(UnitWatermark(self.spec), cold=self.cold_store(unit_id))
        return u

    def register_stream(self, unit_id: int, stream: str, wall_ms: int) -> None:
        """Announce an input stream of a unit (on partition assignment)."""
        self.unit(unit_id).watermark.register(stream, wall_ms)

    def touch_stream(self, unit_id: int, stream: str, wall_ms: int) -> None:
        """A stream of a unit has a backlog: keep it from counting as idle."""
        u = self.units.get(unit_id)
        if u is not None:
            u.watermark.touch(stream, wall_ms)

    def drop_unit(self, unit_id: int) -> Unit | None:
        """Forget a unit whose partition moved to another worker; returns it (its parked products with it)."""
        u = self.units.pop(unit_id, None)
        if u:
            for pid in u.products:
                self.index.pop(pid, None)
                self.wall_updated.pop(pid, None)
        return u

    def restore(self, state: ProductState) -> None:
        """Put back a product's state read from the table."""
        u = self.unit(state.unit)
        u.watermark.seed(state.last_event_ms)
        u.products[state.product_id] = state
        self.index[state.product_id] = state

    def restore_snapshot(self, snapshot: bytes) -> None:
        """Put back a product from its stored snapshot: parked at once if it needs no close for a while
        (a million restored products do not all enter the heap)."""
        p = ProductState.from_dict(orjson.loads(snapshot))
        due = self._park_due(p) if self.park else None
        if due is None:
            self.restore(p)
            return
        u = self.unit(p.unit)
        u.watermark.seed(p.last_event_ms)
        u.cold[p.product_id] = zlib.compress(snapshot, 1)
        heapq.heappush(u.wake, (due, p.product_id))

    def restore_parked(self, unit_id: int, cold: MutableMapping[str, bytes], wake: list[tuple[int, str]]) -> None:
        """Put back the parked products of a unit that was set aside at a revocation (see ``drop_unit``)."""
        u = self.unit(unit_id)
        if u.cold:
            u.cold.update(cold)
        else:
            u.cold = cold
        u.wake.extend(wake)
        heapq.heapify(u.wake)

    def snapshot(self, product_id: str) -> bytes | None:
        """The stored form of a product (hot or parked); None if it is not tracked here."""
        p = self.index.get(product_id)
        if p is not None:
            return orjson.dumps(p.to_dict())
        return self._parked_snapshot(product_id)

    def peek(self, product_id: str) -> ProductState | None:
        """A product's state for reading (a parked one is decoded, not woken: reads do not change state)."""
        p = self.index.get(product_id)
        if p is not None:
            return p
        snap = self._parked_snapshot(product_id)
        if snap is not None:
            return ProductState.from_dict(orjson.loads(snap))
        return self.index.get(product_id)  # woken meanwhile (the HTTP server reads from its own thread)

    def _parked_snapshot(self, product_id: str) -> bytes | None:
        """A parked product's snapshot, without waking it (units listed first: the HTTP thread calls this)."""
        for u in list(self.units.values()):
            blob = u.cold.get(product_id)
            if blob is not None:
                return zlib.decompress(blob)
        return None

    def product_ids(self) -> list[str]:
        """Every product tracked here, hot and parked."""
        return [*self.index, *(pid for u in self.units.values() for pid in u.cold)]

    def product_count(self) -> int:
        """Products tracked here, hot and parked."""
        return len(self.index) + self.parked_count()

    def parked_count(self) -> int:
        return sum(len(u.cold) for u in self.units.values())

    def already_applied(self, product_id: str, source: str, seq: int) -> bool:
        """Whether this record was counted for this product before (a replay after a restart): such a
        record is skipped before any lateness check, since the watermark may have moved past it since."""
        p = self.index.get(product_id)
        if p is None:
            p = self._wake_any(product_id)
        return p is not None and seq <= p.applied.get(source, -1)

    # -- parking: products that need no close for a while leave the heap -------------------------

    def _park_due(self, p: ProductState) -> int | None:
        """The start of the first bucket at which ``p`` may need a close with an effect beyond its own state
        (a features record, an alert, expiry), if every close before it is a zero-count close without
        output; None if that is sooner than ``MIN_PARK_BUCKETS`` buckets away.

        Until then only zero-count closes are due, and they emit nothing: no open bucket or incident, the
        features tail is over, no scored review within the hour, and the drop test cannot reach its minimum
        expected volume (under zero counts the level and every hour's mean only fall, so each close adds at
        most ``bound`` to the run's expected units). Such closes are replayed, the same calls in the same
        order, when the product is woken (``_wake``): parking changes when state is computed, never what."""
        size = self.spec.bucket_ms
        nb = p.next_close_ms
        if p.open or p.incidents or p.features is None or nb - p.last_active_ms <= FEATURE_TAIL_BUCKETS * size:
            return None
        if p.neg_top or p.review.window_ms is not None or p.m_sum[SCORED]:
            return None
        due = p.last_active_ms + (self.live_ms // size + 1) * size  # the close that expires it
        cfg = self.det_cfg
        for d in p.det.values():
            if d.firing is not None or d.pending is not None or cfg.drop_long_run <= 0:
                return None
            rem = cfg.min_drop_expected_units - d.down_exp
            if rem <= 0:
                return None
            level = d.level_num / d.level_den if d.level_den > 0 else 0.0
            bound = max(max(d.slot_means) * cfg.drop_long_run, level, _MU_FLOOR)
            safe = -int(-rem // bound) - 1  # closes with down_exp + k * bound < rem
            due = min(due, nb + max(safe, 0) * size)
        return due if due - nb >= MIN_PARK_BUCKETS * size else None

    def _park(self, u: Unit, p: ProductState, due: int) -> None:
        pid = p.product_id
        u.cold[pid] = zlib.compress(orjson.dumps(p.to_dict()), 1)
        heapq.heappush(u.wake, (due, pid))
        del u.products[pid]
        if self.index.get(pid) is p:
            del self.index[pid]
            self.wall_updated.pop(pid, None)
        self.parks += 1

    def _wake(self, u: Unit, pid: str, out: list[Output], wall_ms: int) -> ProductState | None:
        """Bring a parked product back into the heap and replay the closes it skipped (up to the unit's
        frontier); None if it expired on the way."""
        p = ProductState.from_dict(orjson.loads(zlib.decompress(u.cold.pop(pid))))
        u.products[pid] = p
        self.index[pid] = p
        self.wakes += 1
        frontier = u.frontier_ms
        if frontier is not None:
            while p.next_close_ms < frontier and u.products.get(pid) is p:
                self._close(u, p, p.next_close_ms, out, wall_ms)
        return u.products.get(pid)

    def _wake_any(self, pid: str, unit_id: int | None = None) -> ProductState | None:
        if unit_id is not None:
            u = self.units.get(unit_id)
            if u is not None and pid in u.cold:
                return self._wake(u, pid, self.pending, self._wall_ms)
        for u in self.units.values():
            if pid in u.cold:
                return self._wake(u, pid, self.pending, self._wall_ms)
        return None

    def _park_idle(self) -> None:
        """Park the products whose last close left them with nothing to do for a while, then enforce the cap."""
        for p in self._candidates:
            u = self.units.get(p.unit)
            if u is not None and u.products.get(p.product_id) is p:
                due = self._park_due(p)
                if due is not None:
                    self._park(u, p, due)
        self._candidates.clear()
        cap = self.max_hot
        if cap is None or len(self.index) <= cap:
            return
        size = self.spec.bucket_ms
        victims = heapq.nsmallest(min(len(self.index) - int(cap * 0.9), self.wake_budget * 4), self.index.values(),
                                  key=lambda p: (bool(p.incidents), p.last_event_ms))
        for p in victims:
            u = self.units[p.unit]
            if u.products.get(p.product_id) is not p:
                continue
            start = max(p.next_close_ms, u.frontier_ms or p.next_close_ms)
            self._park(u, p, start + FORCED_PARK_BUCKETS * size)

    def _wake_due(self, u: Unit, last: int, out: list[Output], wall_ms: int) -> None:
        woken = 0
        wake = u.wake
        while wake and wake[0][0] <= last and woken < self.wake_budget:
            _due, pid = heapq.heappop(wake)
            if pid in u.cold:
                self._wake(u, pid, out, wall_ms)
                woken += 1

    def _admit(self, unit_id: int, stream: str, ts_ms: int, wall_ms: int, covered: bool = False) -> Unit | DecodeError:
        u = self.unit(unit_id)
        if ts_ms > wall_ms + self.spec.max_future_ms:
            return DecodeError("late", f"ts {ts_ms} is more than {self.spec.max_future_ms} ms in the future")
        if u.watermark.is_late(ts_ms):
            return DecodeError(
                "late",
                f"ts {ts_ms} falls in a window that is already final (watermark {u.watermark.watermark_ms})",
            )
        u.watermark.observe(stream, ts_ms, wall_ms, covered=covered)
        return u

    def _bucket(self, u: Unit, unit_id: int, product_id: str, category: str | None, ts_ms: int,
                source: str | None, seq: int | None) -> Counts | DecodeError | None:
        """The open bucket a record counts into; None when the record was counted before (a replay),
        a DecodeError when the product's bucket is already final."""
        p = u.products.get(product_id)
        start = bucket_start(ts_ms, self.spec.bucket_ms)
        if p is None and product_id in u.cold:
            p = self._wake(u, product_id, self.pending, self._wall_ms)
        if p is None:
            p = self._new_product(u, unit_id, product_id, category, start)
        elif category and not p.category:
            p.category = category
        if source is not None and seq is not None:
            if seq <= p.applied.get(source, -1):
                return None
            p.applied[source] = seq
        if start < p.next_close_ms:
            if p.closes:
                return DecodeError("late", f"ts {ts_ms} falls in a window of {product_id} that is already final")
            p.next_close_ms = start  # first buckets of a new product, still open
        if ts_ms > p.last_event_ms:
            p.last_event_ms = ts_ms
        self.dirty.add(product_id)
        c = p.open.get(start)
        if c is None:
            c = p.open[start] = _zeros()
        return c

    def _new_product(self, u: Unit, unit_id: int, product_id: str, category: str | None, start: int) -> ProductState:
        p = ProductState(product_id=product_id, category=category, unit=unit_id, next_close_ms=start,
                         last_active_ms=start)
        p.det = {s: detectors.new_state(self.det_cfg) for s in SIGNALS}
        u.products[product_id] = p
        self.index[product_id] = p
        return p

    def apply_click(self, unit_id: int, stream: str, ev: Click, wall_ms: int,
                    offset: int | None = None) -> DecodeError | None:
        """Count a click; returns why not if it is late."""
        u = self._admit(unit_id, stream, ev.ts_ms, wall_ms)
        if isinstance(u, DecodeError):
            return u
        c = self._bucket(u, unit_id, ev.product_id, ev.category, ev.ts_ms, stream, offset)
        if isinstance(c, array):
            c[CARTS if ev.action == "add_to_cart" else VIEWS] += 1
            return None
        return c

    def count_click(self, unit_id: int, stream: str, ev: Click, wall_ms: int, offset: int) -> DecodeError | None:
        """``already_applied`` then ``apply_click`` in one pass (the worker's hot path): a click counted
        before is skipped before any lateness check; returns why not if it is late."""
        pid = ev.product_id
        p = self.index.get(pid)
        if p is None:
            p = self._wake_any(pid, unit_id)
        if p is not None and offset <= p.applied.get(stream, -1):
            return None
        u = self.units.get(unit_id)
        if u is None:
            u = self.unit(unit_id)
        ts = ev.ts_ms
        spec = self.spec
        if ts > wall_ms + spec.max_future_ms:
            return DecodeError("late", f"ts {ts} is more than {spec.max_future_ms} ms in the future")
        wm = u.watermark
        if wm.watermark_ms is not None and wm.is_late(ts):
            return DecodeError("late", f"ts {ts} falls in a window that is already final (watermark {wm.watermark_ms})")
        clock = wm.streams.get(stream)
        if clock is None:
            wm.observe(stream, ts, wall_ms)
        else:
            if clock.max_ts_ms is None or ts > clock.max_ts_ms:
                clock.max_ts_ms = ts
            clock.last_seen_wall_ms = wall_ms
        if p is None or p.unit != unit_id or u.products.get(pid) is not p:
            c = self._bucket(u, unit_id, pid, ev.category, ts, stream, offset)
        else:  # _bucket, for a product of this unit whose replay check passed above
            if ev.category and not p.category:
                p.category = ev.category
            p.applied[stream] = offset
            start = ts - ts % spec.bucket_ms
            if start < p.next_close_ms:
                if p.closes:
                    return DecodeError("late", f"ts {ts} falls in a window of {pid} that is already final")
                p.next_close_ms = start
            if ts > p.last_event_ms:
                p.last_event_ms = ts
            self.dirty.add(pid)
            c = p.open.get(start)
            if c is None:
                c = p.open[start] = _zeros()
        if isinstance(c, array):
            c[CARTS if ev.action == "add_to_cart" else VIEWS] += 1
            return None
        return c

    def admit_order(self, unit_id: int, stream: str, ts_ms: int, wall_ms: int, *,
                    forwarded: bool = False) -> DecodeError | None:
        """Check an order's time against the unit (before its items are applied). ``forwarded``: an order
        line from another unit, whose time the holds already account for (UnitWatermark.observe)."""
        u = self._admit(unit_id, stream, ts_ms, wall_ms, covered=forwarded)
        return u if isinstance(u, DecodeError) else None

    def apply_item(self, unit_id: int, ts_ms: int, item: OrderItem, source: str | None = None,
                   seq: int | None = None) -> DecodeError | None:
        """Count one order line of an admitted order (``source``/``seq`` identify it for replays)."""
        c = self._bucket(self.unit(unit_id), unit_id, item.product_id, item.category, ts_ms, source, seq)
        if isinstance(c, array):
            c[ORDERS] += 1
            c[UNITS] += item.quantity
            c[REVENUE] += item.quantity * item.unit_price
            return None
        return c

    def apply_review(self, unit_id: int, stream: str, ev: Review, wall_ms: int,
                     negative: float | None = None, offset: int | None = None, *,
                     positive: float | None = None, label: str | None = None) -> DecodeError | None:
        """Count a review, with its sentiment when it has been scored: P(negative), P(positive) (default
        1 - P(negative)) and the label (default: negative when P(negative) >= 0.5). Negative reviews are
        kept as evidence for the negative-review spike test."""
        u = self._admit(unit_id, stream, ev.ts_ms, wall_ms)
        if isinstance(u, DecodeError):
            return u
        c = self._bucket(u, unit_id, ev.product_id, None, ev.ts_ms, stream, offset)
        if not isinstance(c, array):
            return c
        c[REVIEWS] += 1
        if negative is not None:
            pos = 1.0 - negative if positive is None else positive
            is_negative = negative >= 0.5 if label is None else label == "negative"
            c[SCORED] += 1
            c[SENTIMENT_SUM] += pos - negative
            if is_negative:
                c[NEGATIVE] += 1
                p = self.index.get(ev.product_id) or u.products[ev.product_id]
                start = bucket_start(ev.ts_ms, self.spec.bucket_ms)
                review_spikes.add_evidence(p.neg_top.setdefault(start, []), negative, ev.review_id, ev.text,
                                           self.review_cfg.evidence_k)
        return None

    # -- closing -------------------------------------------------------------------------------

    def tick(self, wall_ms: int, holds: dict[int, int] | None = None, budget: int | None = None) -> list[Output]:
        """Advance every unit's watermark to ``wall_ms`` and close the buckets that became final.

        ``holds``: per unit, the event time of the oldest record on its way to it (see UnitWatermark.advance).
        ``budget``: stop after about this many product closes, with ``more`` set; the next call goes on where
        this one stopped (a product closes a bucket once), so a caller can let other work run in between.
        """
        out: list[Output] = self.pending
        self.pending = []
        self._wall_ms = wall_ms
        self.more = False
        closes = 0
        for unit_id, u in self.units.items():
            wm = u.watermark.advance(wall_ms, (holds or {}).get(unit_id))
            if wm is None:
                continue
            last = self.spec.last_final_start(wm)
            size = self.spec.bucket_ms
            if u.next_close_ms is None:
                starts = [p.next_close_ms for p in u.products.values()]
                if not starts and not u.wake:
                    continue
                # Not past the oldest bucket that is still open: a record admitted later may land there.
                u.next_close_ms = min(min(starts, default=last + size), last + size)
            while u.next_close_ms <= last:
                b = u.next_close_ms
                for p in list(u.products.values()):
                    if p.next_close_ms <= b:
                        self._close(u, p, b, out, wall_ms)
                        closes += 1
                        if budget is not None and closes >= budget:
                            self.more = True
                            break
                if self.more:
                    break
                # Jump over buckets no product has to close (all of them final): a record from 1970 must
                # not make the worker step through every minute since then.
                due = min((p.next_close_ms for p in u.products.values()), default=last + size)
                u.next_close_ms = max(b + size, min(due, last + size))
            if self.more:
                break
            u.frontier_ms = last + size
            if u.wake:
                self._wake_due(u, last, out, wall_ms)
        if self._candidates or self.max_hot is not None:
            self._park_idle()
        return out

    def _close(self, u: Unit, p: ProductState, b: int, out: list[Output], wall_ms: int) -> None:
        size = self.spec.bucket_ms
        counts = p.open.pop(b, None)
        if counts is None:
            if b - p.last_active_ms > self.live_ms and not p.incidents:
                del u.products[p.product_id]
                self.index.pop(p.product_id, None)
                if p.open:  # later buckets already arrived: start over, as if they had arrived after expiry
                    fresh = self._new_product(u, p.unit, p.product_id, p.category, min(p.open))
                    fresh.open, fresh.last_event_ms, fresh.neg_top = p.open, p.last_event_ms, p.neg_top
                else:
                    self.evicted.add(p.product_id)
                    self.dirty.discard(p.product_id)
                return
            counts = _NO_COUNTS
        else:
            p.minutes[b] = counts
            p.last_active_ms = b
            m_sum, h_sum = p.m_sum, p.h_sum
            for i in _INT_SLOTS:
                v = counts[i]
                if v:
                    m_sum[i] += v
                    h_sum[i] += v
        p.next_close_ms = b + size
        p.closes += 1
        review_spikes.on_close(p, b, size, self.review_cfg, out)  # before the hour-old bucket is pruned
        minutes = p.minutes
        if minutes:
            _prune(minutes, b - HOUR_MS, p.m_sum)
        hour = b - b % HOUR_MS
        if counts is not _NO_COUNTS and any(counts):
            h = p.hours.get(hour)
            if h is None:
                h = p.hours[hour] = _zeros()
            for i, v in enumerate(counts):
                h[i] += v
        if p.hours:
            _prune(p.hours, hour - DAY_MS, p.h_sum)
        det = p.det
        for signal, value in (("orders", counts[ORDERS]), ("clicks", counts[VIEWS] + counts[CARTS])):
            d = detectors.step(det[signal], value, b, size, self.det_cfg)
            p.last_scores[signal] = d.score
            if d.transition == "firing" and d.kind:
                alert = alerts_mod.new_alert(
                    alertname=d.kind, signal=signal, product_id=p.product_id, category=p.category,
                    severity=d.severity, window_start_ms=b, window_end_ms=b + size,
                    observed=value, expected=d.expected, score=d.score,
                )
                p.incidents[signal] = alert
                out.append(Output("alert", alert["dedup_key"], alert))
            elif d.transition == "resolved" and signal in p.incidents:
                alert = alerts_mod.resolve_alert(
                    p.incidents.pop(signal), window_start_ms=b, window_end_ms=b + size,
                    observed=value, expected=d.expected, score=d.score,
                )
                out.append(Output("alert", alert["dedup_key"], alert))
        forecast.update(p.fc, counts[UNITS], b, size, p.det["orders"], self.det_cfg, forecast.ForecastConfig())
        self.dirty.add(p.product_id)
        self.wall_updated[p.product_id] = wall_ms
        if b - p.last_active_ms <= FEATURE_TAIL_BUCKETS * size or p.incidents or p.features is None:
            rec = build_features(p, as_of_ms=b + size, bucket_ms=size, det_cfg=self.det_cfg)
            p.features = rec
            out.append(Output("features", p.product_id, rec))
        elif self.park and not p.open and not p.incidents:
            self._candidates.append(p)

    # -- queries -------------------------------------------------------------------------------

    def firing(self) -> Iterable[dict[str, Any]]:
        """Every open incident."""
        for p in self.index.values():
            yield from p.incidents.values()

    def stream_front(self, prefix: str, wall_ms: int) -> int | None:
        """The oldest event-time front among the active streams whose name starts with ``prefix`` (e.g.
        every ``orders/<n>`` stream of this worker): records such streams forward elsewhere are no older
        than this, less the allowed lateness. ``-2**62`` while one of them has not spoken yet."""
        front: int | None = None
        idle = self.spec.idle_timeout_ms
        for u in self.units.values():
            for name, clock in u.watermark.streams.items():
                if not name.startswith(prefix) or wall_ms - clock.last_seen_wall_ms >= idle:
                    continue
                if clock.max_ts_ms is None:
                    return -(2**62)
                front = clock.max_ts_ms if front is None else min(front, clock.max_ts_ms)
        return front

    def watermarks(self) -> dict[int, int | None]:
        return {k: u.watermark.watermark_ms for k, u in self.units.items()}
