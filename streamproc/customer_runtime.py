"""The customer side of a worker: customer events in, :class:`~streamproc.customers.CustomerEngine` per unit,
triggers and features out.

Clicks and orders are partitioned by product; a customer's state needs all of their records in one
place. So the runtime forwards a compact copy of every valid click and order (admitted, not replayed,
not dead-lettered, with a ``user_id``) to the internal topic ``<app id>-customer-events``, keyed by
``user_id``. Partition *p* of that topic is read by the owner of unit *p* (range assignor, like every
input topic) and feeds that unit's own engine, with the record's offset as its sequence number: a
record read again after a crash is a no-op. Each copy also names the input stream and offset it was read
from (``src``, ``o``), kept per customer: a copy forwarded again after the forwarding worker crashed (its
input read again from the committed offset) is a no-op too.

Time across the workers of a group (the same scheme as the order lines' fronts.py): a customer unit may
only pass event time *t* once no product unit can still forward it a record (or a product alert) older
than *t*. Its own worker's product units are known from memory (:func:`products_final`, and the copies
forwarded and not read back); each other worker writes, per unit it owns, a *customer front marker*
(key prefix :data:`FRONT_PREFIX`) to the customer-events partitions it does not own: the event time
before which that unit will forward nothing more (:func:`unit_front`). A marker is written after the
copies it covers, by the same producer, to the same partition, so it is read after them; a unit waits
for a marker from every unit owned elsewhere.

Product alerts: ``demand_surge`` alerts go to the customer engines of the worker that raised them in
process, and to every customer-events partition owned elsewhere as an *alert record* (key prefix
:data:`ALERT_PREFIX`), written before the marker whose front passes the alert's window end: so every
customer unit receives every surge before its watermark passes the surge's time, whichever worker
detected it. An alert read again (after a crash) whose time the watermark has passed was applied already
and is ignored.

Outputs: triggers to ``marketing-triggers`` and features to the compacted ``customer-features`` (key
``user_id``; a tombstone when a customer is erased or expires). State: per unit, the changed customers'
snapshots and the engine's shared state (under :data:`SHARED_KEY`) in the compacted
``<app id>-customers-changelog``, partition = unit, written at checkpoint step 2 with the products'.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from .admission import partition_for
from .customer_state import CustomerConfig
from .customers import CustomerEngine, Output
from .events import MAX_UNIT_PRICE, Click, DecodeError, Order, OrderItem
from .fronts import WAIT, Fronts, InFlight, key_for
from .windows import UnitWatermark, WindowSpec

__all__ = ["CUSTOMER_EVENTS", "SHARED_KEY", "FRONT_PREFIX", "ALERT_PREFIX", "Customers", "encode_click",
           "encode_order", "encode_alert", "products_final", "unit_front"]

CUSTOMER_EVENTS = "customer-events"
SHARED_KEY = b"\x00shared"
"""Changelog key of a unit's engine-wide state (user ids never start with NUL)."""
FRONT_PREFIX = b"\x00cfront/"
"""Key prefix of the customer front markers on customer-events."""
ALERT_PREFIX = b"\x00alert/"
"""Key prefix of the product alerts broadcast on customer-events."""

SendFn = Callable[[str, bytes | None, bytes | None, Any], Awaitable[None]]


def encode_click(ev: Click, w: str, n: int, src: str | None = None, o: int | None = None) -> bytes:
    """The compact customer-events copy of a click; ``w``/``n``: the forwarding runtime and its count;
    ``src``/``o``: the input stream and offset it was read from."""
    return orjson.dumps({"k": "c", "ts": ev.ts_ms, "u": ev.user_id, "id": ev.event_id, "p": ev.product_id,
                         "c": ev.category, "a": ev.action, "s": ev.session_id, "w": w, "n": n, "src": src, "o": o})


def encode_order(ev: Order, w: str, n: int, src: str | None = None, o: int | None = None) -> bytes:
    return orjson.dumps({"k": "o", "ts": ev.ts_ms, "u": ev.user_id, "id": ev.order_id,
                         "i": [[it.product_id, it.quantity, it.unit_price, it.category] for it in ev.items],
                         "w": w, "n": n, "src": src, "o": o})


def encode_alert(alert: dict[str, Any]) -> bytes:
    """The customer-events copy of a product alert (an alert record, keyed with :data:`ALERT_PREFIX`)."""
    return orjson.dumps({"k": "a", "alert": alert})


def _opt_str(v: Any) -> bool:
    return v is None or type(v) is str


def _event(d: Any) -> Click | Order:
    """The click or order of a parsed customer-events copy (KeyError/TypeError/... on a wrong shape)."""
    kind, ts, uid, rid = d["k"], d["ts"], d["u"], d["id"]
    if type(ts) is not int or type(uid) is not str or not uid or type(rid) is not str:
        raise TypeError("ts, u, id")
    if kind == "c":
        pid, cat, action, sid = d["p"], d.get("c"), d.get("a", "view"), d.get("s")
        if type(pid) is not str or not _opt_str(cat) or action not in ("view", "add_to_cart") or not _opt_str(sid):
            raise TypeError("p, c, a, s")
        return Click(rid, ts, uid, pid, cat, action, sid)
    if kind == "o":
        items = []
        for pid, qty, price, cat in d["i"]:
            if (type(pid) is not str or type(qty) is not int or qty < 1 or type(price) not in (int, float)
                    or not 0 <= price <= MAX_UNIT_PRICE or not _opt_str(cat)):
                raise TypeError("i")
            items.append(OrderItem(pid, qty, float(price), cat))
        return Order(rid, ts, uid, tuple(items), None)
    raise TypeError("k")


def products_final(units: Iterable[UnitWatermark], spec: WindowSpec, wall_ms: int) -> int | None:
    """Event time before which every product unit is final (the start of its first bucket still open): a
    record admitted from now on is no older, so neither is its customer-events copy. A unit without a
    watermark holds it while one of its streams is active (e.g. a backlog not fetched yet) and is left out
    once all are idle, as an idle stream is within a unit. None when nothing is known yet."""
    final = None
    for u in units:
        wm = u.watermark_ms
        if wm is None:
            if any(wall_ms - c.last_seen_wall_ms < spec.idle_timeout_ms for c in u.streams.values()):
                return None
            continue
        f = spec.last_final_start(wm) + spec.bucket_ms
        final = f if final is None else min(final, f)
    return final


def unit_front(unit: UnitWatermark | None, spec: WindowSpec, wall_ms: int) -> int | None:
    """The front a worker publishes for one of its product units: the event time before which the unit
    will forward no more customer events (or alerts), as :func:`products_final` for that unit alone;
    ``WAIT`` while it knows nothing yet and a stream is active, None while it knows nothing and is idle."""
    if unit is None:
        return None
    wm = unit.watermark_ms
    if wm is None:
        active = any(wall_ms - c.last_seen_wall_ms < spec.idle_timeout_ms for c in unit.streams.values())
        return WAIT if active else None
    return spec.last_final_start(wm) + spec.bucket_ms


class Customers:
    """One :class:`CustomerEngine` per unit of this worker, their in-flight records and checkpoint data."""

    def __init__(self, config: CustomerConfig, partitions: int, instance: str) -> None:
        self.config = config
        self.partitions = partitions
        self.instance = instance
        self.engines: dict[int, CustomerEngine] = {}
        self.parked: dict[int, CustomerEngine] = {}
        """Engines of revoked units, until the assignment tells whether they come back."""
        self.in_flight: dict[int, InFlight] = {}
        """Per customer-events partition, (count, event time) of the records this worker forwarded there and
        has not read back yet: the partition's watermark may not pass them."""
        self.shared_dirty: set[int] = set()
        self.held: set[int] = set()
        """Units whose customer-events partition still has records from before the assignment to read (the
        runner keeps this): their customer watermark waits."""
        self.fronts = Fronts(partitions, FRONT_PREFIX)
        """Customer front markers read from the other workers, and the ones this worker sent."""
        self.alert_keys = [key_for(p, partitions, ALERT_PREFIX) for p in range(partitions)]
        self._n = itertools.count()

    def engine(self, unit: int) -> CustomerEngine:
        eng = self.engines.get(unit)
        if eng is None:
            eng = self.engines[unit] = CustomerEngine(self.config)
        return eng

    def unit_of(self, user_id: str) -> int:
        return partition_for(user_id, self.partitions)

    # -- forwarding ----------------------------------------------------------------------------

    def forward(self, ev: Click | Order, *, track: bool, src: str | None = None,
                offset: int | None = None) -> tuple[bytes, bytes] | None:
        """(key, value) of the customer-events copy of ``ev``; None without a user. ``track``: the target
        partition is this worker's (or every one is): hold its watermark until the copy is read back.
        ``src``/``offset``: where ``ev`` was read (a copy forwarded again after a crash is then a no-op)."""
        if not ev.user_id:
            return None
        n = next(self._n)
        if type(ev) is Click:
            value = encode_click(ev, self.instance, n, src, offset)
        else:
            value = encode_order(ev, self.instance, n, src, offset)  # type: ignore[arg-type]
        if track:
            self.in_flight.setdefault(self.unit_of(ev.user_id), InFlight()).append(n, ev.ts_ms)
        return ev.user_id.encode(), value

    def _read_back(self, partition: int, d: dict[str, Any]) -> None:
        """A copy read back: if this worker forwarded it, its partition's watermark no longer waits for it."""
        pending = self.in_flight.get(partition)
        if pending and d.get("w") == self.instance:
            n = d.get("n")
            if type(n) is int:
                pending.read_back(n)

    # -- time ----------------------------------------------------------------------------------

    def watermark(self, unit: int, products_final: int | None, remote: int | None = None) -> int | None:
        """The customer watermark of ``unit``: what this worker's product units have made final, held by
        this worker's forwarded records still in flight to the unit and by ``remote``, the oldest front of
        the units owned elsewhere (``WAIT`` until each has been heard from)."""
        if unit in self.held or remote == WAIT:
            return None
        q = self.in_flight.get(unit)
        oldest = q.oldest() if q is not None else None
        wm = products_final
        if wm is not None and oldest is not None:
            wm = min(wm, oldest)
        if wm is not None and remote is not None:
            wm = min(wm, remote)
        return wm

    def tick(self, products_final: int | None, remote: Iterable[int] = ()) -> list[Output]:
        """Advance every engine to its watermark; ``remote``: the units owned by other workers."""
        holds = self.fronts.holds(self.engines, set(remote))
        out: list[Output] = []
        for unit in sorted(self.engines):
            eng = self.engines[unit]
            wm = self.watermark(unit, products_final, holds.get(unit))
            if wm is None or (eng.watermark_ms is not None and wm <= eng.watermark_ms and not eng.alerts):
                continue
            out += eng.tick(wm)
            self.shared_dirty.add(unit)
        return out

    def on_product_alert(self, alert: dict[str, Any]) -> None:
        for unit, eng in self.engines.items():
            if eng.on_product_alert(alert):
                self.shared_dirty.add(unit)

    def receive_alert(self, unit: int, raw: bytes | None) -> DecodeError | None:
        """An alert record read on ``unit``'s partition; ignored once the unit's watermark has passed its
        time (read or written again after a crash: it was applied then), a DecodeError when malformed."""
        try:
            alert = orjson.loads(raw or b"")["alert"]
            end = int(alert["window"]["end_ms"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return DecodeError("schema", f"bad alert record ({exc}): {(raw or b'')[:200]!r}")
        eng = self.engine(unit)
        if eng.watermark_ms is not None and end < eng.watermark_ms:
            return None
        if eng.on_product_alert(alert):
            self.shared_dirty.add(unit)
        return None

    # -- state ---------------------------------------------------------------------------------

    def drain(self) -> list[tuple[int, bytes, bytes | None]]:
        """(partition, key, snapshot or None) of what changed since the last call, for the changelog."""
        changes: list[tuple[int, bytes, bytes | None]] = []
        for unit, eng in sorted(self.engines.items()):
            changes += [(unit, uid.encode(), None) for uid in sorted(eng.evicted) if uid not in eng.customers]
            changes += [(unit, uid.encode(), eng.snapshot(uid)) for uid in sorted(eng.dirty) if uid in eng.customers]
            if eng.dirty or eng.evicted or unit in self.shared_dirty:
                changes.append((unit, SHARED_KEY, eng.snapshot_shared()))
            eng.dirty.clear()
            eng.evicted.clear()
        self.shared_dirty.clear()
        return changes

    def restore(self, unit: int, snapshots: Mapping[bytes, bytes]) -> int:
        """A fresh engine for ``unit`` from its changelog partition; returns the customers restored."""
        eng = self.engines[unit] = CustomerEngine(self.config)
        shared = snapshots.get(SHARED_KEY)
        if shared is not None:
            eng.restore_shared(shared)
        n = 0
        for key, snap in snapshots.items():
            if key != SHARED_KEY:
                eng.restore(snap)
                n += 1
        return n

    def revoke(self, unit: int, *, recovered: bool = True) -> None:
        eng = self.engines.pop(unit, None)
        if eng is not None and recovered:
            self.parked[unit] = eng
        self.in_flight.pop(unit, None)
        self.shared_dirty.discard(unit)
        self.fronts.forget(unit)

    def reclaim(self, unit: int) -> bool:
        eng = self.parked.pop(unit, None)
        if eng is None:
            return False
        self.engines[unit] = eng
        return True

    def keep_only(self, units: Iterable[int]) -> None:
        """Forget the engines set aside for units that moved to another worker."""
        keep = set(units)
        self.parked = {u: e for u, e in self.parked.items() if u in keep}

    def receive(self, unit: int, raw: bytes | None, offset: int) -> DecodeError | None:
        """Give a customer-events record to its unit's engine (``offset``: its sequence number, so a record
        read again is a no-op); a DecodeError to dead-letter when it is malformed or late. Parsed once: the
        copy also says who forwarded it (in-flight bookkeeping) and where it was read (``src``/``o``)."""
        try:
            d = orjson.loads(raw or b"")
            if type(d) is not dict:
                raise TypeError("not an object")
            self._read_back(unit, d)
            ev = _event(d)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return DecodeError("schema", f"bad customer event ({exc}): {(raw or b'')[:200]!r}")
        eng = self.engine(unit)
        c = eng.customers.get(ev.user_id)  # type: ignore[arg-type]
        is_click = type(ev) is Click
        if c is not None and offset <= (c.applied_click if is_click else c.applied_order):
            return None  # read again after a restart
        src, o = d.get("src"), d.get("o")
        source = (src, o) if type(src) is str and type(o) is int else None
        if source is not None and c is not None and c.sources and source[1] <= c.sources.get(source[0], -1):
            return None  # forwarded again by a worker that read its input again after a crash
        wm = eng.watermark_ms
        if wm is not None and ev.ts_ms < wm and ev.user_id not in eng.erased:
            return DecodeError("late", f"ts {ev.ts_ms} is behind the customer watermark {wm}")
        if is_click:
            eng.process_click(ev, offset)  # type: ignore[arg-type]
        else:
            eng.process_order(ev, offset)  # type: ignore[arg-type]
        if source is not None:
            c = eng.customers.get(ev.user_id)  # type: ignore[arg-type]
            if c is not None:
                if c.sources is None:
                    c.sources = {}
                c.sources[source[0]] = source[1]
        return None
