"""The real Apache Kafka (KRaft, from Maven Central) fixtures: exact counts on one node, no acknowledged
record lost when a broker of three is SIGKILLed mid-produce."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tests.kafka.apache_kafka import KafkaCluster
from tests.kafka.conftest_plugin import SCRAM_PASSWORD, SCRAM_USER

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, name: str, partitions: int, rf: int, **configs: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=rf, topic_configs=configs)]
        )
        # wait until every partition has a leader in the metadata the clients will see
        deadline = time.monotonic() + 30
        while True:
            desc = await admin.describe_topics([name])
            parts = desc[0]["partitions"]
            if len(parts) == partitions and all(p["leader"] >= 0 for p in parts):
                return
            assert time.monotonic() < deadline, f"topic {name} has no leaders: {desc}"
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _consume_ids(bootstrap: str, topic: str, want: set[int], deadline_s: float) -> tuple[set[int], int]:
    """Read ``topic`` in a fresh consumer group until every id in ``want`` was seen; (seen ids, records)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        max_poll_records=2000,
    )
    await consumer.start()
    seen: set[int] = set()
    records = 0
    try:
        deadline = time.monotonic() + deadline_s
        while not want <= seen and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for msgs in batches.values():
                for m in msgs:
                    records += 1
                    seen.add(int(m.key))
        await consumer.commit()
    finally:
        await consumer.stop()
    return seen, records


async def test_single_node_exact_count(apache_kafka: KafkaCluster) -> None:
    bootstrap = apache_kafka.bootstrap
    topic = f"exact-{uuid.uuid4().hex[:8]}"
    n = 10_000
    await _create_topic(bootstrap, topic, partitions=6, rf=1)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=str(i).encode(), value=b"x" * 100) for i in range(n)]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    assert len({m.partition for m in metas}) == 6

    seen, records = await _consume_ids(bootstrap, topic, set(range(n)), deadline_s=60)
    assert records == n  # exactly once each: no loss, no duplicate
    assert seen == set(range(n))


async def test_single_node_sasl_scram(apache_kafka: KafkaCluster) -> None:
    assert apache_kafka.sasl_bootstrap
    topic = f"scram-{uuid.uuid4().hex[:8]}"
    await _create_topic(apache_kafka.bootstrap, topic, partitions=1, rf=1)
    auth = {
        "bootstrap_servers": apache_kafka.sasl_bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": SCRAM_USER,
    }
    producer = AIOKafkaProducer(**auth, sasl_plain_password=SCRAM_PASSWORD)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"authenticated", key=b"1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic, **auth, sasl_plain_password=SCRAM_PASSWORD, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), 30)
        assert msg.value == b"authenticated"
    finally:
        await consumer.stop()

    intruder = AIOKafkaProducer(**auth, sasl_plain_password="wrong-password")
    with pytest.raises(KafkaError):
        await intruder.start()
    await intruder.stop()


async def test_three_nodes_no_acknowledged_record_lost_when_a_broker_dies(
    apache_kafka_cluster: KafkaCluster,
) -> None:
    cluster = apache_kafka_cluster
    bootstrap = cluster.bootstrap
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    n = 6_000
    await _create_topic(bootstrap, topic, partitions=6, rf=3, **{"min.insync.replicas": "2"})

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30_000,
        retry_backoff_ms=200,
    )
    await producer.start()
    acked: set[int] = set()
    failed: list[tuple[int, str]] = []

    async def send(i: int) -> None:
        try:
            fut = await producer.send(topic, key=str(i).encode(), value=b"y" * 100)
            await fut
            acked.add(i)
        except KafkaError as e:
            failed.append((i, repr(e)))

    # the victim: a broker that leads partitions of the topic (and, if it is the quorum leader, also the
    # active controller); killed after half the records are acknowledged, while the rest are in flight
    victim = cluster.quorum_leader()
    try:
        await asyncio.gather(*(send(i) for i in range(n // 2)))
        assert len(acked) == n // 2, failed[:5]
        in_flight = [asyncio.ensure_future(send(i)) for i in range(n // 2, n)]
        await asyncio.sleep(0)
        t_kill = time.monotonic()
        cluster.kill_node(victim)
        await asyncio.gather(*in_flight)
        after_kill_s = time.monotonic() - t_kill
    finally:
        await producer.stop()
    assert not cluster.nodes[victim].running
    # with 2 of 3 replicas alive min.insync.replicas=2 still holds: acks=all keeps succeeding
    assert len(acked) >= n * 0.9, (len(acked), failed[:5])

    survivors = cluster.running_bootstrap
    seen, records = await _consume_ids(survivors, topic, acked, deadline_s=90)
    lost = acked - seen
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {sorted(lost)[:10]}"
    assert records >= len(acked)
    print(
        f"\nacked {len(acked)}/{n}, failed {len(failed)}, consumed {records} records; "
        f"second half finished {after_kill_s:.1f}s after the kill"
    )

    t0 = time.monotonic()
    cluster.restart_node(victim)
    assert cluster.nodes[victim].running
    print(f"node {victim + 1} back in {time.monotonic() - t0:.1f}s")
