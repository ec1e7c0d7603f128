"""A harness that drives the worker's processing without Kafka, for tests and benchmarks.

:class:`Harness` is the testing source and sink around a :class:`~streamproc.runtime.Runtime`: records
get partitions and offsets as Kafka would give them (the default partitioner on the key, offsets counted
per partition), outputs are collected per topic, and the order lines the runtime forwards to other
units are handed straight back to it, as the order-items topic would, and so are the customer events it
forwards (the customer-events topic). The clock is a
:class:`~streamproc.clock.FakeClock` that the caller moves (usually with event time).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

import orjson

from .clock import FakeClock
from .runtime import CUSTOMER_EVENTS, ORDER_ITEMS, Record, Runtime, partition_for
from .sentiment import Scorer
from .settings import INPUT_TOPICS, Settings

__all__ = ["Harness"]


class Harness:
    """A runtime fed from memory. ``assign``: register every input stream of every unit up front, as a
    worker that owns all partitions does at its assignment (else streams appear when first read)."""

    def __init__(self, settings: Settings, *, start_ms: int = 0, scorer: Scorer | None = None,
                 assign: bool = False) -> None:
        self.settings = settings
        self.clock = FakeClock(start_ms)
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []
        """Every output so far, in order: (logical topic, key, value); order lines and customer events are
        handed back, not kept."""
        self.runtime = Runtime(settings, self._send, clock=self.clock, scorer=scorer)
        self.offsets: collections.Counter[tuple[str, int]] = collections.Counter()
        self._lines: list[tuple[bytes | None, bytes]] = []
        self._customer_events: list[tuple[bytes | None, bytes]] = []
        if assign:
            for logical in (*INPUT_TOPICS, ORDER_ITEMS, CUSTOMER_EVENTS):
                for p in range(settings.partitions):
                    self.runtime.assign(logical, p)
            self.runtime.ready = True

    async def _send(self, logical: str, key: bytes | None, value: bytes | None, _headers: Any) -> None:
        if logical == ORDER_ITEMS and value is not None:
            self._lines.append((key, value))
        elif logical == CUSTOMER_EVENTS and value is not None:
            self._customer_events.append((key, value))
        else:
            self.sent.append((logical, key, value))

    def record(self, logical: str, key: bytes | None, value: bytes) -> Record:
        """The record Kafka would deliver for ``value`` produced to ``logical`` with ``key``."""
        p = partition_for(key.decode(), self.settings.partitions) if key else 0
        offset = self.offsets[(logical, p)]
        self.offsets[(logical, p)] = offset + 1
        return Record(logical, p, offset, key, value)

    async def feed(self, logical: str, items: Iterable[tuple[bytes | None, bytes]]) -> None:
        """Process records of one input topic (one batch per call), then the order lines they forwarded,
        until none are left, then the customer events they forwarded (one batch per partition)."""
        await self.runtime.on_records(logical, [self.record(logical, k, v) for k, v in items])
        while self._lines:
            lines, self._lines = self._lines, []
            await self.runtime.on_records(ORDER_ITEMS, [self.record(ORDER_ITEMS, k, v) for k, v in lines])
        events, self._customer_events = self._customer_events, []
        by_partition: dict[int, list[Record]] = {}
        for k, v in events:
            rec = self.record(CUSTOMER_EVENTS, k, v)
            by_partition.setdefault(rec.partition, []).append(rec)
        for p in sorted(by_partition):
            await self.runtime.on_records(CUSTOMER_EVENTS, by_partition[p])

    async def tick(self) -> None:
        """Close what became final at the clock's time."""
        await self.runtime.tick()

    def outputs(self, logical: str) -> list[dict[str, Any]]:
        """Decoded values of the outputs sent to ``logical`` (``product-features``, ``alerts``, ...)."""
        return [orjson.loads(v) for t, _k, v in self.sent if t == logical and v is not None]

    def tombstones(self, logical: str) -> list[str]:
        """Keys of the tombstones (value None) sent to ``logical`` (``customer-features``)."""
        return [k.decode() for t, k, v in self.sent if t == logical and v is None and k is not None]
