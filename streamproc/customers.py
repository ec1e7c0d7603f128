"""The customer engine: live per-customer features and marketing triggers, in event time.

Pure like :mod:`streamproc.demand`: no Kafka, no clock. A runner hands it decoded clicks and orders
with a per-stream sequence number, the product side's alerts, and the watermark; everything the engine
emits comes out of :meth:`CustomerEngine.tick` (and :meth:`~CustomerEngine.erase`) as :class:`Output`
values, so the same records give the same triggers whatever the batching or replay speed.

How it keeps that promise: a record is only *received* when it arrives (buffered in its customer's
state, its sequence number noted); it is *applied* when the watermark passes it. ``tick(wm)`` then
replays each customer's buffered records and timers in event-time order up to ``wm``, with product
alerts interleaved at their own event time. A record at ``ts`` is applied at the first tick with
``wm > ts``; a timer due at ``t`` fires at the first tick with ``wm > t``, unless a record at or
before ``t`` cancels it. The runner's side of the contract: every record with ``ts < wm`` has been
given before ``tick(wm)``; later ones are late, and dead-lettering them is the runner's business
(a late record given anyway is applied at the next tick, with no promise about determinism).

Triggers (``Output("trigger", user_id, value)``), each once per episode, with
``trigger_id = sha256(kind:user_id:episode)``:

    cart_abandoned     items were carted in a session and no order came within cart_abandon_ms of its
                       last click (episode: the session's start)
    browse_abandoned   the session viewed a product >= browse_min_views times, never carted or bought it;
                       due when the session ends (episode: the session's start)
    win_back           no order for win_back_factor x the usual gap, after >= 2 orders (episode: the
                       last order's time)
    interest_surging   a product viewed within interest_window_ms starts a demand surge (episode:
                       product@surge time)
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from .customer_state import (
    CustomerConfig,
    CustomerState,
    apply_click,
    apply_order,
    build_features,
    end_session,
    start_session,
    usual_gap_ms,
    win_back_due,
)
from .events import Click, Order

__all__ = ["CustomerEngine", "CustomerConfig", "CustomerState", "Output", "TRIGGER_KINDS", "trigger_id"]

TRIGGER_KINDS = ("cart_abandoned", "browse_abandoned", "win_back", "interest_surging")
_CLICK, _ORDER = 0, 1
_SESSION, _CART, _WIN, _TTL = range(4)
"""Timers of a customer; due at the same time, they fire in this order."""


@dataclass(frozen=True, slots=True)
class Output:
    """Something the engine emits: a customer's features record (``value`` None: forget the customer,
    a tombstone for the compacted topic) or a trigger."""

    kind: str  # "features" | "trigger"
    key: str  # user_id
    value: dict[str, Any] | None


def _trigger_order(o: Output) -> tuple[Any, ...]:
    v = o.value or {}
    return (v["ts"], o.key, v["kind"], v["episode"])


def trigger_id(kind: str, user_id: str, episode: str) -> str:
    """One id per episode, derived from content: a replay re-emits the same id and receivers dedupe."""
    return hashlib.sha256(f"{kind}:{user_id}:{episode}".encode()).hexdigest()[:32]


class CustomerEngine:
    """Per-customer state, event-time sessions and timers, triggers and features records."""

    def __init__(self, config: CustomerConfig | None = None, *,
                 trending: Callable[[str], Sequence[str]] | None = None) -> None:
        """``trending(category)``: product ids trending now in a category, best first, for
        ``recommended``; by default the products with a demand surge firing (from ``on_product_alert``)."""
        self.cfg = config or CustomerConfig()
        self.customers: dict[str, CustomerState] = {}
        self.watermark_ms: int | None = None
        self.dirty: set[str] = set()
        """Customers whose state changed (the runner writes their snapshots and clears this)."""
        self.evicted: set[str] = set()
        """Customers forgotten (retention or erasure): the runner deletes their snapshots and clears this."""
        self.erased: dict[str, int] = {}
        """Erased user_id -> event time until which their records are ignored (erasure + retention)."""
        self.prices: dict[str, tuple[int, float]] = {}
        """Product -> (time, unit price) of the newest order line seen: prices carts."""
        self.surging: dict[str, dict[str, Any]] = {}
        """Product -> {"category", "since_ms", "keys": firing dedup keys} while a demand surge fires."""
        self.alerts: list[tuple[int, int, dict[str, Any]]] = []
        """Product alerts received, not yet reached by the watermark: (event time, arrival, alert)."""
        self._alert_n = 0
        self._trending = trending or self.trending
        self._agenda: list[tuple[int, str]] = []
        self._queued: dict[str, int] = {}
        self._changed: set[str] = set()
        self._features_at: int | None = None
        """Watermark of the last features emission (see CustomerConfig.features_interval_ms)."""
        self._out: list[Output] = []
        self._by_category: dict[str | None, list[str]] | None = None
        """:meth:`trending` per category, built once per change of ``surging`` (features ask per customer)."""

    # -- input ---------------------------------------------------------------------------------

    def process_click(self, ev: Click, seq: int) -> bool:
        """Receive a click (``seq``: its position in the clicks stream); False when it is ignored: seen
        before, for an erased customer, without a user, or older than the retention."""
        rec = (ev.ts_ms, _CLICK, seq, ev.product_id, ev.category, ev.action, ev.session_id)
        return self._receive(ev.user_id, rec)

    def process_order(self, order: Order, seq: int) -> bool:
        """Receive an order (``seq``: its position in the orders stream); False when it is ignored."""
        items = tuple((it.product_id, int(it.quantity), float(it.unit_price), it.category) for it in order.items
                      if it.product_id)
        return self._receive(order.user_id, (order.ts_ms, _ORDER, seq, order.order_id, items))

    def _receive(self, user_id: str | None, rec: tuple[Any, ...]) -> bool:
        if not user_id or not isinstance(rec[0], int) or user_id in self.erased:
            return False
        wm = self.watermark_ms
        if wm is not None and rec[0] < wm - self.cfg.retention_ms:
            return False  # would be forgotten at once; and must not bring an erased customer back
        c = self.customers.get(user_id)
        if c is None:
            c = self.customers[user_id] = CustomerState(user_id, last_ms=rec[0])
        seq = rec[2]
        if rec[1] == _CLICK:
            if seq <= c.applied_click:
                return False
            c.applied_click = seq
        else:
            if seq <= c.applied_order:
                return False
            c.applied_order = seq
        if c.pending is None:
            c.pending = []
        bisect.insort(c.pending, rec)
        self._schedule(c, rec[0])
        self.dirty.add(user_id)
        return True

    def on_product_alert(self, alert: dict[str, Any]) -> bool:
        """Receive an alert of the product engine; demand surges matter (interest_surging, trending).
        It takes effect at its window's end in event time. False when it is not a usable demand alert."""
        try:
            name = alert["labels"]["alertname"]
            end = int(alert["window"]["end_ms"])
            alert["labels"]["product_id"]
        except (KeyError, TypeError, ValueError):
            return False
        if name != "demand_surge":
            return False
        self._alert_n += 1
        self.alerts.append((end, self._alert_n, alert))
        return True

    # -- time ----------------------------------------------------------------------------------

    def tick(self, watermark_ms: int) -> list[Output]:
        """Apply what the watermark passed: records, timers and alerts before ``watermark_ms``, in event
        time order. Returns the triggers that became due (by time) and the features of the customers
        that changed (by user_id)."""
        wm = watermark_ms if self.watermark_ms is None else max(watermark_ms, self.watermark_ms)
        self.alerts.sort(key=lambda a: (a[0], a[1]))
        while self.alerts and self.alerts[0][0] < wm:
            at, _n, alert = self.alerts.pop(0)
            self._advance(at + 1)
            self._apply_alert(at, alert)
        self._advance(wm)
        self.watermark_ms = wm
        for uid in [u for u, until in self.erased.items() if until < wm]:
            del self.erased[uid]
        out = sorted((o for o in self._out if o.value is not None), key=_trigger_order)
        out += sorted((o for o in self._out if o.value is None), key=lambda o: o.key)  # retention tombstones
        self._out = []
        interval = self.cfg.features_interval_ms
        if self._features_at is None or wm // interval > self._features_at // interval:
            for uid in sorted(self._changed):
                c = self.customers.get(uid)
                if c is not None:
                    out.append(Output("features", uid, self._features(c, wm)))
            self._changed.clear()
            self._features_at = wm
        return out

    def _schedule(self, c: CustomerState, at: int | None) -> None:
        if at is not None and at < self._queued.get(c.user_id, 1 << 62):
            self._queued[c.user_id] = at
            heapq.heappush(self._agenda, (at, c.user_id))

    def _advance(self, limit: int) -> None:
        """Apply everything due before ``limit``, one record or timer at a time across all customers in
        (time, user_id) order: shared state (prices) is then the same whatever the batching."""
        agenda = self._agenda
        while agenda and agenda[0][0] < limit:
            at, uid = heapq.heappop(agenda)
            if self._queued.get(uid) != at:
                continue  # superseded by an earlier entry
            del self._queued[uid]
            c = self.customers.get(uid)
            if c is not None and self._step(c):
                self._changed.add(uid)
                self.dirty.add(uid)
                self._schedule(c, self._next_time(c))

    def _timer(self, c: CustomerState) -> tuple[int, int]:
        """The customer's next timer: (due, which); forgetting it after the retention is always pending."""
        cfg = self.cfg
        best = (c.last_ms + cfg.retention_ms, _TTL)
        if c.s_start is not None:
            best = min(best, (c.s_last + cfg.session_gap_ms, _SESSION))
        if c.cart_due is not None:
            best = min(best, (c.cart_due, _CART))
        if c.n_orders >= cfg.win_back_min_orders:
            win = win_back_due(c, cfg)
            if win is not None:
                best = min(best, (win, _WIN))
        return best

    def _next_time(self, c: CustomerState) -> int:
        due = self._timer(c)[0]
        return min(c.pending[0][0], due) if c.pending else due

    def _step(self, c: CustomerState) -> bool:
        """Apply the customer's next record or timer (a record first when both are due at the same
        time: an order at the deadline still counts); False when the customer was forgotten."""
        rec = c.pending[0] if c.pending else None
        due, which = self._timer(c)
        if rec is not None and rec[0] <= due:
            c.pending.pop(0)  # type: ignore[union-attr]
            if not c.pending:
                c.pending = None
            self._apply(c, rec)
        elif which == _TTL:
            self._forget(c.user_id)
            self._out.append(Output("features", c.user_id, None))
            return False
        else:
            self._fire(c, due, which)
        return True

    def _apply(self, c: CustomerState, rec: tuple[Any, ...]) -> None:
        ts = rec[0]
        if rec[1] == _ORDER:
            for pid, _qty, price, _cat in rec[4]:
                if (ts, price) >= self.prices.get(pid, (-1, 0.0)):
                    self.prices[pid] = (ts, price)
            apply_order(c, ts, rec[4], self.cfg)
            return
        _ts, _r, _seq, pid, category, action, sid = rec
        if c.s_start is not None:
            if ts - c.s_last > self.cfg.session_gap_ms:  # only for a late record: the timer ends sessions
                self._end_session(c, c.s_last + self.cfg.session_gap_ms)
            elif sid and c.s_id and sid != c.s_id:
                self._end_session(c, ts)
        if c.s_start is None:
            start_session(c, ts, sid)
        elif sid and not c.s_id:
            c.s_id = sid
        apply_click(c, ts, pid, category, action, self.cfg)

    def _fire(self, c: CustomerState, due: int, which: int) -> None:
        if which == _SESSION:
            self._end_session(c, due)
        elif which == _CART:
            c.cart_due = None
            if c.cart:
                c.cart_done = c.cart_ep
                priced = [q * self.prices[p][1] for p, q in c.cart.items() if p in self.prices]
                value = sum(priced) if priced else None
                self._trigger(c, "cart_abandoned", due, str(c.cart_ep), sorted(c.cart),
                              "items left in the cart, no order within "
                              f"{self.cfg.cart_abandon_ms // 60_000} min of the last click",
                              session_start_ms=c.cart_ep, cart_value=value)
        else:
            last = c.orders[-1][0]
            c.win_done = last
            gap = usual_gap_ms(c) or 0.0
            self._trigger(c, "win_back", due, str(last), list(reversed(c.bought or {}))[:5],
                          f"no order for {(due - last) / 86_400_000:.1f} days, usually every "
                          f"{gap / 86_400_000:.1f}", last_order_ms=last, usual_gap_ms=gap)

    def _end_session(self, c: CustomerState, at: int) -> None:
        start = c.s_start
        looped = end_session(c, self.cfg)
        if looped:
            self._trigger(c, "browse_abandoned", at, str(start), looped,
                          f"viewed {self.cfg.browse_min_views}+ times in one session, never carted",
                          session_start_ms=start)

    def _trigger(self, c: CustomerState, kind: str, at: int, episode: str, product_ids: list[str],
                 reason: str, **extra: Any) -> None:
        value = {"trigger_id": trigger_id(kind, c.user_id, episode), "kind": kind, "user_id": c.user_id,
                 "ts": at, "episode": episode, "product_ids": product_ids, "reason": reason, **extra}
        self._out.append(Output("trigger", c.user_id, value))

    def _apply_alert(self, at: int, alert: dict[str, Any]) -> None:
        labels = alert["labels"]
        pid = labels["product_id"]
        key = alert.get("dedup_key") or f"{labels['alertname']}:{labels.get('signal')}:{pid}"
        s = self.surging.get(pid)
        if alert.get("status") == "resolved":
            if s is not None:
                s["keys"] = [k for k in s["keys"] if k != key]
                if not s["keys"]:
                    del self.surging[pid]
                    self._by_category = None
            return
        if s is not None:
            if key not in s["keys"]:
                s["keys"].append(key)
            return
        self.surging[pid] = {"category": labels.get("category"), "since_ms": at, "keys": [key]}
        self._by_category = None
        cut = at - self.cfg.interest_window_ms
        for uid, c in self.customers.items():
            seen = c.seen.get(pid)
            if seen is not None and cut <= seen <= at:
                self._trigger(c, "interest_surging", at, f"{pid}@{at}", [pid],
                              "a product viewed recently started a demand surge",
                              last_view_ms=seen, alert_id=alert.get("alert_id"))
                self._changed.add(uid)

    # -- queries and privacy ---------------------------------------------------------------------

    def trending(self, category: str) -> list[str]:
        """Products of ``category`` with a demand surge firing, the newest surge first."""
        if self._by_category is None:
            by: dict[str | None, list[str]] = {}
            for _t, pid, cat in sorted((-s["since_ms"], pid, s["category"]) for pid, s in self.surging.items()):
                by.setdefault(cat, []).append(pid)
            self._by_category = by
        return self._by_category.get(category, [])

    def features(self, user_id: str) -> dict[str, Any] | None:
        """The customer's features record as of the watermark; None for an unknown or erased customer."""
        c = self.customers.get(user_id)
        return None if c is None else self._features(c, self.watermark_ms or c.last_ms)

    def _features(self, c: CustomerState, as_of_ms: int) -> dict[str, Any]:
        return build_features(c, as_of_ms, self.cfg, self.prices, self._trending)

    def erase(self, user_id: str) -> list[Output]:
        """Forget a customer now (right to erasure): state and pending records gone, no further triggers,
        and their records ignored for ``retention_ms`` of event time (so a replay cannot bring them back;
        older records are ignored anyway). Returns the features tombstone."""
        self._forget(user_id)
        self.erased[user_id] = (self.watermark_ms or 0) + self.cfg.retention_ms
        self._out = [o for o in self._out if o.key != user_id]
        return [Output("features", user_id, None)]

    def _forget(self, user_id: str) -> None:
        self.customers.pop(user_id, None)
        self._queued.pop(user_id, None)
        self._changed.discard(user_id)
        self.dirty.discard(user_id)
        self.evicted.add(user_id)

    # -- snapshots -------------------------------------------------------------------------------

    def snapshot(self, user_id: str) -> bytes:
        """One customer's state as bytes, for a changelog-backed table keyed by user_id."""
        return orjson.dumps(self.customers[user_id])  # a slots dataclass: its fields in order, as to_dict()

    def restore(self, data: bytes) -> None:
        """Put back a customer read from the table."""
        c = CustomerState.from_dict(orjson.loads(data))
        self.customers[c.user_id] = c
        self._schedule(c, self._next_time(c))

    def snapshot_shared(self) -> bytes:
        """The engine-wide state (watermark, erasure markers, prices, surges, pending alerts) as bytes."""
        return orjson.dumps({
            "watermark_ms": self.watermark_ms, "erased": self.erased,
            "prices": [[p, t, v] for p, (t, v) in self.prices.items()],
            "surging": self.surging, "alerts": [[t, n, a] for t, n, a in self.alerts], "alert_n": self._alert_n,
        })

    def restore_shared(self, data: bytes) -> None:
        """Put back what :meth:`snapshot_shared` saved (before or after restoring the customers)."""
        d = orjson.loads(data)
        self.watermark_ms = d["watermark_ms"]
        self.erased = d["erased"]
        self.prices = {p: (t, v) for p, t, v in d["prices"]}
        self.surging = d["surging"]
        self._by_category = None
        self.alerts = [(t, n, a) for t, n, a in d["alerts"]]
        self._alert_n = d["alert_n"]
