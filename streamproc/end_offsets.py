"""End offsets a worker can trust, also from the embedded broker.

Faust restores a table by reading its changelog partitions up to their end offsets, which it asks with
ListOffsets(latest). The embedded broker (Tansu 0.6) answers that with the base offset of the partition's
last record batch + 1, not the offset after its last record: with several changelog records in the last
batch (the producer batches them), recovery stopped short — or did not start — and a restored product missed
its last updates. The high watermark in a Fetch response is right, so :class:`EndOffsets` fetches the
record before the listed end of each partition and takes the larger of the two. On Apache Kafka both agree
and the correction changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

__all__ = ["EndOffsets", "corrected"]


def corrected(listed: int, fetched_highwater: int | None, last_fetched: int | None) -> int:
    """The end offset of a partition: what ListOffsets said, or more if a fetch saw more."""
    return max(listed, fetched_highwater or 0, -1 if last_fetched is None else last_fetched + 1)


class EndOffsets:
    """Corrects listed end offsets with one fetch per partition (an assign-only consumer, no group)."""

    def __init__(self, bootstrap: str, client_kwargs: Mapping[str, Any] | None = None,
                 timeout_s: float = 10.0) -> None:
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})
        self.timeout_s = timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def correct(self, listed: Mapping[Any, int | None]) -> dict[Any, int | None]:
        """``listed``: end offsets by topic-partition (any (topic, partition) tuple); returns them corrected.
        A partition whose fetch does not answer within the timeout keeps its listed offset."""
        out = dict(listed)
        todo = {TopicPartition(tp[0], tp[1]): tp for tp, end in listed.items() if end}
        if not todo:
            return out
        async with self._lock:
            if self._consumer is None:
                self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                                  enable_auto_commit=False, fetch_max_wait_ms=50,
                                                  **self.client_kwargs)
                await self._consumer.start()
            c = self._consumer
            c.assign(list(todo))
            for atp, tp in todo.items():
                c.seek(atp, int(listed[tp]) - 1)  # type: ignore[arg-type]
            pending = set(todo)
            deadline = time.monotonic() + self.timeout_s
            while pending and time.monotonic() < deadline:
                found = await c.getmany(*pending, timeout_ms=200, max_records=1_000_000)
                for atp, recs in found.items():
                    tp = todo[atp]
                    out[tp] = corrected(int(listed[tp]), c.highwater(atp),  # type: ignore[arg-type]
                                        recs[-1].offset if recs else None)
                    pending.discard(atp)
            return out

    def wrap(self, highwaters: Callable[..., Awaitable[Mapping[Any, int | None]]],
             wanted: Callable[[Any], bool]) -> Callable[..., Awaitable[Mapping[Any, int | None]]]:
        """A drop-in for Faust's ``consumer.highwaters(*tps)`` that corrects the partitions ``wanted`` picks."""
        async def highwaters_corrected(*tps: Any) -> Mapping[Any, int | None]:
            found = await highwaters(*tps)
            pick = {tp: end for tp, end in found.items() if wanted(tp)}
            if not pick:
                return found
            return {**found, **await self.correct(pick)}
        return highwaters_corrected

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
