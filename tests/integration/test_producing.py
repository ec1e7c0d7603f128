"""Output batches (streamproc.producing) on both brokers: keyed records land where ``send`` puts them, a full
batch is split, and each batch's acknowledgement gives its first offset."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamproc.producing import Batches

from .support import read_topic


async def _run(bootstrap: str) -> None:
    batched, single = f"batched-{uuid.uuid4().hex[:8]}", f"single-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(batched, 4, 1), NewTopic(single, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=16 * 1024)
    await producer.start()
    try:
        batches = Batches(producer)
        keys = [f"P{i:05d}".encode() for i in range(300)]
        big = b"x" * 100_000  # over the batch size: a batch of its own
        for i, key in enumerate(keys):
            await batches.add(batched, key, big if i == 150 else b"v%d" % i, [("h", b"1")] if i == 7 else None)
            await (await producer.send(single, b"v%d" % i, key=key))
        for _ in range(40):
            await batches.add(batched, b"fixed", b"w" * 1000, partition=2)
        sent = await batches.flush()
        acks = await asyncio.gather(*(s.future for s in sent))
        assert sum(s.records for s in sent) == 340
        assert sum(1 for s in sent if s.partition == 2 and s.topic == batched) >= 3  # 40 kB in 16 kB batches
    finally:
        await producer.stop()
    got = await read_topic(bootstrap, batched, until=lambda r: len(r) >= 340, idle_s=1.0)
    ref = await read_topic(bootstrap, single, until=lambda r: len(r) >= 300, idle_s=1.0)
    assert len(got) == 340 and len(ref) == 300
    where = {r.key: r.partition for r in ref}
    assert all(where[r.key] == r.partition for r in got if r.key != b"fixed")
    assert {r.partition for r in got if r.key == b"fixed"} == {2}
    assert next(r for r in got if r.key == keys[150]).value == b"x" * 100_000
    assert next(r for r in got if r.key == keys[7]).headers == (("h", b"1"),)
    ends: dict[int, int] = {}
    for s, md in zip(sent, acks, strict=True):
        ends[s.partition] = max(ends.get(s.partition, 0), md.offset + s.records)
    for p, end in ends.items():
        assert end == 1 + max(r.offset for r in got if r.partition == p)


def test_batches_key_split_and_acknowledge_like_send(broker: str) -> None:
    asyncio.run(_run(broker))
