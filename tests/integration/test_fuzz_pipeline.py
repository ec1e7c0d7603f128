"""Hostile input end to end: a live worker on the embedded broker is fed a few thousand hypothesis-generated
records (fixed seed) on all three input topics — valid ones mixed with garbage bytes, wrong types, deep
nesting, odd Unicode, huge strings, impossible timestamps, empty values — and stays up, with exact books:
records in = processed + dead-lettered (metrics), and the dead-letter topic holds exactly that many."""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.unit.test_fuzz_decoders import VALID, _any_record

from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, wait_for

pytestmark = pytest.mark.integration

N_RECORDS = 3000
MAX_BYTES = 64 * 1024
KINDS = ("clicks", "orders", "reviews")


def _valid(kind: str, pid: int, ts: int) -> bytes:
    obj = dict(VALID[kind], ts=ts)
    if kind == "orders":
        obj["items"] = [dict(VALID[kind]["items"][0], product_id=f"P{pid}"),
                        dict(VALID[kind]["items"][1], product_id=f"P{(pid * 7) % 40}")]
    else:
        obj["product_id"] = f"P{pid}"
    return orjson.dumps(obj)


def _generate(now_ms: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """(logical topic, key, value): about half valid (recent event times), half hostile; deterministic."""
    out: list[tuple[str, bytes | None, bytes | None]] = []
    valid = st.tuples(st.integers(0, 39), st.integers(-120_000, 1_000)).map(lambda t: ("valid", t))
    keys = st.one_of(st.none(), st.binary(max_size=8), st.sampled_from([b"P1", b"P2", "\u202e".encode()]))
    per_kind = {kind: st.tuples(st.just(kind), st.one_of(valid, _any_record(kind).map(lambda raw: ("raw", raw))), keys)
                for kind in KINDS}  # built once: strategies are validated on first use, which is not cheap
    record = st.sampled_from(KINDS).flatmap(per_kind.__getitem__)

    @settings(max_examples=N_RECORDS, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(record)
    def collect(rec: tuple[str, tuple[str, Any], bytes | None]) -> None:
        kind, (how, payload), key = rec
        if how == "valid":
            pid, dt = payload
            out.append((kind, f"P{pid}".encode(), _valid(kind, pid, now_ms + dt)))
        else:  # a record needs a key or a value: give a null value a key
            if payload is not None and len(payload) > 2 * MAX_BYTES:
                payload = payload[:MAX_BYTES + 100]  # still oversize; keeps the run to a few MB
            out.append((kind, key if key is not None or payload is not None else b"null-value", payload))

    collect()
    return out


async def _produce(bootstrap: str, names: dict[str, str], records: list[tuple[str, bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=2 << 20)
    await producer.start()
    try:
        futures = [await producer.send(names[t], key=k, value=v, headers=[("fuzz-id", str(i).encode())])
                   for i, (t, k, v) in enumerate(records)]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


async def _metrics(url: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as s, s.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=10)) as r:
        text = await r.text()
    out: dict[tuple[str, str], float] = collections.defaultdict(float)
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name in ("streamproc_records_in_total", "streamproc_records_processed_total",
                               "streamproc_dead_letters_total"):
                out[(sample.name, sample.labels["topic"])] += sample.value
    return out


def test_live_worker_accounts_for_every_hostile_record(embedded_broker: str, tmp_path: Path) -> None:
    records = _generate(int(time.time() * 1000))
    assert len(records) == N_RECORDS
    sent = collections.Counter(t for t, _k, _v in records)
    env = isolated_env(embedded_broker, tmp_path, {**PRODUCTS_ONLY, "STREAMPROC_MAX_RECORD_BYTES": str(MAX_BYTES)})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in KINDS}
    worker = start_worker(env, tmp_path)
    try:
        asyncio.run(_produce(embedded_broker, names, records))

        def settled() -> dict[tuple[str, str], float] | None:
            m = asyncio.run(_metrics(worker.url))
            return m if all(m[("streamproc_records_in_total", t)] == sent[t] for t in KINDS) else None

        m = wait_for(settled, 45)
        for t in KINDS:
            records_in = m[("streamproc_records_in_total", t)]
            processed = m[("streamproc_records_processed_total", t)]
            dead = m[("streamproc_dead_letters_total", t)]
            assert records_in == processed + dead, (t, records_in, processed, dead)
            assert processed > 0 and dead > 0, (t, processed, dead)  # the mix really had both

        # Forwarded order lines can still be dead-lettered (as late) on their home partition after the
        # inputs are all counted; they are counted under "order-items".
        dead_letters = asyncio.run(read_topic(
            embedded_broker, env["STREAMPROC_TOPIC_DEAD_LETTERS"], timeout_s=30, idle_s=3.0,
            until=lambda rs: len(rs) >= sum(m[("streamproc_dead_letters_total", t)] for t in KINDS)))
        m = asyncio.run(_metrics(worker.url))
        by_source = collections.Counter(orjson.loads(r.value)["source"]["topic"] for r in dead_letters)
        for t in KINDS:
            assert by_source[names[t]] == m[("streamproc_dead_letters_total", t)], t
        assert len(dead_letters) == sum(v for (name, _t), v in m.items() if name == "streamproc_dead_letters_total")
        fuzz_ids = [dict(r.headers)["fuzz-id"] for r in dead_letters if "fuzz-id" in dict(r.headers)]
        assert len(fuzz_ids) == sum(by_source[names[t]] for t in KINDS)  # input headers kept
        assert len(set(fuzz_ids)) == len(fuzz_ids)  # one dead letter per bad input record, none twice
        assert worker.proc.poll() is None
        assert worker.get("/healthz") == {"status": "ok"}
    finally:
        worker.stop()
