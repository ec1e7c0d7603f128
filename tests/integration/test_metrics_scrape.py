"""``/metrics`` of a real worker on the embedded broker, parsed as Prometheus would: every input record is
counted as processed or dead-lettered, consumer lag drains to zero, windows close, tables have sizes;
and with ``STREAMPROC_LOG_FORMAT=json`` the worker logs JSON lines without its secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproc import generator, loadgen

from .support import isolated_env, start_worker, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
SECRET = "hmac-secret-never-logged-9d1e"
BAD = [("clicks", b"P1", b"not json", START_MS), ("clicks", b"P1", b'{"event_id": "x"}', START_MS),
       ("orders", b"P2", b"\xff\xfe", START_MS), ("reviews", b"P3", b"[]", START_MS)]


async def _scrape(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return {f.name: f for f in text_string_to_metric_families(await r.text())}


def _total(families: dict[str, Any], name: str, **labels: str) -> float:
    fam = families.get(name)
    return 0.0 if fam is None else sum(
        s.value for s in fam.samples
        if s.name == name + "_total" and all(s.labels.get(k) == v for k, v in labels.items()))


def test_records_in_equal_processed_plus_dead_lettered(embedded_broker: str, tmp_path: Path) -> None:
    env = isolated_env(embedded_broker, tmp_path, {"STREAMPROC_IDLE_TIMEOUT_MS": "1000", "STREAMPROC_LOG_FORMAT": "json",
                                                   "STREAMPROC_WEBHOOK_SECRET": SECRET})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    worker = start_worker(env, tmp_path)
    try:
        sc = generator.scenario("steady", start_ms=START_MS, duration_ms=10 * MIN, rate_eps=5.0, seed=5, products=15)
        items = [*BAD, *generator.events(sc, 5)]
        report = asyncio.run(loadgen.produce(embedded_broker, items, speed=None, progress=False, topic_names=names))
        assert report.errors == 0

        def all_counted() -> dict[str, Any] | None:
            fams = asyncio.run(_scrape(worker.url))
            return fams if _total(fams, "streamproc_records_in") >= report.events else None

        fams = wait_for(all_counted, 60)
        sent = {t: sum(1 for it in items if it[0] == t) for t in names}
        for topic, n in sent.items():
            processed = _total(fams, "streamproc_records_processed", topic=topic)
            dead = _total(fams, "streamproc_dead_letters", topic=topic)
            assert _total(fams, "streamproc_records_in", topic=topic) == n == processed + dead, topic
        assert _total(fams, "streamproc_dead_letters") >= len(BAD)
        reasons = {s.labels["reason"] for s in fams["streamproc_dead_letters"].samples if s.name.endswith("_total")}
        assert {"not_json", "schema"} <= reasons

        def drained() -> dict[str, Any] | None:
            f = asyncio.run(_scrape(worker.url))
            lag = [s.value for s in f["streamproc_consumer_lag_records"].samples]
            closed = {s.name: s.value for s in f["streamproc_window_close_latency_seconds"].samples}
            return f if lag and sum(lag) == 0 and closed["streamproc_window_close_latency_seconds_count"] > 0 \
                else None

        fams = wait_for(drained, 30)
        topics = {s.labels["topic"] for s in fams["streamproc_consumer_lag_records"].samples}
        assert set(names.values()) <= topics
        tables = {s.labels["table"]: s.value for s in fams["streamproc_table_keys"].samples}
        assert tables["products"] == 15
        hist = {s.name for s in fams["streamproc_batch_processing_seconds"].samples}
        assert "streamproc_batch_processing_seconds_bucket" in hist
        assert fams["streamproc_model_inference_seconds"].type == "histogram"  # declared; no model yet
    finally:
        worker.stop()
    # The same worker logged JSON lines (its own and Faust's) and never its webhook secret.
    text = worker.log.read_text()
    assert SECRET not in text
    # stdout and stderr share the file here; Faust's spinner writes cursor escapes to stdout
    records = [orjson.loads(line[line.index('{"ts"'):]) for line in text.splitlines() if '{"ts"' in line]
    assert any(r["logger"] == "streamproc.app" and "web on" in r["msg"] for r in records), text[-2000:]
