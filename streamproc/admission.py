"""Checks between decoding and counting: is the record on its product's partition, and is it new?

* **Routing.** A product's state lives in one unit, the partition ``partition_for(product_id)`` (Kafka's
  default partitioner over the record key). A click or review whose record key is not its ``product_id``, or
  that sits on another partition, would start a second copy of the product's state: it is dead-lettered as
  ``misrouted`` (README, "Guarantees", says why not re-routed). Orders are not checked: their lines are
  forwarded to each product's partition anyway.
* **Duplicates.** The same ``event_id`` / ``order_id`` / ``review_id`` seen again on the same input partition
  within ``horizon_ms`` of event time (behind the partition's newest event) is dropped and counted in
  ``streamproc_duplicates_total``. Memory is bounded by ``max_ids`` per worker (oldest forgotten first).
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any, Final

from aiokafka.partitioner import murmur2

from .events import Click, DecodeError, Order, Review

__all__ = ["Admission", "RecentIds", "DUPLICATE", "partition_for"]


class _Duplicate:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DUPLICATE"


DUPLICATE: Final = _Duplicate()
"""Returned by :meth:`Admission.check` for a record whose id was seen within the horizon."""


@lru_cache(maxsize=1 << 18)
def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` (murmur2, as the Java client); cached, as it
    is asked once per input record."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


class _Seen:
    __slots__ = ("ids", "order", "front")

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.order: deque[tuple[int, str]] = deque()
        self.front = -(2**62)


class RecentIds:
    """Ids seen per stream within ``horizon_ms`` of event time behind the stream's newest event."""

    def __init__(self, horizon_ms: int, max_ids: int) -> None:
        self.horizon_ms = horizon_ms
        self.max_ids = max_ids
        self.size = 0
        self._streams: dict[str, _Seen] = {}

    def seen(self, stream: str, ident: str, ts_ms: int) -> bool:
        """Register ``ident``; True if it was seen on ``stream`` before and is still remembered."""
        s = self._streams.get(stream)
        if s is None:
            s = self._streams[stream] = _Seen()
        if ts_ms > s.front:
            s.front = ts_ms
        horizon = s.front - self.horizon_ms
        order, ids = s.order, s.ids
        while order and order[0][0] < horizon:
            del ids[order.popleft()[1]]
            self.size -= 1
        if ident in ids:
            return True
        if ts_ms < horizon:
            return False  # older than the horizon: not remembered, not judged
        ids[ident] = ts_ms
        order.append((ts_ms, ident))
        self.size += 1
        while self.size > self.max_ids and order:
            del ids[order.popleft()[1]]
            self.size -= 1
        return False


class Admission:
    """Routing and duplicate checks of one worker's input records."""

    def __init__(self, partitions: int, *, dedup_horizon_ms: int, dedup_max_ids: int, metrics: Any = None) -> None:
        self.partitions = partitions
        self.recent = RecentIds(dedup_horizon_ms, dedup_max_ids) if dedup_horizon_ms > 0 else None
        self.metrics = metrics

    def check(self, logical: str, ev: Any, key: bytes | None, partition: int) -> Any:
        """``ev`` if it may be counted, a ``misrouted`` DecodeError, or :data:`DUPLICATE`."""
        if isinstance(ev, (Click, Review)):
            pid = ev.product_id
            if (key is not None and key != pid.encode()) or partition_for(pid, self.partitions) != partition:
                return DecodeError("misrouted", (
                    f"product {pid[:200]!r} belongs on partition {partition_for(pid, self.partitions)}, keyed by its "
                    f"product_id; this record has key {(key or b'')[:200]!r} on partition {partition}: "
                    "produce it with key = product_id"))
        if self.recent is None:
            return ev
        ident = ev.event_id if isinstance(ev, Click) else ev.order_id if isinstance(ev, Order) \
            else ev.review_id if isinstance(ev, Review) else None
        if ident is not None and self.recent.seen(f"{logical}/{partition}", ident, ev.ts_ms):
            if self.metrics is not None:
                self.metrics.duplicates.labels(logical).inc()
            return DUPLICATE
        return ev
