"""The worker's processing loop: the one place that reads the input topics and commits their offsets.

One aiokafka consumer in the group ``STREAMPROC_APP_ID`` reads ``clicks``, ``orders``, ``reviews`` and
the internal order-items and customer-events topics (customer_runtime.py). Its partitions are co-assigned (range assignor): partition *p* of every
input topic goes to one worker, the owner of unit *p*. The loop is::

    getmany ──► Runtime.on_records (a batch per topic-partition) ──► Runtime.tick ──► checkpoint

Reviews are scored in a thread while the loop goes on with clicks and orders; their partitions are paused
until the batch's scores are in, then the batch is counted in offset order like any other.

Checkpoint (at most every ``checkpoint_interval_s``, before a revocation, at stop), in this order:

1. wait until every output sent so far (features, alerts, scored reviews, dead letters, forwarded order
   lines, front markers) is acknowledged by the brokers;
2. write the snapshots of the products changed since the last checkpoint to the changelog (and those of
   the customers, with each unit's shared customer state, to the customers changelog) and wait for
   their acknowledgement (:class:`~streamproc.state_store.ChangelogStore`);
3. commit, per input partition, the offset after the last record counted.

A crash between two steps loses nothing: the records after the committed offset are read again, and a
record a product has counted already is recognised by the product's applied offsets (its snapshot carries
them) and not counted twice; a window closed again after a crash is emitted again as an identical copy.

Rebalances: the revocation callback waits for the batch in progress, checkpoints and sets the units aside;
the assignment callback restores the units' products from the changelog (or keeps the ones set aside if a
unit came straight back) before any record of them is counted. A batch fetched before a revocation is
dropped: the consumer starts the new assignment from the committed offsets, so it is read again in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, ConsumerStoppedError, IllegalStateError, KafkaError

from .observability import record_consumer_lag
from .producing import Batches
from .runtime import CUSTOMER_EVENTS, ORDER_ITEMS, Headers, Runtime
from .settings import INPUT_TOPICS, Settings
from .state_store import ChangelogStore, LocalSnapshots, ParkedFiles

__all__ = ["Runner", "STARTUP_HOLD_MS"]

log = logging.getLogger(__name__)

STARTUP_HOLD_MS = 30_000
"""How long a newly assigned partition not fetched yet holds its unit's watermark."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.runner.on_assigned(assigned)


class Runner:
    """Consumer loop, checkpoints and rebalances for one worker (see the module docstring)."""

    def __init__(self, settings: Settings, bootstrap: str, runtime: Runtime, *,
                 client_kwargs: Mapping[str, Any] | None = None, checkpoint_interval_s: float = 0.5) -> None:
        self.settings = settings
        self.runtime = runtime
        self.checkpoint_interval_s = checkpoint_interval_s
        kw = dict(client_kwargs or {})
        self.topics = {settings.topic(n): n for n in INPUT_TOPICS}
        self.topics[f"{settings.app_id}-order-items"] = ORDER_ITEMS
        if settings.customers:
            self.topics[f"{settings.app_id}-customer-events"] = CUSTOMER_EVENTS
        self.outputs = {n: settings.topic(n) for n in ("alerts", "product-features", "dead-letters", "scored-reviews",
                                                       "marketing-triggers", "customer-features")}
        self.outputs[ORDER_ITEMS] = f"{settings.app_id}-order-items"
        self.outputs[CUSTOMER_EVENTS] = f"{settings.app_id}-customer-events"
        self.bootstrap = bootstrap
        self.client_kwargs = kw
        self.producer: AIOKafkaProducer = None  # type: ignore[assignment]  # aiokafka clients need the running loop
        self.consumer: AIOKafkaConsumer = None  # type: ignore[assignment]
        self.store: ChangelogStore = None  # type: ignore[assignment]
        self.batches: Batches = None  # type: ignore[assignment]
        self.customer_store: ChangelogStore = None  # type: ignore[assignment]
        runtime.send = self._send
        runtime.assigned = set()
        self.lock = asyncio.Lock()
        """Held while a batch is counted, a checkpoint runs or a rebalance callback changes the units."""
        self.epoch = 0
        """Bumped at every revocation: a batch fetched under an older epoch is dropped, not counted."""
        self.in_flight: list[asyncio.Future[Any]] = []
        self.next_offsets: dict[TopicPartition, int] = {}
        """Per assigned input partition, the offset after the last record counted (what step 3 commits)."""
        self.committed: dict[TopicPartition, int] = {}
        self.assigned_at: dict[TopicPartition, int] = {}
        self.assigned_end: dict[TopicPartition, int] = {}
        """End offset of each partition when it was assigned: its backlog until the first fetch says more."""
        self.first_high: dict[TopicPartition, int] = {}
        self.reviews: list[tuple[int, TopicPartition, list[Any], asyncio.Future[Any]]] = []
        """Review chunks being scored, in fetch order: (epoch, partition, records, the scoring task)."""
        self.checkpointed_at = time.monotonic()
        self._stopping = False
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        kw, settings = self.client_kwargs, self.settings
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5,
                                         max_batch_size=256 * 1024, **kw)
        self.batches = Batches(self.producer)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=settings.app_id, enable_auto_commit=False,
            auto_offset_reset="earliest", partition_assignment_strategy=(RangePartitionAssignor,),
            # A short fetch wait: a fetch of quiet partitions must not hold back the busy ones.
            fetch_max_wait_ms=50, max_partition_fetch_bytes=8 * 1024 * 1024,
            # A killed worker's partitions move on after 10 s.
            session_timeout_ms=10_000, heartbeat_interval_ms=3_000, **kw)
        local = LocalSnapshots(Path(settings.data_dir) / settings.app_id) if settings.store == "rocksdb://" else None
        if local is not None:  # parked products out of the heap too
            self.runtime.engine.cold_store = ParkedFiles(Path(settings.data_dir) / settings.app_id / "parked")
        self.store = ChangelogStore(self.bootstrap, f"{settings.app_id}-products-changelog", settings.partitions,
                                    self.producer, client_kwargs=kw, local=local)
        # Customers: always restored from the changelog (no local files).
        self.customer_store = ChangelogStore(self.bootstrap, f"{settings.app_id}-customers-changelog",
                                             settings.partitions, self.producer, client_kwargs=kw)
        await self.producer.start()
        await self.store.start()
        await self.customer_store.start()
        self.consumer.subscribe(list(self.topics), listener=_Listener(self))
        await self.consumer.start()
        self._started = True

    async def stop(self) -> None:
        """Stop the loop, checkpoint what was counted and leave the group."""
        self._stopping = True
        if not self._started:
            return
        self._started = False
        async with self.lock:
            with contextlib.suppress(KafkaError, IllegalStateError):
                await self.checkpoint()
            self._drop_reviews()
        await self.consumer.stop()
        await self.store.stop()
        await self.customer_store.stop()
        await self.producer.stop()

    async def run(self) -> None:
        """The loop, until :meth:`stop`."""
        while not self._stopping:
            try:
                batches = await self.consumer.getmany(timeout_ms=100, max_records=self.settings.batch_size)
            except (IllegalStateError, ConsumerStoppedError):  # stopping
                break
            epoch = self.epoch  # no await since getmany returned: these records belong to this epoch
            async with self.lock:
                if self._stopping:
                    break
                if epoch == self.epoch and batches:
                    await self._process(batches, epoch)
                await self._collect_reviews()
                self._touch_backlogged()
                await self.runtime.tick()
                await self._flush()
                if time.monotonic() - self.checkpointed_at >= self.checkpoint_interval_s:
                    await self.checkpoint()

    async def _send(self, logical: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        await self.batches.add(self.outputs[logical], key, value, headers)

    async def _flush(self) -> None:
        """Hand the outputs gathered since the last call to the producer (they count as in flight from then)."""
        self.in_flight.extend(s.future for s in await self.batches.flush())

    # -- processing ----------------------------------------------------------------------------

    async def _process(self, batches: Mapping[TopicPartition, Sequence[Any]], epoch: int) -> None:
        reviews: dict[TopicPartition, list[Any]] = {}
        for tp, msgs in batches.items():
            logical = self.topics[tp.topic]
            if logical == "reviews" and self.runtime.scorer is not None:
                reviews[tp] = list(msgs)
                continue
            await self._count(tp, logical, msgs)
        if reviews:
            # Scored in chunks in a thread while the loop goes on; a partition waits until its reviews are counted.
            self.consumer.pause(*reviews)
            size = self.settings.sentiment_batch
            for tp, msgs in reviews.items():
                for i in range(0, len(msgs), size):
                    chunk = msgs[i:i + size]
                    self.reviews.append((epoch, tp, chunk, asyncio.ensure_future(self.runtime.score_reviews(chunk))))

    async def _collect_reviews(self) -> None:
        """Count the review chunks whose scores are in, in the order they were fetched."""
        while self.reviews and self.reviews[0][3].done():
            epoch, tp, msgs, task = self.reviews.pop(0)
            scored = task.result()
            if epoch != self.epoch:
                continue  # fetched before a revocation: read again from the committed offset
            await self._count(tp, "reviews", msgs, scored)
            if tp in self.consumer.assignment() and not any(r[1] == tp for r in self.reviews):
                self.consumer.resume(tp)

    def _drop_reviews(self) -> None:
        for *_rest, task in self.reviews:
            task.cancel()
        self.reviews.clear()

    async def _count(self, tp: TopicPartition, logical: str, msgs: Sequence[Any],
                     scored: Sequence[Any] | None = None) -> None:
        # aiokafka's ConsumerRecord has the fields of runtime.Record: no copy per record.
        with self.runtime.metrics.batch_seconds.labels(logical).time():
            await self.runtime.on_records(logical, msgs, scored)
        self.next_offsets[tp] = msgs[-1].offset + 1

    # -- checkpoint ----------------------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Steps 1-3 of the module docstring. Call under :attr:`lock`."""
        await self._flush()
        if self.in_flight:  # 1. outputs acknowledged
            sent = self.in_flight[:]
            self.in_flight.clear()
            await asyncio.gather(*sent)
        upserts, deletes = self.runtime.drain_dirty()  # 2. state stored
        await self.store.write(upserts, deletes)
        await self.customer_store.write_to(self.runtime.customers.drain())
        assignment = self.consumer.assignment()
        offsets = {tp: o for tp, o in self.next_offsets.items() if tp in assignment and self.committed.get(tp) != o}
        if offsets:  # 3. input offsets committed
            try:
                await self.consumer.commit(offsets)
                self.committed.update(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # The group moved on (this member was dropped from the generation): the partitions' next
                # owner reads these records again and the products' applied offsets skip the ones counted.
                log.warning("offset commit refused, the group is rebalancing: %s", exc)
        self.checkpointed_at = time.monotonic()

    # -- rebalances ----------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.epoch += 1
        async with self.lock:
            self._drop_reviews()
            self.runtime.ready = False
            with contextlib.suppress(KafkaError):
                await self.checkpoint()
            for tp in revoked:
                self.next_offsets.pop(tp, None)
                self.committed.pop(tp, None)
                self.assigned_at.pop(tp, None)
                self.assigned_end.pop(tp, None)
                self.first_high.pop(tp, None)
            for unit in sorted({tp.partition for tp in revoked}):
                self.runtime.revoke(unit)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            units = {tp.partition for tp in assigned}
            for unit in [u for u in self.runtime.parked if u not in units]:
                del self.runtime.parked[unit]  # moved elsewhere since: its next owner has the newest state
            kept = {unit for unit in units if self.runtime.reclaim(unit)}
            self.runtime.parked.clear()
            customers = self.runtime.customers
            customers.keep_only(units)
            customers_kept = {unit for unit in units if customers.reclaim(unit)}
            customers.parked.clear()
            started = time.monotonic()
            snapshots = await self.store.read(sorted(units - kept))
            for snaps in snapshots.values():
                for snap in snaps.values():
                    self.runtime.restore(snap)
            restored = await self.customer_store.read(sorted(units - customers_kept))
            n_customers = sum(customers.restore(unit, snaps) for unit, snaps in restored.items())
            if self.runtime.notifier is not None:
                self.runtime.notifier.restore(self.runtime.engine.firing(), self.runtime.clock.now_ms())
            wall = self.runtime.clock.now_ms()
            try:  # what each partition holds now: it is backlogged until read that far, however late its first fetch
                ends = await self.consumer.end_offsets(sorted(assigned)) if assigned else {}
            except KafkaError as exc:
                log.warning("end offsets at assignment not known (%s): a partition not fetched within %d s "
                            "stops holding its unit", type(exc).__name__, STARTUP_HOLD_MS // 1000)
                ends = {}
            for tp in sorted(assigned):
                self.runtime.assign(self.topics[tp.topic], tp.partition)
                self.assigned_at[tp] = wall
                if tp in ends:
                    self.assigned_end[tp] = ends[tp]
                committed = await self.consumer.committed(tp)
                if committed is not None:
                    self.committed[tp] = committed
            self.runtime.ready = True
            log.info("assigned units %s: %d products and %d customers restored in %.2f s, kept %s", sorted(units),
                     sum(len(s) for s in snapshots.values()), n_customers, time.monotonic() - started, sorted(kept))

    # -- idleness and lag ----------------------------------------------------------------------

    def _touch_backlogged(self) -> None:
        """Streams with records still waiting in the broker are slow, not idle: keep their units from
        advancing on the idle timeout. A partition not fetched yet counts up to its end offset at the assignment
        (if that was not known, it holds its unit for STARTUP_HOLD_MS)."""
        rt = self.runtime
        wall = rt.clock.now_ms()
        highs: dict[TopicPartition, int] = {}
        held: set[int] = set()
        for tp in self.consumer.assignment():
            logical = self.topics[tp.topic]
            stream = f"{logical}/{tp.partition}"
            high = self.consumer.highwater(tp)
            if high is None:
                high = self.assigned_end.get(tp)
            if logical == CUSTOMER_EVENTS:  # not a product stream: holds the unit's customer watermark instead
                # Customer events written before the assignment (by an earlier owner, or this worker before a
                # restart) are in no in-flight list: the customer watermark waits until they are read.
                if high is None:
                    if wall - self.assigned_at.get(tp, wall) < STARTUP_HOLD_MS:
                        held.add(tp.partition)
                    continue
                highs[tp] = high
                if self.first_high.setdefault(tp, high) > self.next_offsets.get(tp, self.committed.get(tp, 0)):
                    held.add(tp.partition)
                continue
            if high is None:
                if wall - self.assigned_at.get(tp, wall) < STARTUP_HOLD_MS:
                    rt.engine.touch_stream(tp.partition, stream, wall)
                continue
            highs[tp] = high
            if logical == ORDER_ITEMS:
                # Order lines written before the assignment hold the unit until read; later ones are covered
                # by the in-flight holds, and the front markers that keep arriving must not hold it for ever.
                high = self.first_high.setdefault(tp, high)
            done = self.next_offsets.get(tp, self.committed.get(tp, 0))
            if high > done:
                rt.engine.touch_stream(tp.partition, stream, wall)
        rt.customers.held = held
        last = {(tp.topic, tp.partition): nxt - 1 for tp, nxt in self.next_offsets.items()}
        record_consumer_lag(rt.metrics.consumer_lag, highs, last, self.committed)

