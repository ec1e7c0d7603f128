"""Product snapshots in a compacted changelog topic: what a unit's next owner restores.

Topic ``<app id>-products-changelog`` has one partition per unit; a product's snapshot (bytes from
:meth:`Runtime.drain_dirty`) is written to its unit's partition under the product id, an evicted
product as a tombstone. Restoring a unit reads its partition from the beginning up to the high watermark
of the fetch (the embedded broker lists end offsets short of it; a fetch's high watermark is right on
both brokers), the last record per key winning.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from .errors import StreamprocError
from .runtime import partition_for

__all__ = ["ChangelogStore"]


class ChangelogStore:
    """Writes snapshots through the worker's producer; reads partitions back with an assign-only consumer."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, producer: AIOKafkaProducer, *,
                 client_kwargs: Mapping[str, Any] | None = None, restore_timeout_s: float = 300.0) -> None:
        self.topic = topic
        self.partitions = partitions
        self.producer = producer
        self.restore_timeout_s = restore_timeout_s
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})
        self.reader: AIOKafkaConsumer = None  # type: ignore[assignment]  # created in start (needs the loop)
        self.written = 0

    async def start(self) -> None:
        self.reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                       auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                       max_partition_fetch_bytes=16 * 1024 * 1024, **self.client_kwargs)
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()

    async def write(self, upserts: Mapping[str, bytes], deletes: Iterable[str]) -> None:
        """Write snapshots (and tombstones) and wait until the brokers acknowledge every one."""
        sent = []
        for pid, snap in upserts.items():
            sent.append(await self.producer.send(self.topic, snap, key=pid.encode(),
                                                 partition=partition_for(pid, self.partitions)))
        for pid in deletes:
            sent.append(await self.producer.send(self.topic, None, key=pid.encode(),
                                                 partition=partition_for(pid, self.partitions)))
        if sent:
            await asyncio.gather(*sent)
            self.written += len(sent)

    async def read(self, units: Iterable[int]) -> dict[int, dict[bytes, bytes]]:
        """The newest snapshot of every product of each unit, by product id (bytes)."""
        tps = [TopicPartition(self.topic, u) for u in units]
        out: dict[int, dict[bytes, bytes]] = {tp.partition: {} for tp in tps}
        if not tps:
            return out
        c = self.reader
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        pending = set(tps)
        deadline = time.monotonic() + self.restore_timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise StreamprocError(f"restoring {sorted(tp.partition for tp in pending)} of {self.topic} took "
                                      f"more than {self.restore_timeout_s:.0f} s")
            batch = await c.getmany(*pending, timeout_ms=200, max_records=100_000)
            for tp, records in batch.items():
                snaps = out[tp.partition]
                for r in records:
                    if r.value is None:
                        snaps.pop(r.key, None)
                    else:
                        snaps[r.key] = r.value
            for tp in list(pending):
                high = c.highwater(tp)
                if high is not None and await c.position(tp) >= high:
                    pending.discard(tp)
        c.unsubscribe()  # else the reader keeps fetching these partitions in the background
        return out
