"""The worker's processing loop without Faust: input records in, engine updates, outputs out.

``app.py`` hands batches of raw records to :meth:`Runtime.on_records` and calls :meth:`Runtime.tick` on a
timer; outputs go through the injected ``send`` coroutine (a Kafka producer in the worker, a list in
tests). Nothing here blocks the event loop.
"""

from __future__ import annotations

import base64
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from .clock import Clock, SystemClock
from .demand import DemandEngine, Output, ProductState
from .events import Click, DecodeError, Order, OrderItem, Review, decoder_for
from .logs import alert_fields
from .metrics import Metrics
from .settings import Settings

__all__ = ["Record", "Runtime", "partition_for", "ORDER_ITEMS"]

log = logging.getLogger(__name__)

ORDER_ITEMS = "order-items"
Headers = Sequence[tuple[str, bytes]] | None
Send = Callable[[str, bytes | None, bytes, Headers], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as read."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = None


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the Java client)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class Runtime:
    """Decoding, dead-lettering, the demand engine and output fan-out for one worker."""

    def __init__(self, settings: Settings, send: Send, *, metrics: Metrics | None = None,
                 clock: Clock | None = None) -> None:
        self.settings = settings
        self.send = send
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.notifier: Any = None
        """A lifecycle.Notifier: marks (silences, inhibition), category alerts and repeats; None: publish as is."""
        self.engine = DemandEngine(settings.window, settings.detector_config())
        self.recent_alerts: deque[dict[str, Any]] = deque(maxlen=500)
        self.partitions = settings.partitions
        self.ready = False
        self.in_flight: dict[int, deque[int]] = {}
        """Event times of order lines forwarded to each unit and not yet read back, oldest first."""
        self.processed_offsets: dict[tuple[str, int], int] = {}
        """Last offset handled per (topic, partition): with the consumer's positions it tells backlog from idleness."""
        self.metrics.bind_runtime(self)  # table sizes and open incidents, computed at scrape time

    # -- input ---------------------------------------------------------------------------------

    def assign(self, logical: str, partition: int) -> None:
        """A partition of an input stream was assigned to this worker."""
        self.engine.register_stream(partition, f"{logical}/{partition}", self.clock.now_ms())

    async def on_records(self, logical: str, records: Sequence[Record]) -> None:
        """Process a batch of records of one input topic (``clicks``, ``orders``, ``reviews`` or ``order-items``)."""
        wall = self.clock.now_ms()
        eng = self.engine
        max_bytes = self.settings.max_record_bytes
        processed = 0
        decode = decoder_for(logical) if logical != ORDER_ITEMS else _decode_item
        for rec in records:
            ev = decode(rec.value, max_bytes)
            stream = f"{logical}/{rec.partition}"
            err: DecodeError | None
            if logical == ORDER_ITEMS:  # one of the lines this worker forwarded has arrived
                pending = self.in_flight.get(rec.partition)
                if pending:
                    pending.popleft()
            if isinstance(ev, DecodeError):
                err = ev
            elif self._replayed(ev, stream, rec.offset):
                err = None  # counted before a restart: nothing to do
            elif isinstance(ev, Click):
                err = eng.apply_click(rec.partition, stream, ev, wall, rec.offset)
            elif isinstance(ev, Order):
                err = eng.admit_order(rec.partition, stream, ev.ts_ms, wall)
                if err is None:
                    err = await self._apply_order(rec.partition, stream, rec.offset, ev)
            elif isinstance(ev, Review):
                err = eng.apply_review(rec.partition, stream, ev, wall, offset=rec.offset)
            else:  # a forwarded order line
                ts, item, source, seq = ev
                err = eng.admit_order(rec.partition, stream, ts, wall)
                if err is None:
                    err = eng.apply_item(rec.partition, ts, item, source, seq)
            self.processed_offsets[(rec.topic, rec.partition)] = rec.offset
            if err is not None:
                await self.dead_letter(logical, rec, err.kind, err.message)
            else:
                processed += 1
        if logical != ORDER_ITEMS:
            self.metrics.records_in.labels(logical).inc(len(records))
            self.metrics.records_processed.labels(logical).inc(processed)

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
                value = orjson.dumps({"ts": order.ts_ms, "order_id": order.order_id, "product_id": item.product_id,
                                      "quantity": item.quantity, "unit_price": item.unit_price,
                                      "category": item.category, "source": stream, "seq": seq})
                self.in_flight.setdefault(home, deque()).append(order.ts_ms)
                await self.send(ORDER_ITEMS, item.product_id.encode(), value, None)
        return err

    async def dead_letter(self, logical: str, rec: Record, kind: str, message: str) -> None:
        """Send a record to the dead-letter topic with its original bytes, headers and the reason."""
        body = orjson.dumps({
            "source": {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
            "error": {"kind": kind, "message": message[:1000]},
            "payload_b64": base64.b64encode(rec.value or b"").decode(),
            "dead_lettered_at_ms": self.clock.now_ms(),
        })
        headers = list(rec.headers or []) + [("streamproc-error", kind.encode())]
        await self.send("dead-letters", rec.key, body, headers)
        self.metrics.dead_letters.labels(logical, kind).inc()

    # -- closing and outputs -------------------------------------------------------------------

    def holds(self) -> dict[int, int]:
        """Per unit, the event time its watermark may not pass yet (forwarded order lines in flight, and
        the slowest local orders stream, which may still forward lines to any unit)."""
        holds = {unit: min(q) for unit, q in self.in_flight.items() if q}
        front = self.engine.stream_front("orders/", self.clock.now_ms())
        if front is not None:
            for unit in self.engine.units:
                holds[unit] = min(holds.get(unit, front), front)
        return holds

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
        started = time.perf_counter()
        outputs = self.engine.tick(self.clock.now_ms(), holds)
        self.metrics.observe_tick(outputs, self.clock.now_ms(), time.perf_counter() - started)
        await self.publish(outputs)
        now = self.clock.now_ms()
        for unit, wm in self.engine.watermarks().items():
            if wm is not None:
                self.metrics.watermark_delay.labels(str(unit)).set(max(0.0, (now - wm) / 1000))
        self.metrics.products.set(len(self.engine.index))

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

    # -- state persistence ---------------------------------------------------------------------

    def drain_dirty(self) -> tuple[dict[str, bytes], set[str]]:
        """Snapshots of the products changed since the last call, and the ones evicted."""
        eng = self.engine
        upserts = {pid: orjson.dumps(eng.index[pid].to_dict()) for pid in eng.dirty if pid in eng.index}
        deletes = set(eng.evicted)
        eng.dirty.clear()
        eng.evicted.clear()
        return upserts, deletes

    def restore(self, snapshot: bytes) -> None:
        """Load one product snapshot from the table (after recovery)."""
        self.engine.restore(ProductState.from_dict(orjson.loads(snapshot)))


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
            or type(item.unit_price) not in (int, float) or not item.unit_price >= 0
            or not isinstance(item.category, (str, type(None))) or not isinstance(source, (str, type(None)))
            or not (seq is None or type(seq) is int)):
        return DecodeError("schema", f"bad forwarded order line: wrong field types in {(raw or b'')[:200]!r}")
    return ts, item, source, seq
