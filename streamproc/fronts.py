"""Event-time fronts between the workers of a consumer group (pure: time and records come in as arguments).

An order arrives on the partition of its first item's product; lines for products of other partitions are
forwarded through ``<app id>-order-items`` to the unit that owns that product. A unit may therefore close a
bucket only once no unit can still forward it a line for that bucket. Within one worker the runtime knows
this from memory (the lines it forwarded and has not read back, and the event-time front of its own orders
streams). Across workers it cannot, so each worker tells the others:

* every ``MARKER_INTERVAL_MS`` (and at least every ``KEEPALIVE_MS``) it writes, for each unit it owns, a
  *front marker* to every order-items partition owned elsewhere: the event-time front of that unit's orders
  stream (its largest ``ts``; ``null`` while the stream is idle; ``WAIT`` while it has not delivered yet);
* a unit reads the markers on its own order-items partition, in order with the forwarded lines: a line
  written before a marker is read before it, and a line written after it is no older than the front it
  carried (less the allowed lateness, for in-order input), so the watermark may follow the markers;
* a unit owned by this worker waits for a marker from every unit owned elsewhere (``WAIT`` until the first
  one arrives, e.g. after an assignment), so a worker that runs ahead in event time cannot close buckets
  another worker is still forwarding lines for, however far apart their consumers are.

Markers are keyed so that Kafka's default partitioner puts each on the partition it is meant for; their
keys start with :data:`MARKER_PREFIX`, which no product id does. The customer side uses the same class on
``<app id>-customer-events`` with its own prefix (customer_runtime.py): there a front is the event time
before which a unit will forward no more customer events, and the hold is that front itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import orjson
from aiokafka.partitioner import murmur2

__all__ = ["Fronts", "InFlight", "MARKER_PREFIX", "WAIT", "MARKER_INTERVAL_MS", "KEEPALIVE_MS", "key_for"]

MARKER_PREFIX = b"\x00front/"
WAIT = -(2**62)
"""A front that holds everything: the source has not delivered yet (or has not been heard from)."""
MARKER_INTERVAL_MS = 100
KEEPALIVE_MS = 1_000


class InFlight:
    """(sequence number, event time) of the records this worker forwarded to one partition and has not read
    back yet, in sending order, with their oldest event time in O(1) (a monotonic queue: a watermark asks for
    it at every tick, with tens of thousands of records in flight)."""

    __slots__ = ("items", "mins")

    def __init__(self) -> None:
        self.items: deque[int] = deque()
        self.mins: deque[tuple[int, int]] = deque()
        """The records that are the oldest of everything sent after them, oldest first."""

    def append(self, n: int, ts_ms: int) -> None:
        self.items.append(n)
        mins = self.mins
        while mins and mins[-1][1] >= ts_ms:
            mins.pop()
        mins.append((n, ts_ms))

    def read_back(self, n: int) -> None:
        """This worker's record ``n`` arrived, so did every one sent before it (one producer, in order)."""
        items, mins = self.items, self.mins
        while items and items[0] <= n:
            items.popleft()
        while mins and mins[0][0] <= n:
            mins.popleft()

    def oldest(self) -> int | None:
        return self.mins[0][1] if self.mins else None

    def __len__(self) -> int:
        return len(self.items)


def key_for(partition: int, partitions: int, prefix: bytes = MARKER_PREFIX) -> bytes:
    """A key starting with ``prefix`` that Kafka's default partitioner (murmur2) sends to ``partition``."""
    i = 0
    while True:
        key = prefix + str(i).encode()
        if (murmur2(key) & 0x7FFFFFFF) % partitions == partition:
            return key
        i += 1


class Fronts:
    """Front markers sent and read by one worker (see the module docstring)."""

    def __init__(self, partitions: int, prefix: bytes = MARKER_PREFIX) -> None:
        self.partitions = partitions
        self.prefix = prefix
        self.keys = [key_for(p, partitions, prefix) for p in range(partitions)]
        self.seen: dict[int, dict[int, int | None]] = {}
        """Per unit of this worker: the last front read from each other unit on its order-items partition."""
        self._sent: dict[int, tuple[int | None, int]] = {}

    def is_marker(self, key: bytes | None) -> bool:
        return key is not None and key.startswith(self.prefix)

    def receive(self, partition: int, value: bytes | None) -> str | None:
        """Note a marker read on ``partition``; returns why it is malformed, if it is."""
        try:
            d = orjson.loads(value or b"")
            unit, front = d["unit"], d["front"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            return f"bad front marker: {exc}"
        if type(unit) is not int or not 0 <= unit < self.partitions or not (front is None or type(front) is int):
            return f"bad front marker: {(value or b'')[:200]!r}"
        self.seen.setdefault(partition, {})[unit] = front
        return None

    def forget(self, unit: int) -> None:
        """``unit`` moved to another worker: drop what was read on its partition and sent for it."""
        self.seen.pop(unit, None)
        self._sent.pop(unit, None)

    def holds(self, local: Iterable[int], remote: set[int]) -> dict[int, int]:
        """Per local unit, the oldest front among the other units owned elsewhere (``WAIT`` for one not heard
        from yet); units with no such constraint are left out."""
        out: dict[int, int] = {}
        for p in local:
            seen = self.seen.get(p, {})
            front: int | None = None
            for s in remote:
                if s == p:
                    continue
                f = seen.get(s, WAIT)
                if f is not None:
                    front = f if front is None else min(front, f)
            if front is not None:
                out[p] = front
        return out

    def due(self, fronts: dict[int, int | None], remote: set[int], wall_ms: int) -> list[tuple[bytes, bytes]]:
        """Markers to write now, as (key, value): for each local unit whose front changed (at most every
        MARKER_INTERVAL_MS) or was last written KEEPALIVE_MS ago, one to every partition owned elsewhere."""
        out: list[tuple[bytes, bytes]] = []
        if not remote:
            return out
        for unit, front in fronts.items():
            last = self._sent.get(unit)
            if last is not None:
                value, at = last
                if wall_ms - at < (MARKER_INTERVAL_MS if value != front else KEEPALIVE_MS):
                    continue
            self._sent[unit] = (front, wall_ms)
            body = orjson.dumps({"unit": unit, "front": front})
            out.extend((self.keys[p], body) for p in sorted(remote) if p != unit)
        return out
