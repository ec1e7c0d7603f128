"""Malformed input, on the embedded broker and on Apache Kafka: every bad record reaches the dead-letter
topic with its original bytes, headers and a reason; every good one is counted; the worker stays up."""

from __future__ import annotations

import asyncio
import base64
import collections
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc import generator

from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, wait_for

Row = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]

pytestmark = pytest.mark.integration

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
PER_KIND = 1000
MAX_BYTES = 4096


def _bad_records(rng: random.Random) -> dict[str, list[tuple[str, bytes]]]:
    """(logical topic, value) per reason kind."""
    topics = ["clicks", "orders", "reviews"]
    not_json = [(rng.choice(topics), bytes(rng.randrange(256) for _ in range(rng.randrange(1, 60))) + b"{")
                for _ in range(PER_KIND)]
    schema_variants = [
        lambda i: ("clicks", {"event_id": f"x{i}", "ts": START_MS, "user_id": "u"}),  # no product_id
        lambda i: ("clicks", {"event_id": f"x{i}", "ts": "yesterday", "user_id": "u", "product_id": "P1"}),
        lambda i: ("clicks", {"event_id": f"x{i}", "ts": START_MS, "user_id": "u", "product_id": 7}),
        lambda i: ("clicks", {"event_id": f"x{i}", "ts": START_MS, "user_id": "u", "product_id": "P1",
                              "action": "buy"}),
        lambda i: ("orders", {"order_id": f"x{i}", "ts": START_MS, "user_id": "u", "items": []}),
        lambda i: ("orders", {"order_id": f"x{i}", "ts": START_MS, "user_id": "u",
                              "items": [{"product_id": "P1", "quantity": 0, "unit_price": 1}]}),
        lambda i: ("orders", {"order_id": f"x{i}", "ts": START_MS, "user_id": "u",
                              "items": [{"product_id": "P1", "quantity": 1, "unit_price": -2}]}),
        lambda i: ("reviews", {"review_id": f"x{i}", "ts": START_MS, "product_id": "P1", "text": "ok",
                               "rating": 9}),
        lambda i: ("reviews", {"review_id": f"x{i}", "ts": "2026-01-01T10:00:00", "product_id": "P1",
                               "text": "no offset"}),
        lambda i: ("reviews", [1, 2, 3]),
    ]
    schema = []
    for i in range(PER_KIND):
        topic, obj = schema_variants[i % len(schema_variants)](i)
        schema.append((topic, orjson.dumps(obj)))
    oversize = [(rng.choice(topics), orjson.dumps({"event_id": f"big{i}", "ts": START_MS, "user_id": "u",
                                                   "product_id": "P1", "pad": "x" * (MAX_BYTES + 10)}))
                for i in range(PER_KIND)]
    late = [("clicks", orjson.dumps({"event_id": f"late{i}", "ts": START_MS + i, "user_id": "u",
                                     "product_id": f"P{i % 50:05d}"}))
            for i in range(PER_KIND)]
    return {"not_json": not_json, "schema": schema, "oversize": oversize, "late": late}


def _mixed(good: list[tuple[str, bytes, bytes]], bad: dict[str, list[tuple[str, bytes]]],
           rng: random.Random) -> tuple[list[Row], list[Row]]:
    """The traffic with the undecodable, invalid and oversize records among it, and the late records that
    follow once that traffic has moved the watermark on."""
    mixed: list[Row] = [(t, k, v, []) for t, k, v in good]
    for kind in ("not_json", "schema", "oversize"):
        for n, (topic, value) in enumerate(bad[kind]):
            pos = rng.randrange(1000, len(mixed))
            mixed.insert(pos, (topic, b"P00001", value, [("test-id", f"{kind}-{n}".encode())]))
    late: list[Row] = []
    for n, (topic, value) in enumerate(bad["late"]):
        key = orjson.loads(value)["product_id"].encode()  # valid but late: keyed by product (else: misrouted)
        late.append((topic, key, value, [("test-id", f"late-{n}".encode())]))
    return mixed, late


async def _produce(bootstrap: str, names: dict[str, str], rows: list[Row]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=2 << 20)
    await producer.start()
    try:
        futures = [await producer.send(names[t], key=k, value=v, headers=h) for t, k, v, h in rows]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


def _records_in(url: str) -> float:
    text = asyncio.run(_text(url + "/metrics"))
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("streamproc_records_in_total{"))


def test_every_bad_record_is_dead_lettered_and_every_good_one_counted(broker: str, tmp_path: Path) -> None:
    rng = random.Random(5)
    sc = generator.scenario("steady", start_ms=START_MS, duration_ms=20 * MIN, rate_eps=20.0, seed=2, products=50)
    good = [(t, k, v) for t, k, v, _ts in generator.events(sc, 2)]
    good_by_topic = collections.Counter(t for t, _k, _v in good)
    bad = _bad_records(rng)
    sent_bad = {(topic, value) for rows in bad.values() for topic, value in rows}
    env = isolated_env(broker, tmp_path, {**PRODUCTS_ONLY, "STREAMPROC_MAX_RECORD_BYTES": str(MAX_BYTES)})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    worker = start_worker(env, tmp_path)
    try:
        mixed, late = _mixed(good, bad, rng)
        asyncio.run(_produce(broker, names, mixed))
        # The late records come once every stream has moved past them (reviews are scored first, and a unit's
        # watermark waits for its slowest stream): late is decided against the watermark when a record is read.
        wait_for(lambda: _records_in(worker.url) >= len(mixed), 120)
        asyncio.run(_produce(broker, names, late))
        dead = asyncio.run(read_topic(broker, env["STREAMPROC_TOPIC_DEAD_LETTERS"], timeout_s=120,
                                      until=lambda rs: len(rs) >= 4 * PER_KIND, idle_s=2.0))
        assert len(dead) == 4 * PER_KIND
        by_kind: collections.Counter[str] = collections.Counter()
        logical = {v: k for k, v in names.items()}
        for rec in dead:
            body: dict[str, Any] = orjson.loads(rec.value)
            kind = body["error"]["kind"]
            by_kind[kind] += 1
            assert body["error"]["message"]
            original = base64.b64decode(body["payload_b64"])
            src = body["source"]
            assert (logical[src["topic"]], original) in sent_bad
            headers = dict(rec.headers)
            assert headers["test-id"].decode().startswith(kind + "-"), (headers, kind)
            assert headers["streamproc-error"] == kind.encode()
            assert rec.key == (orjson.loads(original)["product_id"].encode() if kind == "late" else b"P00001")
            assert src["offset"] >= 0 and src["partition"] >= 0
        assert by_kind == {"not_json": PER_KIND, "schema": PER_KIND, "oversize": PER_KIND, "late": PER_KIND}

        def metrics() -> dict[tuple[str, str], float] | None:
            from prometheus_client.parser import text_string_to_metric_families

            text = asyncio.run(_text(worker.url + "/metrics"))
            out: dict[tuple[str, str], float] = collections.defaultdict(float)
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if s.name in ("streamproc_records_in_total", "streamproc_records_processed_total",
                                  "streamproc_dead_letters_total"):
                        out[(s.name, s.labels["topic"])] += s.value
            total_in = sum(v for (n, _t), v in out.items() if n == "streamproc_records_in_total")
            return out if total_in == len(good) + 4 * PER_KIND else None

        m = wait_for(metrics, 60)
        for topic in ("clicks", "orders", "reviews"):
            bad_here = sum(1 for rows in bad.values() for t, _v in rows if t == topic)
            assert m[("streamproc_records_in_total", topic)] == good_by_topic[topic] + bad_here
            assert m[("streamproc_records_processed_total", topic)] == good_by_topic[topic]
            assert m[("streamproc_dead_letters_total", topic)] == bad_here
        assert worker.proc.poll() is None
        assert worker.get("/healthz") == {"status": "ok"}
    finally:
        worker.stop()


async def _text(url: str) -> str:
    import aiohttp

    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()
