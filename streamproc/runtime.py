"""The worker's processing loop without Faust: input records in, engine updates, outputs out.

``app.py`` hands batches of raw records to :meth:`Runtime.on_records` and calls :meth:`Runtime.tick` on a
timer; outputs go through the injected ``send`` coroutine (a Kafka producer in the worker, a list in
tests). Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson

from .admission import DUPLICATE, Admission, partition_for
from .clock import Clock, SystemClock
from .customer_runtime import (
    ALERT_PREFIX,
    CUSTOMER_EVENTS,
    Customers,
    encode_alert,
    products_final,
    unit_front,
)
from .customer_state import CustomerConfig
from .dead_letters import dead_letter
from .demand import DemandEngine, Output, Unit
from .events import MAX_UNIT_PRICE, Click, DecodeError, Order, OrderItem, Review, decoder_for
from .fronts import WAIT, Fronts, InFlight
from .logs import alert_fields
from .metrics import Metrics
from .sentiment import Scorer, Sentiment
from .settings import Settings
from .trigger_feed import TriggerFeed

__all__ = ["Record", "Runtime", "partition_for", "ORDER_ITEMS", "CUSTOMER_EVENTS"]

log = logging.getLogger(__name__)

ORDER_ITEMS = "order-items"
TICK_SLICE = 5_000
"""Product closes per slice of a tick (about 0.3 s of CPU)."""
Headers = Sequence[tuple[str, bytes]] | None
Send = Callable[[str, bytes | None, bytes | None, Headers], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = None


class Runtime:
    """Decoding, dead-lettering, the demand engine and output fan-out for one worker."""

    def __init__(self, settings: Settings, send: Send, *, metrics: Metrics | None = None,
                 clock: Clock | None = None, scorer: Scorer | None = None) -> None:
        self.settings = settings
        self.send = send
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.notifier: Any = None
        """A lifecycle.Notifier: marks (silences, inhibition), category alerts and repeats; None: publish as is."""
        self.scorer = scorer
        """Review sentiment; None: reviews are counted unscored (no ``scored-reviews``, sentiment features null)."""
        self._score_pool: ThreadPoolExecutor | None = None
        self.engine = DemandEngine(settings.window, settings.detector_config(),
                                   review_cfg=settings.review_spike_config(),
                                   max_hot=settings.max_products_in_memory or None)
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=500)
        self.partitions = settings.partitions
        self.ready = False
        self.in_flight: dict[int, InFlight] = {}
        """(sequence number, event time) of the order lines this worker forwarded to each of its own units
        and has not read back yet, oldest first."""
        self.parked: dict[int, Unit] = {}
        """Products of revoked units, until the rebalance's assignment tells whether they come back."""
        self.assigned: set[int] | None = None
        """Units (partition numbers) this worker owns in its consumer group (``assign``/``revoke``); None: a
        standalone runtime that owns every unit. The others' event-time fronts come as markers (fronts.py)."""
        self.fronts = Fronts(settings.partitions)
        self.instance = uuid.uuid4().hex[:12]
        """Tags the order lines this runtime forwards, so that it counts only its own as read back."""
        self._line_seq = itertools.count()
        self.admission = Admission(settings.partitions, dedup_horizon_ms=settings.dedup_horizon_ms,
                                   dedup_max_ids=settings.dedup_max_ids, metrics=self.metrics)
        """Routing and duplicate checks of decoded input records (admission.py)."""
        self.customers = Customers(CustomerConfig(cart_abandon_ms=settings.cart_abandon_ms,
                                                  retention_ms=settings.customer_retention_ms),
                                   settings.partitions, self.instance)
        """Customer features and marketing triggers (customer_runtime.py), one engine per unit."""
        self.triggers = TriggerFeed()
        """Published marketing triggers by kind and the latest few, for the dashboard (trigger_feed.py)."""
        self.customer_lock = asyncio.Lock()
        """Held while customer outputs are published and while a customer is erased: a tombstone is never
        overtaken by a features record of the same tick."""
        self.metrics.bind_runtime(self)  # table sizes and open incidents, computed at scrape time

    # -- input ---------------------------------------------------------------------------------

    def assign(self, logical: str, partition: int) -> None:
        """A partition of an input stream was assigned to this worker."""
        if self.assigned is not None:
            self.assigned.add(partition)
        if logical == CUSTOMER_EVENTS:  # no product stream: it must not hold the unit's watermark
            self.customers.engine(partition)
            return
        self.engine.register_stream(partition, f"{logical}/{partition}", self.clock.now_ms())

    def revoke(self, partition: int, *, recovered: bool = True) -> None:
        """A unit's partition was revoked (in a rebalance every partition is): set its products aside. If the
        unit comes back to this worker they are its newest state (:meth:`reclaim`); if it moves, the new
        owner restores it from the table.

        ``recovered=False``: the revocation came before the assignment's recovery finished, so the unit is
        only its registered streams, without products: what was set aside before stays (an empty unit set
        aside over it made the next recovery keep the unit empty, and its products start over)."""
        if self.assigned is not None:
            self.assigned.discard(partition)
        u = self.engine.drop_unit(partition)
        if u is not None and recovered:
            self.parked[partition] = u
        self.fronts.forget(partition)
        self.in_flight.pop(partition, None)
        self.customers.revoke(partition, recovered=recovered)

    def reclaim(self, partition: int) -> bool:
        """Put back the products set aside at the unit's revocation; False if there are none."""
        u = self.parked.pop(partition, None)
        if u is None:
            return False
        for p in u.products.values():
            self.engine.restore(p)
        self.engine.restore_parked(partition, u.cold, u.wake)
        return True

    def _remote(self) -> set[int]:
        """Units owned by other workers of the group."""
        return set() if self.assigned is None else set(range(self.partitions)) - self.assigned

    async def score_reviews(self, records: Sequence[Record]) -> list[Sentiment | None]:
        """The sentiment of each record that is a valid review not counted before (None for the others),
        computed in a worker thread: onnxruntime releases the GIL, so the event loop (the other agents, the
        HTTP API) keeps running. Call it outside the engine's lock; hand the result to :meth:`on_records`."""
        out: list[Sentiment | None] = [None] * len(records)
        if self.scorer is None:
            return out
        decode = decoder_for("reviews")
        max_bytes = self.settings.max_record_bytes
        todo: list[int] = []
        texts: list[str] = []
        for i, rec in enumerate(records):
            ev = decode(rec.value, max_bytes)
            if isinstance(ev, Review) and not self._replayed(ev, f"reviews/{rec.partition}", rec.offset):
                todo.append(i)
                texts.append(ev.text)
        if not texts:
            return out
        if self._score_pool is None:
            self._score_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sentiment")
        started = time.perf_counter()
        scored = await asyncio.get_running_loop().run_in_executor(self._score_pool, self.scorer.score, texts)
        self.metrics.model_inference_seconds.observe(time.perf_counter() - started)
        self.metrics.model_batch_size.observe(len(texts))
        for i, s in zip(todo, scored, strict=True):
            out[i] = s
        return out

    async def on_records(self, logical: str, records: Sequence[Record],
                         scored: Sequence[Sentiment | None] | None = None) -> None:
        """Process a batch of records of one input topic (``clicks``, ``orders``, ``reviews`` or ``order-items``).

        Reviews are scored here unless ``scored`` (from :meth:`score_reviews`) is given; each counted review
        is published to ``scored-reviews`` (key: its product id, like the input)."""
        if logical == CUSTOMER_EVENTS:
            await self._on_customer_events(records)
            return
        if logical == "reviews" and scored is None and self.scorer is not None:
            scored = await self.score_reviews(records)
        wall = self.clock.now_ms()
        eng = self.engine
        max_bytes = self.settings.max_record_bytes
        processed = 0
        decode = decoder_for(logical) if logical != ORDER_ITEMS else _decode_item
        streams: dict[int, str] = {}
        for n, rec in enumerate(records):
            partition = rec.partition
            stream = streams.get(partition)
            if stream is None:
                stream = streams[partition] = f"{logical}/{partition}"
            err: DecodeError | None
            if logical == ORDER_ITEMS:
                if self.fronts.is_marker(rec.key):  # another worker's front, not an order line
                    bad = self.fronts.receive(partition, rec.value)
                    if bad is not None:
                        await self.dead_letter(logical, rec, "schema", bad)
                    continue
                self._read_back(rec)
            ev = decode(rec.value, max_bytes)
            if logical != ORDER_ITEMS and type(ev) is not DecodeError:
                ev = self.admission.check(logical, ev, rec.key, partition)
            cls = type(ev)
            if cls is Click:  # the common case first; replays are skipped inside count_click
                fresh = not eng.already_applied(ev.product_id, stream, rec.offset)  # type: ignore[union-attr]
                err = eng.count_click(partition, stream, ev, wall, rec.offset)  # type: ignore[arg-type]
                if err is None and fresh:
                    await self._forward_customer(ev, stream, rec.offset)  # type: ignore[arg-type]
            elif cls is DecodeError:
                err = ev  # type: ignore[assignment]
            elif ev is DUPLICATE:
                err = None  # its id was counted within the dedup horizon
            elif self._replayed(ev, stream, rec.offset):
                err = None  # counted before a restart: nothing to do
            elif cls is Order:
                # Some lines may be counted on another worker's products (never "replayed" here): the first
                # line's product, the order's key and so this unit's, says whether the customer has it.
                first = ev.items[0].product_id if ev.items else ""  # type: ignore[union-attr]
                fresh = not eng.already_applied(first, stream, rec.offset * 1000)
                err = eng.admit_order(partition, stream, ev.ts_ms, wall)  # type: ignore[union-attr]
                if err is None:
                    err = await self._apply_order(partition, stream, rec.offset, ev)  # type: ignore[arg-type]
                if err is None and fresh:
                    await self._forward_customer(ev, stream, rec.offset)  # type: ignore[arg-type]
            elif cls is Review:
                sentiment = scored[n] if scored is not None else None
                if sentiment is None and self.scorer is not None:  # not scored beforehand (e.g. a race with a replay)
                    sentiment = (await self.score_reviews([rec]))[0]
                if sentiment is None:
                    err = eng.apply_review(partition, stream, ev, wall, offset=rec.offset)  # type: ignore[arg-type]
                else:
                    err = eng.apply_review(partition, stream, ev, wall, sentiment.negative,  # type: ignore[arg-type]
                                           rec.offset, positive=sentiment.positive, label=sentiment.label)
                    if err is None:
                        await self._publish_scored(ev, sentiment)  # type: ignore[arg-type]
            else:  # a forwarded order line
                ts, item, source, seq = ev  # type: ignore[misc]
                err = eng.admit_order(partition, stream, ts, wall, forwarded=True)
                if err is None:
                    err = eng.apply_item(partition, ts, item, source, seq)
            if err is not None:
                await self.dead_letter(logical, rec, err.kind, err.message)
            else:
                processed += 1
        if logical != ORDER_ITEMS:
            self.metrics.records_in.labels(logical).inc(len(records))
            self.metrics.records_processed.labels(logical).inc(processed)

    def _read_back(self, rec: Record) -> None:
        """A forwarded order line arrived: if this worker sent it, it is no longer in flight."""
        pending = self.in_flight.get(rec.partition)
        if not pending:
            return
        try:
            d = orjson.loads(rec.value or b"")
            mine, n = d.get("w") == self.instance, d.get("n")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if mine and type(n) is int:
            pending.read_back(n)

    async def _publish_scored(self, ev: Review, s: Sentiment) -> None:
        value = orjson.dumps({"review_id": ev.review_id, "product_id": ev.product_id, "ts": ev.ts_ms, "lang": ev.lang,
                              "label": s.label, "probabilities": s.probabilities,
                              "model_version": self.scorer.model_version if self.scorer else None})
        await self.send("scored-reviews", ev.product_id.encode(), value, None)

    def _replayed(self, ev: Any, stream: str, offset: int) -> bool:
        """Whether every product this record counts for has counted it already."""
        applied = self.engine.already_applied
        if isinstance(ev, (Click, Review)):
            return applied(ev.product_id, stream, offset)
        if isinstance(ev, Order):
            return all(applied(item.product_id, stream, offset * 1000 + line) for line, item in enumerate(ev.items))
        _ts, item, source, seq = ev
        return source is not None and seq is not None and applied(item.product_id, source, seq)

    async def _apply_order(self, partition: int, stream: str, offset: int, order: Order) -> DecodeError | None:
        """Count the order's local lines and forward the others to their products' partitions. Each line
        is identified by the order's offset and its position, so a replay after a crash counts it once."""
        err = None
        for line, item in enumerate(order.items):
            seq = offset * 1000 + line
            home = partition_for(item.product_id, self.partitions)
            if home == partition:
                err = self.engine.apply_item(partition, order.ts_ms, item, stream, seq) or err
            else:
                n = next(self._line_seq)
                value = orjson.dumps({"ts": order.ts_ms, "order_id": order.order_id, "product_id": item.product_id,
                                      "quantity": item.quantity, "unit_price": item.unit_price,
                                      "category": item.category, "source": stream, "seq": seq,
                                      "w": self.instance, "n": n})
                if self.assigned is None or home in self.assigned:  # elsewhere: the front markers cover it
                    self.in_flight.setdefault(home, InFlight()).append(n, order.ts_ms)
                await self.send(ORDER_ITEMS, item.product_id.encode(), value, None)
        return err

    async def dead_letter(self, logical: str, rec: Record, kind: str, message: str) -> None:
        """Send a record to the dead-letter topic with its original bytes, headers and the reason; cut to
        what one produce request takes, with the original's size and digest (dead_letters.py)."""
        dl = dead_letter({"source": {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
                          "error": {"kind": kind, "message": message[:1000]},
                          "dead_lettered_at_ms": self.clock.now_ms()},
                         payload=rec.value, key=rec.key, headers=rec.headers,
                         extra_headers=[("streamproc-error", kind.encode())])
        await self.send("dead-letters", dl.key, dl.value, dl.headers)
        self.metrics.dead_letters.labels(logical, kind).inc()

    # -- closing and outputs -------------------------------------------------------------------

    def holds(self) -> dict[int, int]:
        """Per unit, the event time its watermark may not pass yet (less the allowed lateness): the order
        lines this worker forwarded to it and has not read back, the slowest orders stream of this worker,
        and the orders fronts of the units other workers own (their markers), which may all still forward
        lines to it."""
        holds = {unit: ts for unit, q in self.in_flight.items() if (ts := q.oldest()) is not None}
        front = self.engine.stream_front("orders/", self.clock.now_ms())
        if front is not None:
            for unit in self.engine.units:
                holds[unit] = min(holds.get(unit, front), front)
        for unit, f in self.fronts.holds(self.engine.units, self._remote()).items():
            holds[unit] = min(holds.get(unit, f), f)
        return holds

    def _orders_front(self, unit: int, wall: int) -> int | None:
        """The event-time front of a unit's orders stream: None while idle, WAIT before it delivers."""
        u = self.engine.units.get(unit)
        clock = u.watermark.streams.get(f"orders/{unit}") if u is not None else None
        if clock is None or wall - clock.last_seen_wall_ms >= self.settings.window.idle_timeout_ms:
            return None
        return WAIT if clock.max_ts_ms is None else clock.max_ts_ms

    async def send_fronts(self) -> None:
        """Front markers of this worker's units to the order-items and customer-events partitions owned
        elsewhere (fronts.py, customer_runtime.py)."""
        remote = self._remote()
        if not remote or not self.assigned:
            return
        wall = self.clock.now_ms()
        fronts = {unit: self._orders_front(unit, wall) for unit in sorted(self.assigned)}
        for key, value in self.fronts.due(fronts, remote, wall):
            await self.send(ORDER_ITEMS, key, value, None)
        if not self.settings.customers:
            return
        spec, units = self.settings.window, self.engine.units
        customer = {unit: unit_front(u.watermark if (u := units.get(unit)) else None, spec, wall)
                    for unit in sorted(self.assigned)}
        for key, value in self.customers.fronts.due(customer, remote, wall):
            await self.send(CUSTOMER_EVENTS, key, value, None)

    def watermark_report(self) -> dict[str, Any]:
        """Watermarks, their streams and holds, for ``GET /watermarks``."""
        wall = self.clock.now_ms()
        idle = self.settings.window.idle_timeout_ms
        holds = self.holds()
        return {"wall_ms": wall, "units": {
            str(k): {"watermark_ms": u.watermark.watermark_ms, "next_close_ms": u.next_close_ms,
                     "hold_ms": holds.get(k), "in_flight": len(self.in_flight.get(k, ())),
                     "products": len(u.products),
                     "streams": {name: {"max_ts_ms": c.max_ts_ms, "idle": wall - c.last_seen_wall_ms >= idle}
                                 for name, c in u.watermark.streams.items()}}
            for k, u in self.engine.units.items()}}

    async def tick(self) -> None:
        """Close what became final and publish the results."""
        holds = self.holds()
        closed: list[Output] = []
        # Every slice advances the watermarks at the tick's start: the backlogged streams were marked active
        # for that instant (runner.py). Slices that outlast the idle timeout (a month of buckets closing on a
        # loaded machine) must not see those streams as idle and move a unit to its most advanced stream.
        wall_ms = self.clock.now_ms()
        while True:  # in slices of TICK_SLICE closes: the consumer's heartbeat and the HTTP API run between them
            started = time.perf_counter()
            outputs = self.engine.tick(wall_ms, holds, budget=TICK_SLICE)
            self.metrics.observe_tick(outputs, self.clock.now_ms(), time.perf_counter() - started)
            await self.publish(outputs)
            closed += outputs
            if not self.engine.more:
                break
            await asyncio.sleep(0)
        await self._tick_customers(closed)
        await self.send_fronts()
        now = self.clock.now_ms()
        for unit, wm in self.engine.watermarks().items():
            if wm is not None:
                self.metrics.watermark_delay.labels(str(unit)).set(max(0.0, (now - wm) / 1000))
        self.metrics.products.set(self.engine.product_count())
        self.metrics.products_hot.set(len(self.engine.index))

    async def publish(self, outputs: list[Output]) -> None:
        if self.notifier is not None:
            outputs = self.notifier.process(outputs, self.clock.now_ms())
        for out in outputs:
            value = orjson.dumps(out.value)
            if out.kind == "features":
                await self.send("product-features", out.key.encode(), value, None)
                self.metrics.features_published.inc()
            else:
                await self.send("alerts", out.key.encode(), value, None)
                self.recent_alerts.appendleft(out.value)
                self.metrics.alerts.labels(out.value["labels"]["alertname"], out.value["status"]).inc()
                log.warning("alert %s %s: %s", out.value["status"], out.value["dedup_key"],
                            out.value["annotations"]["summary"], extra={"fields": alert_fields(out.value)})

    # -- customers (customer_runtime.py) --------------------------------------------------------

    async def _forward_customer(self, ev: Click | Order, stream: str, offset: int) -> None:
        if not self.settings.customers:
            return
        home = self.customers.unit_of(ev.user_id) if ev.user_id else -1
        kv = self.customers.forward(ev, track=self.assigned is None or home in self.assigned, src=stream,
                                    offset=offset)
        if kv is not None:
            await self.send(CUSTOMER_EVENTS, kv[0], kv[1], None)

    async def _on_customer_events(self, records: Sequence[Record]) -> None:
        customers = self.customers
        for rec in records:
            key = rec.key
            if key is not None and key[:1] == b"\x00":  # user ids never start with NUL
                if customers.fronts.is_marker(key):  # another worker's customer front
                    err = customers.fronts.receive(rec.partition, rec.value)
                    bad = None if err is None else DecodeError("schema", err)
                elif key.startswith(ALERT_PREFIX):  # a product alert raised by another worker
                    bad = customers.receive_alert(rec.partition, rec.value)
                else:
                    bad = DecodeError("schema", f"unknown customer-events key {key[:50]!r}")
                if bad is not None:
                    await self.dead_letter(CUSTOMER_EVENTS, rec, bad.kind, bad.message)
                continue
            late = customers.receive(rec.partition, rec.value, rec.offset)
            if late is not None:
                await self.dead_letter(CUSTOMER_EVENTS, rec, late.kind, late.message)

    def _products_final(self) -> int | None:
        return products_final([u.watermark for u in self.engine.units.values()], self.settings.window,
                              self.clock.now_ms())

    async def _tick_customers(self, product_outputs: list[Output]) -> None:
        """Feed the product alerts to the customer engines (this worker's in process, the others' as alert
        records, before the front markers that pass their time), advance them, publish triggers and features."""
        if not self.settings.customers:
            return
        remote = self._remote()
        for out in product_outputs:
            if out.kind != "features" and out.value.get("labels", {}).get("alertname") == "demand_surge":
                self.customers.on_product_alert(dict(out.value))
                if remote:
                    value = encode_alert(out.value)
                    for p in sorted(remote):
                        await self.send(CUSTOMER_EVENTS, self.customers.alert_keys[p], value, None)
        # Watermark: derived from the product units (what they made final), not from customer-events' own event
        # times: a record admitted later is no older, so it is exact for whatever this worker forwards; the
        # other workers' units through their front markers.
        async with self.customer_lock:
            for o in self.customers.tick(self._products_final(), remote):
                await self._publish_customer(o)

    async def _publish_customer(self, o: Any) -> None:
        topic = "marketing-triggers" if o.kind == "trigger" else "customer-features"
        await self.send(topic, o.key.encode(), None if o.value is None else orjson.dumps(o.value), None)
        if o.kind == "trigger":
            self.triggers.record(o.value, self.clock.now_ms())
            self.metrics.triggers.labels(o.value["kind"]).inc()

    def customer_features(self, user_id: str) -> dict[str, Any] | None:
        """The customer's live features; None when unknown here (or owned by another worker)."""
        eng = self.customers.engines.get(self.customers.unit_of(user_id))
        return None if eng is None else eng.features(user_id)

    async def erase_customer(self, user_id: str) -> bool | None:
        """Forget a customer (right to erasure) and publish the features tombstone; None when the customer's
        unit belongs to another worker, else whether the customer was known."""
        unit = self.customers.unit_of(user_id)
        if self.assigned is not None and unit not in self.assigned:
            return None
        eng = self.customers.engine(unit)
        known = user_id in eng.customers
        async with self.customer_lock:
            for o in eng.erase(user_id):
                await self._publish_customer(o)
            self.triggers.forget(user_id)
            self.customers.shared_dirty.add(unit)
        return known

    # -- state persistence ---------------------------------------------------------------------

    def drain_dirty(self) -> tuple[dict[str, bytes], set[str]]:
        """Snapshots of the products changed since the last call, and the ones evicted."""
        eng = self.engine
        upserts = {pid: snap for pid in eng.dirty if (snap := eng.snapshot(pid)) is not None}
        deletes = set(eng.evicted)
        eng.dirty.clear()
        eng.evicted.clear()
        return upserts, deletes

    def restore(self, snapshot: bytes) -> None:
        """Load one product snapshot from the table (after recovery)."""
        self.engine.restore_snapshot(snapshot)


def _decode_item(raw: bytes | None, max_bytes: int) -> tuple[int, OrderItem, str | None, int | None] | DecodeError:
    try:
        d = orjson.loads(raw or b"")
        item = OrderItem(d["product_id"], d["quantity"], d["unit_price"], d.get("category"))
        ts, source, seq = d["ts"], d.get("source"), d.get("seq")
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        return DecodeError("schema", f"bad forwarded order line: {exc}")
    # Bytes from Kafka all the same: wrong types must be dead-lettered here, not crash the engine.
    if (type(ts) is not int or type(item.product_id) is not str or not item.product_id
            or type(item.quantity) is not int or item.quantity < 1
            or type(item.unit_price) not in (int, float) or not 0 <= item.unit_price <= MAX_UNIT_PRICE
            or not isinstance(item.category, (str, type(None))) or not isinstance(source, (str, type(None)))
            or not (seq is None or type(seq) is int)):
        return DecodeError("schema", f"bad forwarded order line: wrong field types in {(raw or b'')[:200]!r}")
    return ts, item, source, seq
