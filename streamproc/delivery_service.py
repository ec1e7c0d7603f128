"""The webhook delivery loop: one aiokafka consumer group per receiver on the ``alerts`` topic.

See :mod:`streamproc.delivery` for the design and the pure parts. The worker starts a
:class:`DeliveryService` as a task; ``python -m streamproc.delivery_service`` runs the same service alone,
configured by the same environment (``STREAMPROC_BROKER`` required), until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from .clock import Clock, SystemClock
from .delivery import (
    EXCERPT_CHARS,
    DeliveryConfig,
    Receiver,
    dead_letter_record,
    deliver,
    encode_body,
    parse_receivers,
    request_headers,
    skip_reason,
)
from .kafka_auth import client_kwargs
from .metrics import Metrics
from .settings import Settings

__all__ = ["ReceiverLoop", "DeliveryService", "main"]

log = logging.getLogger(__name__)


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Notes which assigned partitions have no committed offset yet (a receiver seen for the first time)."""

    def __init__(self, owner: ReceiverLoop, consumer: AIOKafkaConsumer) -> None:
        self.owner = owner
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            try:
                self.owner.fresh[tp] = (await self.consumer.committed(tp)) is None
            except KafkaError:
                self.owner.fresh[tp] = False


class ReceiverLoop:
    """Delivers the ``alerts`` topic to one receiver; commits only what was delivered or dead-lettered."""

    def __init__(self, receiver: Receiver, cfg: DeliveryConfig, *, bootstrap: str, topic: str, group_id: str,
                 dead_letter_topic: str, producer: AIOKafkaProducer, session: aiohttp.ClientSession,
                 metrics: Metrics, clock: Clock, client_kwargs: dict[str, Any] | None = None) -> None:
        self.receiver = receiver
        cfg = cfg.for_receiver(receiver)
        self.client_kwargs = client_kwargs or {}
        """Kafka security settings (kafka_auth.client_kwargs) of the consumer."""
        self.cfg = cfg
        self.bootstrap = bootstrap
        self.topic = topic
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.producer = producer
        self.session = session
        self.metrics = metrics
        self.clock = clock
        self.fresh: dict[TopicPartition, bool] = {}
        self.next_offset: dict[TopicPartition, int] = {}
        self.delivered = 0
        """Alerts accepted by the receiver (counted per alert, duplicates included)."""
        self.posts = 0
        """POSTs the receiver accepted."""

    # -- plumbing -----------------------------------------------------------------------------

    def _label(self) -> str:
        return self.receiver.url

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any, str]:
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        # Never follow a redirect: the body would be lost (a GET) and the signature sent to another host.
        async with self.session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as resp:
            raw = await resp.content.read(EXCERPT_CHARS * 4)
            return resp.status, resp.headers, raw.decode("utf-8", "replace")

    def _now_s(self) -> float:
        return self.clock.now_ms() / 1000

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=self.cfg.max_alerts,
            # A batch may be retried up to the deadline between two polls.
            max_poll_interval_ms=int((self.cfg.deadline_s + 2 * self.cfg.timeout_s + 60) * 1000),
            session_timeout_ms=10_000, heartbeat_interval_ms=2_000, rebalance_timeout_ms=30_000,
            # An alert reaches its receivers within ~0.1 s of its write (the default 500 ms wait delayed it
            # by up to that on the embedded broker, which answers late).
            fetch_max_wait_ms=100, max_partition_fetch_bytes=1 << 20, **self.client_kwargs)

    async def run(self) -> None:
        """Deliver until cancelled."""
        consumer = self._consumer()
        consumer.subscribe([self.topic], listener=_Listener(self, consumer))
        await consumer.start()
        try:
            while True:
                recs = await self._collect(consumer)
                if not recs:
                    continue
                try:
                    await self._handle(recs)
                except (KafkaError, OSError) as exc:  # dead-letter topic unreachable: try the batch again
                    log.warning("webhook %s: could not dead-letter (%s); retrying the batch", self._label(), exc)
                    for tp, first in _first_offsets(recs).items():
                        with contextlib.suppress(Exception):
                            consumer.seek(tp, first)
                    await asyncio.sleep(1.0)
                    continue
                await self._commit(consumer, recs)
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()

    async def _collect(self, consumer: AIOKafkaConsumer) -> list[Any]:
        """The oldest undelivered alerts, plus what arrives within the group wait of the oldest one."""
        loop = asyncio.get_running_loop()
        found = await consumer.getmany(timeout_ms=1000, max_records=self.cfg.max_alerts)
        recs = [r for batch in found.values() for r in batch]
        self._gauge(consumer, len(recs))
        if not recs:
            return recs
        oldest_s = min(r.timestamp for r in recs) / 1000
        until = loop.time() + max(0.0, min(self.cfg.group_wait_s, oldest_s + self.cfg.group_wait_s - self._now_s()))
        while len(recs) < self.cfg.max_alerts and (left := until - loop.time()) > 0:
            found = await consumer.getmany(timeout_ms=max(1, int(left * 1000)),
                                           max_records=self.cfg.max_alerts - len(recs))
            recs.extend(r for batch in found.values() for r in batch)
        for r in recs:
            tp = TopicPartition(r.topic, r.partition)
            self.next_offset[tp] = max(self.next_offset.get(tp, 0), r.offset + 1)
        self._gauge(consumer, len(recs))
        return recs

    async def _handle(self, recs: list[Any]) -> None:
        url, label, cfg = self.receiver.url, self._label(), self.cfg
        now_s = self._now_s()
        todo: list[tuple[Any, dict[str, Any]]] = []
        for r in recs:
            try:
                alert = orjson.loads(r.value)
                if not isinstance(alert, dict) or "status" not in alert:
                    raise ValueError("not an alert")
            except (orjson.JSONDecodeError, ValueError):
                log.warning("alerts %d/%d is not an alert; skipped", r.partition, r.offset)
                self.metrics.webhook_alerts.labels(label, "invalid").inc()
                continue
            reason = skip_reason(alert, cfg)
            if reason is None and self.fresh.get(TopicPartition(r.topic, r.partition)) \
                    and r.timestamp / 1000 < now_s - cfg.deadline_s:
                reason = "stale"  # published before this receiver existed, and past the deadline anyway
            if reason is not None:
                self.metrics.webhook_alerts.labels(label, reason).inc()
                continue
            todo.append((r, alert))
        if not todo:
            return
        alerts = [a for _, a in todo]
        body = encode_body(self.receiver, alerts, cfg)
        headers = request_headers(body, cfg.secret, str(uuid.uuid4()))
        give_up_at = min(r.timestamp for r, _ in todo) / 1000 + cfg.deadline_s

        def on_retry(cause: str, delay: float) -> None:
            self.metrics.webhook_retries.labels(label, cause).inc()
            self.metrics.webhook_deliveries.labels(label, "retry").inc()

        result = await deliver(url, body, headers, post=self._post, give_up_at_s=give_up_at, cfg=cfg,
                               now_s=self._now_s, sleep=asyncio.sleep, rand=random.uniform, on_retry=on_retry)
        self.metrics.webhook_deliveries.labels(label, result.outcome).inc()
        self.metrics.webhook_alerts.labels(label, result.outcome).inc(len(todo))
        if result.outcome == "delivered":
            self.delivered += len(todo)
            self.posts += 1
            done_s = self._now_s()
            for r, _ in todo:
                self.metrics.webhook_latency.labels(label).observe(max(0.0, done_s - r.timestamp / 1000))
            return
        log.warning("webhook %s: %s (%s) for %d alerts; dead-lettered", url, result.outcome, result.status, len(todo))
        for r, _ in todo:
            value = dead_letter_record(topic=r.topic, partition=r.partition, offset=r.offset, value=r.value,
                                       receiver=self.receiver, result=result, now_ms=self.clock.now_ms())
            hdrs = list(r.headers or []) + [("streamproc-error", b"delivery")]
            await self.producer.send_and_wait(self.dead_letter_topic, value, key=r.key, headers=hdrs)
            self.metrics.dead_letters.labels("alerts", "delivery").inc()

    async def _commit(self, consumer: AIOKafkaConsumer, recs: list[Any]) -> None:
        offsets = {tp: last + 1 for tp, last in _last_offsets(recs).items()}
        try:
            await consumer.commit(offsets)
        except (KafkaError, AssertionError) as exc:  # revoked meanwhile: the new owner delivers again
            log.warning("webhook %s: commit failed (%s); alerts may be delivered twice", self._label(), exc)
            return
        for tp in offsets:
            self.fresh[tp] = False
        self._gauge(consumer, 0)

    def _gauge(self, consumer: AIOKafkaConsumer, in_hand: int) -> None:
        depth = in_hand
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            pos = self.next_offset.get(tp)
            if hw is not None and pos is not None:
                depth += max(0, hw - pos)
        self.metrics.webhook_queue.labels(self._label()).set(depth)


def _first_offsets(recs: Sequence[Any]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for r in recs:
        tp = TopicPartition(r.topic, r.partition)
        out[tp] = min(out.get(tp, r.offset), r.offset)
    return out


def _last_offsets(recs: Sequence[Any]) -> dict[TopicPartition, int]:
    out: dict[TopicPartition, int] = {}
    for r in recs:
        tp = TopicPartition(r.topic, r.partition)
        out[tp] = max(out.get(tp, r.offset), r.offset)
    return out


class DeliveryService:
    """Every configured receiver, each with its own loop, sharing one HTTP session and one producer."""

    def __init__(self, settings: Settings, bootstrap: str, *, metrics: Metrics | None = None,
                 clock: Clock | None = None, cfg: DeliveryConfig | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = metrics or Metrics()
        self.clock = clock or SystemClock()
        self.cfg = cfg or DeliveryConfig.from_settings(settings)
        self.receivers = parse_receivers(settings.webhook_urls)
        self.loops: list[ReceiverLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        """Start one loop per receiver (returns at once; the loops join their groups in the background)."""
        self._session = aiohttp.ClientSession()
        kafka = client_kwargs(self.settings)
        self._producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, **kafka)
        await self._producer.start()
        s = self.settings
        for rcv in self.receivers:
            loop = ReceiverLoop(rcv, self.cfg, bootstrap=self.bootstrap, topic=s.topic("alerts"),
                                group_id=f"{s.app_id}-webhook-{rcv.group_suffix}",
                                dead_letter_topic=s.topic("dead-letters"), producer=self._producer,
                                session=self._session, metrics=self.metrics, clock=self.clock, client_kwargs=kafka)
            self.loops.append(loop)
            self._tasks.append(asyncio.get_running_loop().create_task(_supervise(loop), name=f"webhook {rcv.url}"))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._session is not None:
            await self._session.close()


async def _supervise(loop: ReceiverLoop) -> None:
    """Keep a receiver's loop running: an unexpected error restarts it from the last commit."""
    while True:
        try:
            await loop.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook %s: delivery loop failed; restarting from the last commit", loop.receiver.url)
            await asyncio.sleep(2.0)


async def _serve(settings: Settings, bootstrap: str) -> None:
    from .broker import create_topics, topic_specs

    await create_topics(bootstrap, topic_specs(settings), **client_kwargs(settings))
    service = DeliveryService(settings, bootstrap)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await service.start()
    print(f"streamproc delivery: {len(service.receivers)} receivers on {settings.topic('alerts')}", flush=True)
    try:
        await stop.wait()
    finally:
        await service.stop()


def main(environ: dict[str, str] | None = None) -> int:
    """``python -m streamproc.delivery_service``: webhook delivery alone, against ``STREAMPROC_BROKER``."""
    from .errors import ConfigError

    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        print(f"streamproc delivery: {exc}", file=sys.stderr)
        return 2
    if not settings.broker or not settings.webhook_urls:
        print("streamproc delivery: set STREAMPROC_BROKER and STREAMPROC_WEBHOOK_URLS", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(settings, settings.broker))
    return 0


if __name__ == "__main__":
    sys.exit(main())
