"""RocksDB storage for the ``products`` table (``STREAMPROC_STORE=rocksdb://``).

Faust's RocksDB store files each write under the partition of the stream event being processed
(``current_event()``) and fails without one. streamproc writes its table after a batch (``take_events``
keeps no current event) and from a timer, and its keys are product ids that Kafka's partitioner puts on
their unit's partition. This store files every key under that partition — the one its changelog record
goes to, and the one recovery writes it back to — so a partition's RocksDB files hold exactly its
products and move with it.
"""

from __future__ import annotations

from faust.stores import STORES
from faust.stores.rocksdb import Store as RocksDBStore

from .runtime import partition_for

__all__ = ["KeyPartitionedRocksDB", "SCHEME", "URL"]

SCHEME = "streamproc-rocksdb"
URL = f"{SCHEME}:products"
"""The ``products`` table's store URL: the path names the files (``products-<partition>.db``). A URL with
neither host nor path is false to Faust, which would then take the app's store instead."""


class KeyPartitionedRocksDB(RocksDBStore):
    """Faust's RocksDB store, with each key filed under its own partition (see the module docstring)."""

    def _partition_of(self, key: bytes) -> int:
        return partition_for(key.decode(), self.table.partitions or self.app.conf.topic_partitions)

    def _set(self, key: bytes, value: bytes | None) -> None:
        partition = self._partition_of(key)
        self._key_index[key] = partition
        self._db_for_partition(partition).put(key, value)

    def _get(self, key: bytes) -> bytes | None:
        value = self._db_for_partition(self._partition_of(key)).get(key)
        return value if value is not None else None

    def _contains(self, key: bytes) -> bool:
        return self._get(key) is not None


STORES.aliases[SCHEME] = f"{__name__}:KeyPartitionedRocksDB"
