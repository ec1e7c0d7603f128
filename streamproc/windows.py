"""Event-time window math and watermark bookkeeping: pure integer milliseconds, no clock, no I/O.

Time is always passed in. Terms (all in epoch milliseconds):

* bucket: a tumbling window ``[start, start + size_ms)``; ``bucket_start(ts, size)`` finds it.
* stream: one input topic-partition. Its watermark is the largest ``ts`` it has delivered minus the
  allowed lateness.
* unit: the streams that feed one partition of state (the same partition number of every input topic).
  The unit's watermark is the minimum over its *active* streams; a stream that has delivered nothing
  for ``idle_timeout_ms`` of wall-clock time is idle and is left out. When every stream is idle the
  watermark advances with the wall clock, so windows of quiet products still close.
* close: a bucket is final once the unit watermark reaches ``end + grace_ms``; it is emitted once.
  A record whose bucket is already final is late (it goes to the dead-letter topic).

::

    lateness 2, grace 1, size 5          ts:  0    5    10   15
    stream clicks/0 max ts 13 -> wm 11        |----|----|----|
    stream orders/0 max ts 12 -> wm 10        [ b0 )[ b5 )[b10)
    unit wm = min(11, 10) = 10  -> b0 final (5+1 <= 10), b5 not (10+1 > 10)
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["bucket_start", "bucket_range", "WindowSpec", "StreamClock", "UnitWatermark", "RESTORED"]

RESTORED = "(restored)"
"""Name of the pseudo-stream holding the event time a unit had reached before a restart."""


def bucket_start(ts_ms: int, size_ms: int) -> int:
    """Start of the tumbling bucket of length ``size_ms`` that holds ``ts_ms``."""
    return ts_ms - ts_ms % size_ms


def bucket_range(first_start_ms: int, last_start_ms: int, size_ms: int) -> range:
    """Starts of every bucket from ``first_start_ms`` to ``last_start_ms`` inclusive."""
    return range(first_start_ms, last_start_ms + 1, size_ms)


@dataclass(frozen=True)
class WindowSpec:
    """Window and watermark parameters."""

    bucket_ms: int = 60_000
    """Length of the tumbling buckets everything is counted in."""
    allowed_lateness_ms: int = 5_000
    """How far behind a stream's largest event time its records may still arrive."""
    grace_ms: int = 0
    """How long past its end (in watermark time) a bucket stays open."""
    idle_timeout_ms: int = 5_000
    """Wall-clock silence after which a stream no longer holds its unit's watermark back."""
    max_future_ms: int = 86_400_000
    """Records with ``ts`` further than this ahead of the wall clock are rejected."""

    def is_final(self, bucket_start_ms: int, watermark_ms: int) -> bool:
        """Whether the bucket starting at ``bucket_start_ms`` is final at this watermark."""
        return bucket_start_ms + self.bucket_ms + self.grace_ms <= watermark_ms

    def last_final_start(self, watermark_ms: int) -> int:
        """Start of the newest bucket that is final at ``watermark_ms``."""
        return bucket_start(watermark_ms - self.grace_ms - self.bucket_ms, self.bucket_ms)


@dataclass
class StreamClock:
    """Event-time progress of one stream (topic-partition)."""

    max_ts_ms: int | None
    """Largest event time delivered; None while the stream has delivered nothing."""
    last_seen_wall_ms: int
    """Wall time of the last delivery (or of registration)."""


@dataclass
class UnitWatermark:
    """Watermark of one unit of state, from the streams that feed it.

    ``observe`` records a stream's event; ``advance`` computes the unit watermark at a wall-clock
    instant. The watermark never goes back.
    """

    spec: WindowSpec
    streams: dict[str, StreamClock] = field(default_factory=dict)
    watermark_ms: int | None = None

    def register(self, stream: str, wall_ms: int) -> None:
        """Announce a stream before it delivers, so it holds the watermark until it speaks or idles."""
        self.streams.setdefault(stream, StreamClock(None, wall_ms))

    def observe(self, stream: str, ts_ms: int, wall_ms: int, *, covered: bool = False) -> None:
        """Note that ``stream`` delivered an event with time ``ts_ms`` at wall time ``wall_ms``.

        ``covered``: the stream's records are already accounted for by holds (order lines forwarded between
        units: see ``advance``'s ``hold_ms``). Its time is noted, but a delivery does not make it active:
        it holds the watermark only while it is touched (records written before this worker owned it) or
        just registered. As an active stream it made every close wait for a forwarded line's round trip.
        """
        clock = self.streams.get(stream)
        if clock is None:
            self.streams[stream] = StreamClock(ts_ms, wall_ms - self.spec.idle_timeout_ms if covered else wall_ms)
        else:
            if clock.max_ts_ms is None or ts_ms > clock.max_ts_ms:
                clock.max_ts_ms = ts_ms
            if not covered:
                clock.last_seen_wall_ms = wall_ms

    def seed(self, ts_ms: int) -> None:
        """Remember event time reached before a restart (from restored state) as an always-idle stream:
        it never holds the watermark back, but lets it move on when the real streams have nothing new."""
        clock = self.streams.get(RESTORED)
        if clock is None:
            self.streams[RESTORED] = StreamClock(ts_ms, 0)
        elif clock.max_ts_ms is None or ts_ms > clock.max_ts_ms:
            clock.max_ts_ms = ts_ms

    def touch(self, stream: str, wall_ms: int) -> None:
        """Note that ``stream`` has records waiting (consumer lag): it is not idle, only slow to arrive."""
        clock = self.streams.get(stream)
        if clock is not None:
            clock.last_seen_wall_ms = wall_ms

    def is_late(self, ts_ms: int) -> bool:
        """Whether an event at ``ts_ms`` falls in a bucket that is already final."""
        wm = self.watermark_ms
        return wm is not None and self.spec.is_final(bucket_start(ts_ms, self.spec.bucket_ms), wm)

    def advance(self, wall_ms: int, hold_ms: int | None = None) -> int | None:
        """Recompute the watermark at wall time ``wall_ms`` and return it (None before any event).

        ``hold_ms``: the event time of the oldest record known to be on its way to this unit (sent but
        not yet read back); the watermark stays at or below it minus the allowed lateness.
        """
        if not self.streams:
            return self.watermark_ms
        lateness = self.spec.allowed_lateness_ms
        idle = self.spec.idle_timeout_ms
        active = [c.max_ts_ms for c in self.streams.values() if wall_ms - c.last_seen_wall_ms < idle]
        if active:
            if None in active:
                return self.watermark_ms  # a registered stream has not spoken yet: wait for it
            candidate = min(active) - lateness  # type: ignore[type-var]
        else:
            # Every stream is quiet: move on with the wall clock from the freshest stream.
            seen = [c for c in self.streams.values() if c.max_ts_ms is not None]
            if not seen:
                return self.watermark_ms
            newest_ts = max(c.max_ts_ms for c in seen)  # type: ignore[type-var]
            # The restored pseudo-stream has no wall time of its own (0): counting from it moved a unit that
            # had heard nothing since a restart or a rebalance decades ahead. Count from when its streams were
            # last heard of (or registered) instead; with none at all, do not move.
            restored = self.streams.get(RESTORED)
            walls = [c.last_seen_wall_ms for c in self.streams.values() if c is not restored]
            last_wall = max(walls, default=wall_ms)
            candidate = newest_ts - lateness + max(0, wall_ms - last_wall - idle)
        if hold_ms is not None:
            candidate = min(candidate, hold_ms - lateness)
        if self.watermark_ms is None or candidate > self.watermark_ms:
            self.watermark_ms = candidate
        return self.watermark_ms
