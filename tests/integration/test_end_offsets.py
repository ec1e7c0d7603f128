"""End offsets a worker can trust (streamproc/end_offsets.py), on both brokers.

One record batch of 10 keyed records on a compacted topic, as the table's changelog gets them: the end
offset after it is base + 10. The embedded broker lists base + 1 (its ListOffsets answer is the last
batch's base offset + 1); the corrected end is right on both brokers, and on Apache Kafka equals the listed one.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streamproc.broker import create_topics
from streamproc.end_offsets import EndOffsets, corrected

pytestmark = pytest.mark.integration


async def _one_batch_then_ends(bootstrap: str, topic: str, n: int) -> tuple[int, int, int]:
    await create_topics(bootstrap, [(topic, 1, {"cleanup.policy": "compact"})])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        batch = producer.create_batch()
        for i in range(n):
            assert batch.append(key=b"k%d" % i, value=b"v%d" % i, timestamp=None) is not None
        meta = await (await producer.send_batch(batch, topic, partition=0))
    finally:
        await producer.stop()
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        listed = (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()
    ends = EndOffsets(bootstrap)
    try:
        fixed = (await ends.correct({(topic, 0): listed}))[(topic, 0)]
    finally:
        await ends.stop()
    return meta.offset, listed, fixed  # type: ignore[return-value]


def test_the_end_offset_after_a_batch_counts_every_record_of_it(broker: str) -> None:
    kind = getattr(broker, "kind", "embedded")
    base, listed, fixed = asyncio.run(_one_batch_then_ends(broker, f"end-offsets-{kind}", 10))
    assert fixed == base + 10, (base, listed, fixed)
    if kind == "apache":
        assert listed == fixed  # nothing to correct on Kafka
    assert listed <= fixed


def test_corrected_takes_what_a_fetch_saw_beyond_the_listed_end() -> None:
    assert corrected(6, 15, 14) == 15
    assert corrected(6, None, 14) == 15
    assert corrected(15, 15, None) == 15
    assert corrected(15, None, None) == 15
