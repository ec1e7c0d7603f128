"""Sending traffic to Kafka: generated events (optionally paced to event time) and recorded JSONL files.

The I/O half of the traffic generator (:mod:`streamproc.generator` is the pure half). Records go out
through aiokafka's batch API: each record is appended to an open batch of its topic-partition, the
partition chosen from the key with Kafka's default murmur2 partitioner, so a product's records land
on the same partition as with any other Kafka client. Topics are not created here; the caller does.

Delivery uses ``acks=1`` by default: a load generator wants throughput, and a record lost in a leader
failover only shows up as a producer error in the report. Pass ``acks="all"`` for durable loads.
Producer errors are counted, not raised; only a broker that cannot be reached at the start raises
(:class:`~streamproc.errors.DeliveryError`, retriable).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from tqdm import tqdm

from streamproc.clock import Clock, SystemClock
from streamproc.errors import DeliveryError

__all__ = ["ProduceReport", "produce", "replay_file", "write_truth", "read_jsonl_records"]

Item = tuple[str, bytes | None, bytes, int | None]
"""``(topic, key, value, ts_ms)``; ``ts_ms=None`` lets the producer stamp the record and is never paced."""

_PACE_STEP_WALL_S = 0.05  # how often (in wall time) a paced run checks the schedule
_YIELD_EVERY = 4096  # records between forced returns to the event loop when running flat out
_MAX_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class ProduceReport:
    """What a produce run achieved."""

    events: int
    """Records handed to the producer."""
    seconds: float
    """Wall time from the first record to the last acknowledgement."""
    rate_eps: float
    """``events / seconds``."""
    errors: int
    """Records the broker did not acknowledge."""
    not_json: int = 0
    """Replay only: lines that were not JSON, sent as they are with no key."""

    @property
    def delivered(self) -> int:
        """Records acknowledged by the broker."""
        return self.events - self.errors

    def summary(self) -> str:
        """One line for a person (the CLI prints it on stderr after the progress bar)."""
        line = (f"sent {self.events:,} records in {self.seconds:.1f} s ({self.rate_eps:,.0f}/s): "
                f"{self.delivered:,} acknowledged, {self.errors:,} failed")
        return line + (f", {self.not_json:,} lines not JSON (sent unkeyed)" if self.not_json else "")


class _BatchSender:
    """Appends records to per-partition batches and ships full ones; counts failed records."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}
        self._partition_of: dict[tuple[str, bytes], int] = {}
        self._open: dict[tuple[str, int], Any] = {}
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._round_robin = itertools.count()
        self.errors = 0

    async def add(self, topic: str, key: bytes | None, value: bytes, ts_ms: int | None) -> None:
        partition = self._partition_of.get((topic, key)) if key is not None else None
        if partition is None:
            partition = await self._partition(topic, key)
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[topic, partition] = self._producer.create_batch()
        if batch.append(timestamp=ts_ms, key=key, value=value) is not None:
            return
        await self._ship(topic, partition, batch)
        batch = self._open[topic, partition] = self._producer.create_batch()
        if batch.append(timestamp=ts_ms, key=key, value=value) is None:
            self.errors += 1  # larger than a whole batch: the broker would refuse it anyway

    async def _partition(self, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            try:
                found = await self._producer.partitions_for(topic)
            except KafkaError as exc:
                raise DeliveryError(f"no metadata for topic {topic!r}: {exc}; create it first",
                                    retriable=True) from exc
            partitions = self._partitions[topic] = sorted(found)
        if key is None:
            return partitions[next(self._round_robin) % len(partitions)]
        partition = partitions[(int(murmur2(key)) & 0x7FFFFFFF) % len(partitions)]
        self._partition_of[topic, key] = partition
        return partition

    async def _ship(self, topic: str, partition: int, batch: Any) -> None:
        count = batch.record_count()
        if count == 0:
            return
        try:
            future = await self._producer.send_batch(batch, topic, partition=partition)
        except KafkaError:
            self.errors += count
            return
        self._in_flight.add(future)
        future.add_done_callback(lambda f: self._delivered(f, count))

    def _delivered(self, future: asyncio.Future[Any], count: int) -> None:
        self._in_flight.discard(future)
        if future.cancelled() or future.exception() is not None:
            self.errors += count

    async def ship_open(self) -> None:
        """Send every partly filled batch now (before a pause, and at the end)."""
        open_batches, self._open = self._open, {}
        for (topic, partition), batch in open_batches.items():
            await self._ship(topic, partition, batch)

    async def drain(self) -> None:
        await self.ship_open()
        if self._in_flight:
            await asyncio.gather(*list(self._in_flight), return_exceptions=True)


async def _start_producer(bootstrap: str, *, linger_ms: int, acks: int | str,
                          client_kwargs: Mapping[str, Any] | None = None) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=acks, linger_ms=linger_ms, max_batch_size=_MAX_BATCH_BYTES,
        compression_type=None, enable_idempotence=False, **(client_kwargs or {}),
    )
    try:
        await producer.start()
    except KafkaError as exc:
        await producer.stop()
        raise DeliveryError(f"cannot connect to Kafka at {bootstrap}: {exc}", retriable=True) from exc
    return producer


async def _paced(items: Iterable[Item], speed: float | None, start_wall: float | None,
                 clock: Clock, sender: _BatchSender) -> AsyncIterator[Item]:
    """The items, each released no earlier than its event time allows at ``speed`` x wall clock."""
    if speed is None:
        for i, item in enumerate(items):
            if i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            yield item
        return
    if speed <= 0:
        raise ValueError(f"speed must be positive, got {speed}")
    step_ms = max(1, int(_PACE_STEP_WALL_S * 1000 * speed))
    first_ts: int | None = None
    mono_start: float | None = None
    next_check = -1
    for i, item in enumerate(items):
        if mono_start is None:
            # Anchored once the first item exists: a source that is slow to start (the generator simulates
            # minutes of traffic before its first event) must not make the whole run start late and backfill.
            lag_s = 0.0 if start_wall is None else clock.now_ms() / 1000.0 - start_wall
            mono_start = clock.monotonic() - lag_s
        ts = item[3]
        if ts is not None and ts >= next_check:
            first_ts = ts if first_ts is None else first_ts
            delay = mono_start + (ts - first_ts) / 1000.0 / speed - clock.monotonic()
            if delay > 0.001:
                await sender.ship_open()
                await asyncio.sleep(delay)
            elif i % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
            next_check = ts + step_ms
        yield item


async def _run(bootstrap: str, items: Iterable[Item], *, speed: float | None, start_wall: float | None,
               progress: bool, linger_ms: int, acks: int | str, clock: Clock, desc: str,
               client_kwargs: Mapping[str, Any] | None = None) -> tuple[int, int, float]:
    producer = await _start_producer(bootstrap, linger_ms=linger_ms, acks=acks, client_kwargs=client_kwargs)
    sender = _BatchSender(producer)
    total = len(items) if isinstance(items, Sized) else None
    count = 0
    began = clock.monotonic()
    try:
        with tqdm(total=total, unit="ev", unit_scale=True, desc=desc, disable=not progress, smoothing=0.1) as bar:
            async for topic, key, value, ts in _paced(items, speed, start_wall, clock, sender):
                if count == 0:
                    began = clock.monotonic()  # from the first record (not the source's start-up)
                await sender.add(topic, key, value, ts)
                count += 1
                if count & 1023 == 0:
                    bar.update(1024)
            await sender.drain()
            bar.update(count & 1023)
    finally:
        await producer.stop()
    return count, sender.errors, clock.monotonic() - began


def _report(count: int, errors: int, seconds: float, not_json: int = 0) -> ProduceReport:
    return ProduceReport(events=count, seconds=seconds, rate_eps=count / seconds if seconds > 0 else 0.0,
                         errors=errors, not_json=not_json)


async def produce(
    bootstrap: str, items: Iterable[tuple[str, bytes, bytes, int]], *, speed: float | None,
    start_wall: float | None = None, progress: bool = True, topic_names: Mapping[str, str] | None = None,
    linger_ms: int = 20, acks: int | str = 1, clock: Clock | None = None,
    client_kwargs: Mapping[str, Any] | None = None,
) -> ProduceReport:
    """Send ``(topic, key, value, ts_ms)`` items (e.g. :func:`streamproc.generator.events`) to Kafka.

    ``speed=None`` sends as fast as possible. ``speed=k`` paces the run so event time advances k times
    as fast as the wall clock, counting from the first item, which is due at ``start_wall`` (epoch
    seconds; default now). A ``start_wall`` in the past sends the overdue part as a fast backfill, then
    goes on live. ``topic_names`` maps logical topics (``clicks``) to real ones. ``client_kwargs`` are the
    producer's security settings (:func:`streamproc.kafka_auth.client_kwargs`).
    """
    names = dict(topic_names or {})
    routed = ((names.get(t, t), k, v, ts) for t, k, v, ts in items)
    source: Iterable[Item] = _Sized(routed, len(items)) if isinstance(items, Sized) else routed
    count, errors, seconds = await _run(bootstrap, source, speed=speed, start_wall=start_wall, progress=progress,
                                        linger_ms=linger_ms, acks=acks, clock=clock or SystemClock(), desc="produce",
                                        client_kwargs=client_kwargs)
    return _report(count, errors, seconds)


class _Sized:
    """An iterator that knows its length (for the progress bar)."""

    def __init__(self, it: Iterator[Item], n: int) -> None:
        self._it, self._n = it, n

    def __iter__(self) -> Iterator[Item]:
        return self._it

    def __len__(self) -> int:
        return self._n


def write_truth(path: str | os.PathLike[str], truth_rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ground-truth rows (see :func:`streamproc.generator.truth`) as JSON lines."""
    with open(path, "wb") as f:
        for row in truth_rows:
            f.write(orjson.dumps(row) + b"\n")


def _open_maybe_gzip(path: str | os.PathLike[str]) -> BinaryIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def _key_and_ts(obj: Any) -> tuple[bytes | None, int | None]:
    """The partitioning key (``product_id``; orders: first item's) and integer ``ts`` of a JSON record."""
    if not isinstance(obj, dict):
        return None, None
    pid = obj.get("product_id")
    items = obj.get("items")
    if pid is None and isinstance(items, list) and items and isinstance(items[0], dict):
        pid = items[0].get("product_id")
    ts = obj.get("ts")
    return (pid.encode() if isinstance(pid, str) else None), (ts if type(ts) is int and ts >= 0 else None)


class _ReplayCounter:
    not_json = 0


def read_jsonl_records(path: str | os.PathLike[str], topic: str, counter: _ReplayCounter | None = None) -> Iterator[Item]:
    """Records of a JSONL(.gz) file as items: original line bytes, keyed by product id; blank lines skipped.

    Lines that are not JSON keep their bytes and get no key (the worker dead-letters them); they are
    counted in ``counter.not_json``.
    """
    with _open_maybe_gzip(path) as f:
        for raw in f:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                if counter is not None:
                    counter.not_json += 1
                yield topic, None, line, None
                continue
            key, ts = _key_and_ts(obj)
            yield topic, key, line, ts


async def replay_file(
    bootstrap: str, path: str | os.PathLike[str], topic: str, *, speed: float | None = None,
    start_wall: float | None = None, progress: bool = True, linger_ms: int = 20, acks: int | str = 1,
    clock: Clock | None = None, client_kwargs: Mapping[str, Any] | None = None,
) -> ProduceReport:
    """Bulk-load a recorded JSONL or JSONL.gz file into ``topic`` (a real topic name), keyed by product id.

    Records keep their integer ``ts`` as the Kafka timestamp; ``speed`` paces by it as in :func:`produce`.
    """
    counter = _ReplayCounter()
    count, errors, seconds = await _run(
        bootstrap, read_jsonl_records(path, topic, counter), speed=speed, start_wall=start_wall,
        progress=progress, linger_ms=linger_ms, acks=acks, clock=clock or SystemClock(), desc=f"replay {topic}",
        client_kwargs=client_kwargs,
    )
    return _report(count, errors, seconds, counter.not_json)
