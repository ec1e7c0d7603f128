"""The Faust application: the only module that imports faust. Agents are thin: they hand batches of raw
records to :class:`~streamproc.runtime.Runtime`, which does the work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

import faust
from mode.utils.queues import ThrowableQueue

from . import faust_store
from .categories import CategoryEngine
from .clock import Clock, SystemClock
from .delivery_service import DeliveryService
from .end_offsets import EndOffsets
from .kafka_auth import broker_credentials, client_kwargs
from .lifecycle import Notifier
from .metrics import Metrics
from .observability import record_consumer_lag
from .runtime import ORDER_ITEMS, Record, Runtime, partition_for
from .sentiment import Scorer, load_scorer
from .settings import INPUT_TOPICS, Settings
from .silences import SilenceLog, SilenceService, SilenceStore
from .web import WebServer

__all__ = ["create_app"]

PERSIST_INTERVAL_S = 0.5
"""Product states changed by the agents are written to the table at most this often (the ticker writes too)."""

STARTUP_HOLD_MS = 30_000
"""How long a newly assigned partition whose position is not known yet holds its unit's watermark."""

FETCH_MAX_WAIT_MS = 50
"""How long the broker may hold a fetch of partitions that have nothing new. Faust asks for 1500 ms, and the
consumer keeps one fetch per broker in flight: while one waited on quiet partitions (reviews, order lines),
the busy ones were not fetched either, and the worker sat idle with records waiting. The embedded broker
also answered such a fetch only after about a third of its wait even when records had arrived meanwhile
(forwarded order lines took ~0.5 s to come back, and every window close waited for them)."""

log = logging.getLogger(__name__)


class InputTopic(faust.Topic):  # type: ignore[misc]
    """An input topic whose agent's buffer Faust does not empty when the flow resumes after a rebalance.

    After restoring the tables, Faust seeks the input partitions back to their committed offsets, and
    only later resumes the flow, which clears the agents' buffers: records fetched in between were dropped
    while the consumer's read position had already moved past them, and Faust then committed over the gap
    (a restarted worker lost ~10 records per partition this way; seen after a SIGKILL and in rebalances).
    Kept, a record read twice is recognised by the per-product offsets (``Runtime._replayed``), and a record
    of a partition this worker no longer owns is skipped (``moved`` in ``create_app``)."""

    @property
    def queue(self) -> Any:
        if self._queue is None:
            maxsize = self.maxsize if self.maxsize is not None else self.app.conf.stream_buffer_maxsize
            self._queue = HeldQueue(self.app, maxsize=maxsize, flow_control=self.app.flow_control,
                                    clear_on_resume=False)
        return self._queue


class HeldQueue(ThrowableQueue):  # type: ignore[misc]
    """An input topic's buffer that hands out no record while the flow is suspended (a rebalance), and
    stamps each record it hands out with the consumer generation of that moment.

    Faust's stream *skips and acknowledges* a record it takes from its buffer while the flow is suspended
    or whose generation is not the current one (records fetched around a rebalance): acknowledged, such a
    record was committed over and never counted (seen: a partition's new owner started one record after
    the committed offset). Here the stream sees an empty buffer until the flow resumes, and then gets the
    kept records as current; whether one is still this worker's to count is decided when it is processed
    (``moved`` in ``create_app``; a record counted before is recognised by the per-product offsets)."""

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = app
        self._getting = False

    def _current(self, event: Any) -> Any:
        message = getattr(event, "message", None)
        if message is not None:
            if not hasattr(event, "fetched_generation"):
                event.fetched_generation = message.generation_id  # read by ``in_order`` in create_app
            message.generation_id = self._app.consumer_generation_id
        return event

    def empty(self) -> bool:
        # The stream takes a record with get_nowait when the buffer is not empty, else awaits get. Inside
        # get, asyncio's own wait loop must see the real state (else a suspension while it waits would
        # leave it waiting for a new record with records already there).
        return super().empty() or (not self._getting and not self._flow_control.is_active())

    def get_nowait(self) -> Any:
        return self._current(super().get_nowait())

    async def get(self) -> Any:
        while True:
            await self._flow_control.acquire()
            self._getting = True
            try:
                event = await super().get()
            finally:
                self._getting = False
            if self._flow_control.is_active():
                return self._current(event)
            self._queue.appendleft(event)  # type: ignore[attr-defined]  # suspended while waiting: in front again


def shorten_fetch_wait(app: faust.App, wait_ms: int = FETCH_MAX_WAIT_MS) -> bool:
    """Set the worker consumer's fetch wait (Faust hard-codes it; the next fetch request uses the new value).
    False, with a warning, if the pinned Faust/aiokafka no longer have the attributes it sets."""
    try:
        fetcher = app.consumer._thread._ensure_consumer()._fetcher  # type: ignore[attr-defined]
        fetcher._fetch_max_wait_ms = wait_ms
        return True
    except AttributeError as exc:
        log.warning("cannot shorten the consumer's fetch wait (Faust/aiokafka internals changed): %s", exc)
        return False


def create_app(settings: Settings, bootstrap: str, *, clock: Clock | None = None,
               scorer: Scorer | None = None) -> tuple[faust.App, Runtime]:
    """Build the worker: topics, the product-state table, agents, timers and the HTTP server. ``scorer``:
    review sentiment (default: the model of STREAMPROC_MODEL_DIR or the packaged one; ConfigError if missing)."""
    if scorer is None:
        scorer = load_scorer(settings.model_dir, threads=settings.sentiment_threads)
    app = faust.App(
        settings.app_id,
        broker=",".join(f"kafka://{b.strip()}" for b in bootstrap.split(",")),
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        key_serializer="raw",
        value_serializer="raw",
        producer_linger_ms=5,
        producer_max_batch_size=256 * 1024,
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=16_384,
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_wait_empty=False,
        table_cleanup_interval=3600.0,
        # A killed worker's partitions move on after 10 s, not Faust's default 60 s.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # The check compares the changelog offsets a store has applied with the changelog's end offset, and
        # crashed workers where the end offset it got was stale: the in-memory store after a rebalance (a
        # partition kept), RocksDB after a SIGKILL on the embedded broker (553 > 543). Without it Faust reads
        # each changelog partition on from what the store holds; the crash and rebalance tests check the result.
        recovery_consistency_check=False,
    )
    # Table recovery reads each changelog partition to its end offset: ask for ends that are right also on
    # the embedded broker (end_offsets.py). Hooked where Faust builds its consumer, before any rebalance.
    end_offsets = EndOffsets(bootstrap, client_kwargs(settings))
    new_consumer = app._new_consumer

    def consumer_with_true_ends() -> Any:
        consumer = new_consumer()
        consumer.highwaters = end_offsets.wrap(consumer.highwaters,  # type: ignore[method-assign,assignment]
                                               lambda tp: tp.topic.endswith("-changelog"))
        return consumer

    app._new_consumer = consumer_with_true_ends  # type: ignore[method-assign]
    metrics = Metrics()
    topics = {name: InputTopic(app, topics=[settings.topic(name)], key_type=bytes, value_type=bytes,
                               partitions=settings.partitions)
              for name in INPUT_TOPICS}
    topics[ORDER_ITEMS] = InputTopic(app, topics=[f"{settings.app_id}-order-items"], key_type=bytes,
                                     value_type=bytes, partitions=settings.partitions, internal=True)
    outputs = {name: settings.topic(name) for name in ("alerts", "product-features", "dead-letters", "scored-reviews")}
    outputs[ORDER_ITEMS] = f"{settings.app_id}-order-items"
    # Keyed by the raw product id, so that Kafka's partitioner puts a product's changelog records on the
    # partition of its unit (as partition_for does for its input). JSON keys ('"P1"') hashed elsewhere: a
    # partition's products then lived in other partitions' changelogs, and a rebalance lost their state.
    # RocksDB: Faust's store files writes under the current event's partition and has none after a batch
    # or in a timer; faust_store files each product under its own partition.
    products = app.Table("products", partitions=settings.partitions, use_partitioner=True,
                         key_type=bytes, value_type=bytes,
                         store=faust_store.URL if settings.store == "rocksdb://" else None)

    in_flight: list[Any] = []
    # One batch at a time: agents and the ticker share the engine, and a batch's state is stored only
    # after its outputs are acknowledged — interleaving would let one coroutine store another's state early.
    step_lock = asyncio.Lock()

    async def send(logical: str, key: bytes | None, value: bytes, headers: Any) -> None:
        # Straight to the producer: its accumulator batches; Faust's own send buffer adds nothing here.
        in_flight.append(await app.producer.send(outputs[logical], key, value, partition=None, timestamp=None,
                                                 headers=headers))

    runtime = Runtime(settings, send, metrics=metrics, clock=clock or SystemClock(), scorer=scorer)
    runtime.assigned = set()  # a member of a consumer group: the partitions it is not assigned are owned elsewhere
    # Alert delivery (docs/alert-delivery.md): marks and repeats on the way to `alerts`; webhooks read `alerts`.
    silence_store = SilenceStore()
    silence_log = SilenceLog(bootstrap, f"{settings.app_id}-silences", silence_store, client_kwargs(settings))
    silences = SilenceService(silence_store, silence_log.persist)
    runtime.notifier = Notifier(silences=silence_store, repeat_interval_ms=settings.alert_repeat_interval_ms,
                                metrics=metrics,
                                categories=CategoryEngine(runtime.engine, dataclasses.replace(
                                    settings.detector_config(), warmup_ms=settings.category_warmup_ms)),
                                owned=lambda a: a["labels"].get("scope") == "category"
                                or a["labels"].get("product_id") in runtime.engine.index)
    delivery = DeliveryService(settings, bootstrap, metrics=metrics, clock=runtime.clock) \
        if settings.webhook_urls else None
    topic_logical = {settings.topic(n): n for n in INPUT_TOPICS}
    topic_logical[f"{settings.app_id}-order-items"] = ORDER_ITEMS
    state = {"recovered": False, "assigned": False}

    unacked: list[Any] = []
    """Input events counted in state that is not stored yet: acknowledged (so committable) by ``persist``."""
    persisted_at = [time.monotonic()]

    async def persist() -> None:
        """Write the changed products to the table, once the outputs of their closes are acknowledged (a
        state that says "window closed" is never stored before the window's records are), then acknowledge
        the input events that state counts: Faust commits an input offset only once the state that counted
        it is in the table (it flushes the producer before it commits)."""
        if in_flight:
            batch = in_flight[:]
            in_flight.clear()
            await asyncio.gather(*batch)
        upserts, deletes = runtime.drain_dirty()
        for pid, snap in upserts.items():
            products[pid.encode()] = snap
        for pid in deletes:
            products.pop(pid.encode(), None)
        for event in unacked:
            event.ack()
        unacked.clear()
        persisted_at[0] = time.monotonic()

    async def close_and_store() -> None:
        """After a batch (agents) or on the timer, under the lock: close what became final, publish it, and
        store the changed products at most every PERSIST_INTERVAL_S (under load a batch rewrote most
        products' snapshots, every batch)."""
        touch_backlogged()
        await runtime.tick()
        if time.monotonic() - persisted_at[0] >= PERSIST_INTERVAL_S:
            await persist()

    def hold_acks(events: list[Any]) -> None:
        """Keep Faust from acknowledging a batch's events when the batch ends: ``persist`` does, once their
        state is stored (see ``counted``). Called as the batch arrives, before anything is awaited: take_events
        also acknowledges a batch the agent was stopped in the middle of (at shutdown, in its ``finally``),
        and events never counted were committed — and, since Faust then commits past the oldest unacknowledged
        offset (it reads the committed offset as the last one processed), one counted but not yet stored too."""
        for event in events:
            if not event.message.acked:
                event.message.incref()

    def counted(events: list[Any]) -> None:
        """The batch's events are counted in state: acknowledged by the next ``persist``."""
        unacked.extend(event for event in events if not event.message.acked)

    def make_agent(logical: str) -> None:
        async def agent(stream: Any) -> None:
            reviews = logical == "reviews"  # scored in batches of their own size and wait, see below
            async for events in stream.take_events(settings.sentiment_batch if reviews else settings.batch_size,
                                                    within=settings.sentiment_wait_ms / 1000 if reviews else 0.05):
                hold_acks(events)
                recs = [Record(e.message.topic, e.message.partition, e.message.offset, e.message.key,
                               e.message.value, list(e.message.headers or [])) for e in events]
                # Sentiment first, in a thread and outside the lock: the other agents go on meanwhile.
                scored = await runtime.score_reviews(recs) if reviews else None
                while True:
                    # Never between a revocation and the restore after it: the units are being rebuilt.
                    await restored.wait()
                    async with step_lock:
                        if not restored.is_set():
                            continue
                        owned = app.consumer.assignment()
                        keep = [i for i, e in enumerate(events) if not moved(e, owned) and in_order(e)]
                        if len(keep) < len(events):
                            recs = [recs[i] for i in keep]
                            scored = [scored[i] for i in keep] if scored is not None else None
                        with metrics.batch_seconds.labels(logical).time():
                            await runtime.on_records(logical, recs, scored)
                            counted(events)
                            await close_and_store()
                    break

        agent.__name__ = f"{logical.replace('-', '_')}_agent"
        app.agent(topics[logical], name=f"streamproc.{logical}")(agent)

    for logical in (*INPUT_TOPICS, ORDER_ITEMS):
        make_agent(logical)

    def moved(event: Any, owned: Any) -> bool:
        """An event an agent had buffered before a rebalance that took its partition away: whoever owns the
        partition now reads it again from the committed offset. It is skipped, and marked acknowledged so
        that this worker never commits its offset. (Buffered events of partitions kept are processed: a
        record read again after the rebalance is then skipped as already counted.)"""
        if event.message.tp in owned:
            return False
        event.message.acked = True
        return True

    next_offset: dict[Any, int] = {}
    """Per input partition, the offset after the last record processed since its assignment."""

    def in_order(event: Any) -> bool:
        """Whether the event may be counted now: records are counted in offset order. After a rebalance Faust
        seeks a partition back to its committed offset, but records fetched before — still on their way
        into the agents' buffers — can arrive first, ahead of a range not yet read again; counted, they
        moved the products' offsets past that range, whose records were then skipped as counted before (a
        trace showed a new owner count reviews 214-215 before 146-213). Such a record (ahead of the next
        offset, and fetched under an earlier consumer generation) is skipped, marked acknowledged so that
        its offset is never committed from it: it is read again, in order, after the seek. A record fetched
        under the current generation is counted even past a gap (transaction markers take offsets)."""
        tp, offset = event.message.tp, event.message.offset
        expected = next_offset.get(tp)
        if expected is None:
            committed = app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
            expected = committed if committed is not None else offset
        if offset > expected and getattr(event, "fetched_generation", None) != app.consumer_generation_id:
            event.message.acked = True
            return False
        next_offset[tp] = max(expected, offset + 1)
        return True

    restored = asyncio.Event()
    """Set once the table is restored after an assignment, cleared at a revocation."""

    assigned_tps: set[Any] = set()

    highwaters: dict[Any, int] = {}
    assigned_high: dict[Any, int] = {}
    order_items_topic = f"{settings.app_id}-order-items"
    assigned_at: dict[Any, int] = {}

    def touch_backlogged() -> None:
        """Streams with records still waiting (in the broker or in Faust's buffers) are slow, not idle.
        A partition not yet heard of since assignment holds its unit until its position is known (at most
        STARTUP_HOLD_MS): Faust may fetch other partitions first for longer than the idle timeout."""
        wall = runtime.clock.now_ms()
        for tp in assigned_tps:
            stream = f"{topic_logical[tp.topic]}/{tp.partition}"
            high = highwaters.get(tp)
            if tp.topic == order_items_topic and high is not None:
                # Order lines written before the assignment (by a previous owner or before a restart) hold
                # the unit until read; later ones are covered by the holds, and the front markers that keep
                # arriving on this topic must not keep it "backlogged" for ever.
                high = assigned_high.setdefault(tp, high)
            done = runtime.processed_offsets.get((tp.topic, tp.partition))
            if done is None:
                if high is None:
                    if wall - assigned_at.get(tp, wall) < STARTUP_HOLD_MS:
                        runtime.engine.touch_stream(tp.partition, stream, wall)
                    continue
                # The committed offset is the next record to process (Faust seeds it at assignment;
                # 0 and "none yet" both read as None). Fetched is not processed: the fetch position
                # runs ahead while records wait in Faust's buffers.
                done = (app.consumer._committed_offset.get(tp) or 0) - 1
            elif high is None:
                continue
            if high - 1 > done:
                runtime.engine.touch_stream(tp.partition, stream, wall)

    async def refresh_highwaters() -> None:
        if not assigned_tps:
            return
        try:
            found = await app.consumer.highwaters(*assigned_tps)
        except Exception as exc:  # noqa: BLE001 - consumer not ready during a rebalance
            log.debug("consumer positions unavailable: %s", exc)
            return
        # The last fetch's high watermark is right where the listed end offset may fall short (end_offsets.py);
        # a partition not fetched yet since its assignment gets its end corrected with a fetch of its own.
        unfetched = {tp: h for tp, h in found.items() if h and app.consumer.highwater(tp) is None}
        if unfetched:
            try:
                fixed: dict[Any, Any] = dict(found)
                fixed.update(await end_offsets.correct(unfetched))
                found = fixed
            except Exception as exc:  # noqa: BLE001 - the next refresh tries again
                log.debug("end offsets not corrected: %s", exc)
        for tp, h in found.items():
            fetched = app.consumer.highwater(tp)
            if h is not None or fetched is not None:
                highwaters[tp] = max(h or 0, fetched or 0)
        record_consumer_lag(metrics.consumer_lag, {tp: highwaters[tp] for tp in assigned_tps if tp in highwaters},
                            runtime.processed_offsets, app.consumer._committed_offset)

    @app.timer(interval=0.25)
    async def ticker() -> None:
        await refresh_highwaters()
        async with step_lock:
            if not restored.is_set():
                return  # a rebalance is rebuilding the units
            await close_and_store()

    @products.on_recover  # type: ignore[misc]
    async def recovered() -> None:
        # Only the products of the partitions assigned now: the in-memory store keeps what this worker wrote
        # for partitions it has lost since (their new owner has the current state). From the consumer, not
        # from on_assigned: Faust may finish a short recovery before it sends that signal.
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic in topic_logical}
        # A unit this worker kept through the rebalance keeps its in-memory state, the newest: the changelog
        # read back during recovery can end short of this worker's last writes (a lagging end offset, seen
        # on the embedded broker) and would put an older snapshot back.
        kept = {unit for unit in owned if runtime.reclaim(unit)}
        runtime.parked.clear()
        n = 0
        for key, snap in list(products.items()):
            unit = partition_for(key.decode(), settings.partitions)
            if unit in owned and unit not in kept:
                runtime.restore(snap)
                n += 1
        runtime.notifier.restore(runtime.engine.firing(), runtime.clock.now_ms())
        # The assigned streams hold their units before the first tick: Faust may finish recovery before it
        # signals the assignment, and a unit rebuilt with only its restored products would move its
        # watermark to their newest event (clicks run ahead of orders) and make the next orders late.
        register_assigned(app.consumer.assignment())
        restored.set()
        state["recovered"] = True
        runtime.ready = True
        log.info("restored %d products from the table; kept units %s", n, sorted(kept))

    def register_assigned(tps: Any) -> None:
        """Register the input streams of newly assigned partitions (idempotent: at recovery and at the signal)."""
        for tp in tps:
            logical = topic_logical.get(tp.topic)
            if logical is not None and tp not in assigned_tps:
                runtime.assign(logical, tp.partition)
                assigned_tps.add(tp)
                assigned_at[tp] = runtime.clock.now_ms()

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(sender: Any, assigned: Any, **kw: Any) -> None:
        # Products set aside at a revocation are this worker's newest state only if the unit comes straight
        # back; once an assignment without it is seen, another worker may have moved it on.
        shorten_fetch_wait(app)  # the consumer (and its fetcher) exist once partitions are assigned
        units = {tp.partition for tp in assigned if tp.topic in topic_logical}
        for unit in [u for u in runtime.parked if u not in units]:
            del runtime.parked[unit]
        register_assigned(assigned)
        state["assigned"] = True

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def on_revoked(sender: Any, revoked: Any, **kw: Any) -> None:
        # After the batch in progress (outputs acknowledged, state stored): the state of a unit must not
        # change once it is dropped, nor a dropped unit come back from a late batch (see ``moved``).
        async with step_lock:
            await persist()  # the state of the events read so far, and their acknowledgement, before it moves
            # Revoked before the recovery of the assignment finished: the units hold no state of their own.
            recovered_units = restored.is_set()
            restored.clear()
            # The table's changelog records of the last batches go out now, before the partitions' next
            # owner (or this worker again) reads the changelog back.
            await app.producer.flush()
            assigned_tps.difference_update(revoked)
            for tp in revoked:
                next_offset.pop(tp, None)  # the next assignment starts again from the committed offset
                highwaters.pop(tp, None)
                assigned_high.pop(tp, None)
            for unit in {tp.partition for tp in revoked if tp.topic in topic_logical}:
                runtime.revoke(unit, recovered=recovered_units)

    @app.task
    async def serve_web() -> None:
        """The HTTP API, silences and webhook delivery, for as long as the worker runs."""
        await silence_log.start()
        if delivery is not None:
            await delivery.start()
        server = WebServer(runtime, settings, silences)  # its own thread and loop: readers never hold up processing
        await server.start()
        try:
            log.warning("streamproc web on http://%s:%d", settings.web_host, settings.web_port)
            await asyncio.Event().wait()
        finally:
            await server.stop()
            if delivery is not None:
                await delivery.stop()
            await silence_log.stop()
            await end_offsets.stop()

    app.streamproc_runtime = runtime  # type: ignore[attr-defined]
    return app, runtime
