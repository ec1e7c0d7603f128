"""Seeded customer journeys with their ground truth: the triggers the episodes were built to cause.

Pure (no I/O, no clock). Each customer gets a plan of sessions more than a day apart, so episodes do
not touch: repeat purchases on a personal cycle, abandoned carts (some rescued by an order in time,
one exactly at the deadline), browse loops (some carted or bought after all), and views of products
that later start a demand surge. The truth is written down while building those episodes, from the
rules in :mod:`streamproc.customers`' docstring, never by running the engine.

    g = generate(5_000, seed=7)
    g.clicks, g.orders   # contract-shaped event dicts, each stream in time order
    g.alerts             # demand_surge alert records (firing, repeats, resolved), in event-time order
    g.truth              # [{"kind", "user_id", "episode", "ts", "product_ids"}, ...]
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from .alerts import new_alert, resolve_alert
from .customer_state import DAY_MS, HOUR_MS, MINUTE_MS

__all__ = ["Generated", "generate", "DEFAULT_START_MS"]

DEFAULT_START_MS = 1_767_225_600_000  # 2026-01-01T00:00Z
CART_ABANDON_MS, SESSION_GAP_MS, INTEREST_MS, WIN_FACTOR = HOUR_MS, 30 * MINUTE_MS, 7 * DAY_MS, 3.0
"""The engine's default rules, which the truth below follows."""


@dataclass
class Generated:
    """A run of customer traffic and what it should trigger."""

    start_ms: int
    end_ms: int
    """Tick the engine to here: the truth holds the triggers due before it."""
    clicks: list[dict[str, Any]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)


class _Builder:
    def __init__(self, seed: int, start_ms: int, days: int, n_products: int, n_categories: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.g = Generated(start_ms, start_ms + days * DAY_MS)
        self.categories = [f"cat{i:02d}" for i in range(n_categories)]
        self.products = [f"P{i:04d}" for i in range(n_products)]
        self.category = {p: self.categories[i % n_categories] for i, p in enumerate(self.products)}
        self.price = {p: round(self.rng.uniform(3, 200), 2) for p in self.products}
        self.surges: dict[str, list[int]] = {}
        self.n_click = self.n_order = 0

    # -- events --------------------------------------------------------------------------------

    def click(self, uid: str, sid: str, ts: int, pid: str, action: str = "view") -> None:
        self.n_click += 1
        self.g.clicks.append({"event_id": f"c{self.seed}-{self.n_click}", "ts": ts, "user_id": uid,
                              "session_id": sid, "product_id": pid, "category": self.category[pid],
                              "action": action})

    def order(self, uid: str, ts: int, lines: dict[str, int]) -> None:
        self.n_order += 1
        items = [{"product_id": p, "quantity": q, "unit_price": self.price[p], "category": self.category[p]}
                 for p, q in lines.items()]
        self.g.orders.append({"order_id": f"o{self.seed}-{self.n_order}", "ts": ts, "user_id": uid,
                              "items": items, "currency": "EUR"})

    def truth(self, kind: str, uid: str, episode: str, ts: int, product_ids: list[str] | None) -> None:
        if ts < self.g.end_ms:
            self.g.truth.append({"kind": kind, "user_id": uid, "episode": episode, "ts": ts,
                                 "product_ids": product_ids})

    def browse(self, uid: str, sid: str, t: int, pids: list[str],
               loops: dict[str, int] | None = None) -> tuple[int, int]:
        """Views of ``pids`` (each once or twice) and of ``loops`` (that often), shuffled, after ``t``;
        the first and last view's times."""
        seq = [p for p in pids for _ in range(self.rng.randint(1, 2))]
        seq += [p for p, n in (loops or {}).items() for _ in range(n)]
        self.rng.shuffle(seq)
        first = t + self.rng.randint(20_000, 5 * MINUTE_MS)
        t = first
        for i, p in enumerate(seq):
            if i:
                t += self.rng.randint(20_000, 5 * MINUTE_MS)
            self.click(uid, sid, t, p)
        return first, t

    # -- surges --------------------------------------------------------------------------------

    def plan_surges(self, n: int) -> None:
        g = self.g
        for pid in self.rng.sample(self.products, n):
            a = g.start_ms + self.rng.randint(8, 25) * DAY_MS + self.rng.randint(0, 1439) * MINUTE_MS
            starts = [a, a + self.rng.randint(12, 25) * DAY_MS]
            self.surges[pid] = starts
            for a in starts:
                common: dict[str, Any] = {"alertname": "demand_surge", "product_id": pid, "category": self.category[pid],
                          "severity": "warning", "observed": 30.0, "expected": 3.0, "score": 0.99}
                fire = new_alert(signal="orders", window_start_ms=a - MINUTE_MS, window_end_ms=a, **common)
                clicks = new_alert(signal="clicks", window_start_ms=a + MINUTE_MS, window_end_ms=a + 2 * MINUTE_MS,
                                   **common)
                repeat = dict(fire, window={"start_ms": a, "end_ms": a + MINUTE_MS})  # same incident again
                done = [resolve_alert(x, window_start_ms=a + 20 * MINUTE_MS, window_end_ms=a + 21 * MINUTE_MS,
                                      observed=3.0, expected=3.0, score=0.1) for x in (fire, clicks)]
                g.alerts += [fire, repeat, clicks, *done]
        g.alerts.sort(key=lambda x: x["window"]["end_ms"])

    # -- customers -----------------------------------------------------------------------------

    def customer(self, n: int) -> None:
        rng, g = self.rng, self.g
        uid = f"C{n:05d}"
        home = rng.sample(self.categories, 2)
        mine = [p for p in self.products if self.category[p] in home and p not in self.surges]
        busy: list[int] = []
        orders: list[int] = []
        k = 0

        def free(t: int) -> bool:
            return g.start_ms <= t < g.end_ms - 3 * DAY_MS and all(abs(t - b) > 2 * DAY_MS for b in busy)

        def slot() -> int | None:
            for _ in range(30):
                t = g.start_ms + rng.randint(0, (g.end_ms - g.start_ms) // MINUTE_MS) * MINUTE_MS
                if free(t):
                    busy.append(t)
                    return t
            return None

        def sid() -> str:
            nonlocal k
            k += 1
            return f"s{self.seed}-{uid}-{k}"

        if rng.random() < 0.25:  # viewed a product that later surges (or viewed it too long before)
            pid = rng.choice(sorted(self.surges))
            a = rng.choice(self.surges[pid])
            before = rng.choice([rng.randint(HOUR_MS, INTEREST_MS - HOUR_MS), INTEREST_MS,
                                 rng.randint(INTEREST_MS + HOUR_MS, INTEREST_MS + 3 * DAY_MS)])
            t0 = a - before - 3 * MINUTE_MS
            if free(t0):
                busy.append(t0)
                s = sid()
                self.click(uid, s, t0, rng.choice(mine))
                self.click(uid, s, t0 + MINUTE_MS, rng.choice(mine))
                self.click(uid, s, a - before, pid)
                for b in self.surges[pid]:
                    if b - INTEREST_MS <= a - before <= b:
                        self.truth("interest_surging", uid, f"{pid}@{b}", b, [pid])
        if rng.random() < 0.45:  # repeat buyer on a cycle
            cycle = rng.randint(3, 9) * DAY_MS
            t = g.start_ms + rng.randint(0, 8 * DAY_MS)
            for _ in range(rng.randint(2, 6)):
                if not free(t):
                    break
                busy.append(t)
                s = sid()
                pids = rng.sample(mine, 3)
                _first, last = self.browse(uid, s, t, pids[:2])
                lines = {pids[0]: 1}
                self.click(uid, s, last + 30_000, pids[0], "add_to_cart")
                if rng.random() < 0.3:  # viewed three times and bought without carting: no browse trigger
                    for _ in range(3):
                        last += 40_000
                        self.click(uid, s, last + 30_000, pids[2])
                    lines[pids[2]] = 2
                orders.append(last + 30_000 + rng.randint(1, 10) * MINUTE_MS)
                self.order(uid, orders[-1], lines)
                t += int(cycle * rng.uniform(0.9, 1.1))
        for _ in range(rng.choice([0, 0, 1, 2])):  # abandoned carts, some rescued in time
            slot_t = slot()
            if slot_t is None:
                break
            t = slot_t
            s = sid()
            pids = rng.sample(mine, 3)
            first, last = self.browse(uid, s, t, pids)
            self.click(uid, s, last + 30_000, pids[0], "add_to_cart")
            _, last = self.browse(uid, s, last + 30_000, pids[:1])  # the carted one again
            due = last + CART_ABANDON_MS
            after = rng.choice([None, None, 20 * MINUTE_MS, CART_ABANDON_MS, CART_ABANDON_MS + 1, DAY_MS])
            if after is not None:
                orders.append(last + after)
                self.order(uid, last + after, {pids[0]: 1})
            if after is None or after > CART_ABANDON_MS:
                self.truth("cart_abandoned", uid, str(first), due, None)
        for _ in range(rng.choice([0, 0, 1, 2])):  # browse loops
            slot_t = slot()
            if slot_t is None:
                break
            t = slot_t
            s = sid()
            pids = rng.sample(mine, 4)
            variant = rng.choice(["loop", "loop", "two", "carted"])
            loops = {pids[0]: 2 if variant == "two" else rng.randint(3, 5)}
            if variant == "loop" and rng.random() < 0.3:
                loops[pids[1]] = 3
            first, last = self.browse(uid, s, t, pids[2:], loops)
            if variant == "carted":
                self.click(uid, s, last + 30_000, pids[0], "add_to_cart")
                orders.append(last + 60_000)
                self.order(uid, last + 60_000, {pids[0]: 1})
            elif variant == "loop":
                self.truth("browse_abandoned", uid, str(first), last + SESSION_GAP_MS, sorted(loops))
        for _ in range(rng.randint(1, 3)):  # plain browsing
            slot_t = slot()
            if slot_t is None:
                break
            t = slot_t
            self.browse(uid, sid(), t, rng.sample(mine, rng.randint(1, 4)))
        self._win_back_truth(uid, sorted(orders))

    def _win_back_truth(self, uid: str, orders: list[int]) -> None:
        """After each order from the second on: lapsed if the next order comes later than
        WIN_FACTOR x the median of the (last ten) gaps so far."""
        for i in range(1, len(orders)):
            gaps = [b - a for a, b in zip(orders[max(0, i - 10):i], orders[max(1, i - 9):i + 1], strict=True)]
            gap = statistics.median(gaps)
            if not gap:
                continue
            due = orders[i] + int(WIN_FACTOR * gap)
            if i + 1 == len(orders) or orders[i + 1] > due:
                self.truth("win_back", uid, str(orders[i]), due, None)


def generate(customers: int = 5_000, *, seed: int = 7, start_ms: int = DEFAULT_START_MS, days: int = 60,
             products: int = 600, categories: int = 12, surge_products: int = 20) -> Generated:
    """Build ``customers`` journeys over ``days`` of event time from ``start_ms``, with their truth."""
    b = _Builder(seed, start_ms, days, products, categories)
    b.plan_surges(surge_products)
    for n in range(customers):
        b.customer(n)
    g = b.g
    g.clicks.sort(key=lambda c: c["ts"])
    g.orders.sort(key=lambda o: o["ts"])
    g.truth.sort(key=lambda r: (r["ts"], r["user_id"], r["kind"], r["episode"]))
    return g
