"""Product snapshots in a compacted changelog topic: what a unit's next owner restores.

Topic ``<app id>-products-changelog`` has one partition per unit; a product's snapshot (bytes from
:meth:`Runtime.drain_dirty`) is written to its unit's partition under the product id, an evicted
product as a tombstone. Restoring a unit reads its partition from the beginning up to the high watermark
of the fetch (the embedded broker lists end offsets short of it; a fetch's high watermark is right on
both brokers), the last record per key winning.

With ``rocksdb://`` each unit's snapshots are also kept in a RocksDB file under the data directory
(``products-<unit>.db``), with the changelog offset they cover: a unit assigned again reads only the
changelog beyond it (a restart after a crash reads seconds of changelog, not all of it).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from .errors import StreamprocError
from .producing import Batches
from .runtime import partition_for

__all__ = ["ChangelogStore", "LocalSnapshots", "ParkedFiles"]

_OFFSET = b"\x00changelog-offset"
"""Key of a local file's next changelog offset (product ids never start with NUL)."""


class LocalSnapshots:
    """One RocksDB file per unit: product id -> snapshot, and the next changelog offset it covers."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.dbs: dict[int, Any] = {}

    def db(self, unit: int) -> Any:
        db = self.dbs.get(unit)
        if db is None:
            from rocksdict import Options, Rdict

            self.directory.mkdir(parents=True, exist_ok=True)
            db = self.dbs[unit] = Rdict(str(self.directory / f"products-{unit}.db"), options=Options(raw_mode=True))
        return db

    def next_offset(self, unit: int) -> int | None:
        raw = self.db(unit).get(_OFFSET)
        return int(raw) if raw is not None else None

    def apply(self, unit: int, changes: Iterable[tuple[bytes, bytes | None]], next_offset: int) -> None:
        """Write snapshots (None: delete) and the offset they reach, atomically."""
        from rocksdict import WriteBatch

        batch = WriteBatch(raw_mode=True)
        for key, value in changes:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(_OFFSET, str(next_offset).encode())
        self.db(unit).write(batch)

    def snapshots(self, unit: int) -> dict[bytes, bytes]:
        return {k: v for k, v in self.db(unit).items() if k != _OFFSET}

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()
        self.dbs.clear()


class ParkedFiles:
    """Where a worker with ``rocksdb://`` keeps its parked products (``DemandEngine``'s ``Unit.cold``): a RocksDB
    file per unit, so that only their ids stay in the heap. Scratch space: a parked product's newest state is in
    the changelog (and ``products-<unit>.db``) too, so the directory is emptied when the worker starts."""

    def __init__(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
        self.directory = directory
        self._n = itertools.count()

    def __call__(self, unit: int) -> MutableMapping[str, bytes]:
        from rocksdict import Options, Rdict

        self.directory.mkdir(parents=True, exist_ok=True)
        options = Options(raw_mode=True)
        options.set_write_buffer_size(8 << 20)  # scratch: small memtables, the point is to keep memory low
        options.set_max_write_buffer_number(2)
        return _ParkedMap(Rdict(str(self.directory / f"unit-{unit}-{next(self._n)}.db"), options=options))


class _ParkedMap(MutableMapping[str, bytes]):
    """Product id -> compressed snapshot, values in RocksDB, ids in a set (membership without a disk read)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.ids: set[str] = set()

    def __getitem__(self, pid: str) -> bytes:
        if pid not in self.ids:
            raise KeyError(pid)
        return self.db[pid.encode()]  # type: ignore[no-any-return]

    def __setitem__(self, pid: str, blob: bytes) -> None:
        self.db[pid.encode()] = blob
        self.ids.add(pid)

    def __delitem__(self, pid: str) -> None:
        self.ids.remove(pid)
        del self.db[pid.encode()]

    def __contains__(self, pid: object) -> bool:
        return pid in self.ids

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.ids))

    def __len__(self) -> int:
        return len(self.ids)


class ChangelogStore:
    """Writes snapshots through the worker's producer; reads partitions back with an assign-only consumer."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, producer: AIOKafkaProducer, *,
                 client_kwargs: Mapping[str, Any] | None = None, local: LocalSnapshots | None = None,
                 restore_timeout_s: float = 300.0) -> None:
        self.topic = topic
        self.partitions = partitions
        self.producer = producer
        self.restore_timeout_s = restore_timeout_s
        self.local = local
        self.bootstrap = bootstrap
        self.client_kwargs = dict(client_kwargs or {})
        self.reader: AIOKafkaConsumer = None  # type: ignore[assignment]  # created in start (needs the loop)

    async def start(self) -> None:
        self.reader = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                       auto_offset_reset="earliest", fetch_max_wait_ms=50,
                                       max_partition_fetch_bytes=16 * 1024 * 1024, **self.client_kwargs)
        await self.reader.start()

    async def stop(self) -> None:
        await self.reader.stop()
        if self.local is not None:
            self.local.close()

    async def write(self, upserts: Mapping[str, bytes], deletes: Iterable[str]) -> None:
        """Write snapshots (and tombstones) and wait until the brokers acknowledge every one."""
        records: list[tuple[int, bytes, bytes | None]] = [
            (partition_for(pid, self.partitions), pid.encode(), snap) for pid, snap in upserts.items()]
        records += [(partition_for(pid, self.partitions), pid.encode(), None) for pid in deletes]
        await self.write_to(records)

    async def write_to(self, records: Sequence[tuple[int, bytes, bytes | None]]) -> None:
        """Write ``(partition, key, snapshot or None)`` records and wait until the brokers acknowledge them."""
        if not records:
            return
        batches = Batches(self.producer)
        by_unit: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for unit, key, value in records:
            by_unit.setdefault(unit, []).append((key, value))
            await batches.add(self.topic, key, value, partition=unit)
        sent = await batches.flush()
        acks = await asyncio.gather(*(s.future for s in sent))
        if self.local is not None:
            ends: dict[int, int] = {}
            for s, md in zip(sent, acks, strict=True):  # a batch's metadata holds its first record's offset
                ends[s.partition] = max(ends.get(s.partition, 0), md.offset + s.records)
            for unit, unit_changes in by_unit.items():
                self.local.apply(unit, unit_changes, ends[unit])

    async def read(self, units: Iterable[int]) -> dict[int, dict[bytes, bytes]]:
        """The newest snapshot of every product of each unit, by product id (bytes)."""
        tps = [TopicPartition(self.topic, u) for u in units]
        changes: dict[int, dict[bytes, bytes | None]] = {tp.partition: {} for tp in tps}
        if not tps:
            return {}
        c = self.reader
        c.assign(tps)
        for tp in tps:
            start = self.local.next_offset(tp.partition) if self.local is not None else None
            if start is None:
                await c.seek_to_beginning(tp)
            else:
                c.seek(tp, start)
        pending = set(tps)
        ends: dict[int, int] = {}
        deadline = time.monotonic() + self.restore_timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise StreamprocError(f"restoring {sorted(tp.partition for tp in pending)} of {self.topic} took "
                                      f"more than {self.restore_timeout_s:.0f} s")
            batch = await c.getmany(*pending, timeout_ms=200, max_records=100_000)
            for tp, records in batch.items():
                unit_changes = changes[tp.partition]
                for r in records:
                    unit_changes[r.key] = r.value  # None: a tombstone
            for tp in list(pending):
                high = c.highwater(tp)
                if high is not None and (position := await c.position(tp)) >= high:
                    ends[tp.partition] = position
                    pending.discard(tp)
        c.unsubscribe()  # else the reader keeps fetching these partitions in the background
        if self.local is None:
            return {u: {k: v for k, v in ch.items() if v is not None} for u, ch in changes.items()}
        for unit, unit_changes in changes.items():
            self.local.apply(unit, unit_changes.items(), ends[unit])
        return {unit: self.local.snapshots(unit) for unit in changes}
