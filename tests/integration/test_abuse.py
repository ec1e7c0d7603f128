"""A hostile or sloppy producer against a real worker on the embedded broker (issue 18, items 1, 4, 5, 6, 8):
records near the 1 MiB limit, mis-keyed records, overflowing prices, duplicate ids, backtracking regexes.
Every input record ends processed or dead-lettered, with exact counts, and the features equal what the
sent records say."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc.broker import create_topics, topic_specs
from streamproc.dead_letters import MAX_DEAD_LETTER_BYTES
from streamproc.settings import Settings

from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
Sent = list[tuple[str, bytes | None, bytes, str]]
"""(logical topic, key, value, expected outcome: "processed" or a dead-letter kind)."""


def _clicker(out: Sent) -> Any:
    def click(pid: str, eid: str, ts: int, key: str | None = None, outcome: str = "processed", **extra: Any) -> None:
        out.append(("clicks", (key if key is not None else pid).encode(),
                    orjson.dumps({"event_id": eid, "ts": ts, "user_id": "u", "product_id": pid, **extra}), outcome))

    return click


def _script_sizes(t0: int) -> Sent:
    """Item 1: records near the 1 MiB limit, between valid clicks of the same product and partition (a
    worker of its own: before the fix this stalled the whole clicks stream)."""
    out: Sent = []
    click = _clicker(out)
    for i in range(100):
        click("V", f"v-a{i}", t0 + i * 100)
    click("V", "poison", t0 + 10_500, outcome="schema", action="buy", pad="p" * 800_000)
    out.append(("clicks", b"V", b"{" + b"x" * 1_000_000, "not_json"))
    for i in range(100):
        click("V", f"v-b{i}", t0 + 11_000 + i * 100)
    for i in range(10):
        click("V", f"v-c{i}", t0 + 3 * MIN + i * 100)
    text = "great product, works well. " * 3700  # 99,900 characters: the schema's limit is 100,000
    out.append(("reviews", b"V", orjson.dumps({"review_id": "big-ok", "ts": t0 + 20_000, "product_id": "V",
                                               "text": text, "pad": "q" * 800_000}), "processed"))
    out.append(("reviews", b"V", orjson.dumps({"review_id": "big-bad", "ts": t0 + 21_000, "product_id": "V",
                                               "text": "t" * 900_000}), "schema"))
    return _in_event_time_order(out)


def _script_sloppy(t0: int) -> Sent:
    """Items 4, 5, 6: mis-keyed records, overflowing prices, the same ids twice."""
    out: Sent = []
    click = _clicker(out)
    # 4. record key != product_id (also by a duplicate JSON key: the last value wins)
    click("MISKEY", "m1", t0 + 30_000, key="OTHER_42", outcome="misrouted")
    click("MISKEY", "m2", t0 + 30_500)
    out.append(("clicks", b"MISKEY", b'{"event_id":"m3","ts":%d,"user_id":"u","product_id":"MISKEY",'
                b'"product_id":"DUPKEY"}' % (t0 + 31_000), "misrouted"))
    # 5. numeric overflow
    def order(oid: str, price: Any, qty: int, outcome: str) -> None:
        out.append(("orders", b"OVF", orjson.dumps({"order_id": oid, "ts": t0 + 40_000, "user_id": "u",
                                                     "items": [{"product_id": "OVF", "quantity": qty,
                                                                "unit_price": price}]}), outcome))

    order("ovf-1", 1e308, 1000, "schema")
    order("ovf-ok", 10.0, 2, "processed")
    out.append(("orders", b"OVF", b'{"order_id":"ovf-2","ts":%d,"user_id":"u","items":[{"product_id":"OVF",'
                b'"quantity":1,"unit_price":1e400}]}' % (t0 + 40_000), "schema"))
    # 6. the same ids twice (a producer retry without idempotence)
    for _ in range(2):
        click("DUP", "dup-click", t0 + 50_000)
        out.append(("orders", b"DUP", orjson.dumps({"order_id": "dup-order", "ts": t0 + 50_000, "user_id": "u",
                                                     "items": [{"product_id": "DUP", "quantity": 1,
                                                                "unit_price": 5}]}), "processed"))
    return _in_event_time_order(out)


def _in_event_time_order(records: Sent) -> Sent:
    """Sorted by ``ts`` (stable; a record without one stays behind its predecessor): a record behind the
    event time its unit has seen would be late, which is not what these tests are about."""
    keyed = []
    last = 0
    for n, rec in enumerate(records):
        with contextlib.suppress(orjson.JSONDecodeError):
            last = orjson.loads(rec[2])["ts"]
        keyed.append((last, n, rec))
    return [rec for _ts, _n, rec in sorted(keyed)]


async def _produce(bootstrap: str, names: dict[str, str], sent: Sent) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_request_size=2 << 20)
    await producer.start()
    try:
        for topic, key, value, _ in sent:
            await producer.send_and_wait(names[topic], value, key=key)  # in order: the poison sits mid-stream
    finally:
        await producer.stop()


def _metrics(url: str) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    async def get() -> str:
        async with aiohttp.ClientSession() as s, s.get(url + "/metrics") as r:
            return await r.text()

    out: dict[tuple[str, str], float] = collections.defaultdict(float)
    for fam in text_string_to_metric_families(asyncio.run(get())):
        for s in fam.samples:
            if "topic" in s.labels:
                out[(s.name, s.labels["topic"])] += s.value
    return out


async def _post(url: str, body: Any) -> int:
    async with aiohttp.ClientSession() as s, s.post(url, json=body) as r:
        return r.status


def _run(bootstrap: str, tmp: Path, script: Any, targets: dict[str, int]) -> dict[str, Any]:
    """A worker, the script's records, and what came out: metrics, dead letters, features of ``targets``
    once each is final up to its bucket ``t0 + targets[pid]``."""
    now = int(time.time() * 1000)
    t0 = now - now % MIN - 8 * MIN
    sent = script(t0)
    env = isolated_env(bootstrap, tmp, {**PRODUCTS_ONLY, "STREAMPROC_IDLE_TIMEOUT_MS": "1000"})
    names = {t: env[f"STREAMPROC_TOPIC_{t.upper()}"] for t in ("clicks", "orders", "reviews")}
    # All records are in the topics before the worker starts: every stream then holds its unit's watermark
    # until read (a review read after the clicks had moved the unit on would be late, not what this tests).
    asyncio.run(create_topics(bootstrap, topic_specs(Settings.from_env(env))))
    asyncio.run(_produce(bootstrap, names, sent))
    worker = start_worker(env, tmp)
    try:
        sent_by_topic = collections.Counter(t for t, *_ in sent)
        wait_for(lambda: all(_metrics(worker.url)[("streamproc_records_in_total", t)] == n
                             for t, n in sent_by_topic.items()), 90)
        # Each product's features as of the end of the bucket of its last event (the watermark follows the
        # wall clock once the input is quiet).
        wait_for(lambda: all((r["as_of_ms"] or 0) >= t0 + targets[r["product_id"]] for r in
                             worker.get("/features?ids=" + ",".join(targets))["results"]), 90)
        expected_dead = sum(1 for *_, o in sent if o != "processed")
        dead = asyncio.run(read_topic(bootstrap, env["STREAMPROC_TOPIC_DEAD_LETTERS"], timeout_s=30,
                                      idle_s=1.0, until=lambda rs: len(rs) >= expected_dead))
        features = {pid: worker.get(f"/features/{pid}") for pid in (*targets, "DUPKEY")}
        silence = {"endsAt": now + 3_600_000}
        regex_status = {
            "backreference": asyncio.run(_post(worker.url + "/silences", {**silence, "matchers": [
                {"name": "product_id", "value": r"(a)\1", "isRegex": True}]})),
            "nested": asyncio.run(_post(worker.url + "/silences", {**silence, "matchers": [
                {"name": "product_id", "value": "(a+)+$", "isRegex": True}]})),
        }
        return {"sent": sent, "metrics": _metrics(worker.url), "dead": dead, "features": features,
                "regex_status": regex_status, "healthz": worker.get("/healthz"), "alive": worker.proc.poll() is None,
                "names": names}
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def sizes(embedded_broker: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(embedded_broker, tmp_path_factory.mktemp("sizes"), _script_sizes, {"V": 4 * MIN})


@pytest.fixture(scope="module")
def sloppy(embedded_broker: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return _run(embedded_broker, tmp_path_factory.mktemp("sloppy"), _script_sloppy,
                {"MISKEY": MIN, "OVF": MIN, "DUP": MIN})


@pytest.mark.parametrize("which", ["sizes", "sloppy"])
def test_every_record_is_processed_or_dead_lettered_with_exact_counts(which: str,
                                                                      request: pytest.FixtureRequest) -> None:
    run = request.getfixturevalue(which)
    m = run["metrics"]
    for topic in ("clicks", "orders", "reviews"):
        mine = [o for t, *_, o in run["sent"] if t == topic]
        processed = m[("streamproc_records_processed_total", topic)]
        dead = m[("streamproc_dead_letters_total", topic)]
        assert m[("streamproc_records_in_total", topic)] == len(mine) == processed + dead, topic
        assert dead == sum(1 for o in mine if o != "processed"), topic
    kinds = collections.Counter(orjson.loads(r.value)["error"]["kind"] for r in run["dead"])
    assert kinds == collections.Counter(o for *_, o in run["sent"] if o != "processed")
    assert run["alive"] and run["healthz"] == {"status": "ok"}


def test_records_near_the_size_limit_are_dead_lettered_with_their_digest_and_size(sizes: dict[str, Any]) -> None:
    """Item 1: an 800 kB bad click used to crash the agent (MessageSizeTooLargeError) and lose its batch."""
    run = sizes
    by_value = {v: (t, o) for t, _k, v, o in run["sent"]}
    big = [r for r in run["dead"] if orjson.loads(r.value).get("payload_truncated")]
    assert len(big) == 3  # the 800 kB click, the 1 MB non-JSON click, the 900 kB review
    originals = {hashlib.sha256(v).hexdigest(): v for v in by_value}
    for r in big:
        body = orjson.loads(r.value)
        original = originals[body["payload_sha256"]]
        assert body["payload_bytes"] == len(original)
        assert original.startswith(base64.b64decode(body["payload_b64"]))
        assert len(r.value) + len(r.key or b"") + sum(len(k) + len(v) for k, v in r.headers) <= MAX_DEAD_LETTER_BYTES
        assert r.key == b"V" and dict(r.headers)["streamproc-error"] == body["error"]["kind"].encode()
    f = run["features"]["V"]["features"]
    assert f["clicks_24h"] == 210  # every valid click around the poison counted
    assert f["reviews_24h"] == 1  # the valid 900 kB review counted


def test_a_mis_keyed_record_is_dead_lettered_not_split_off(sloppy: dict[str, Any]) -> None:
    """Item 4: a click keyed OTHER_42 for MISKEY started a second copy of MISKEY's state in another unit."""
    mis = [orjson.loads(r.value) for r in sloppy["dead"] if orjson.loads(r.value)["error"]["kind"] == "misrouted"]
    assert len(mis) == 2
    assert all(d["source"]["topic"] == sloppy["names"]["clicks"] for d in mis)
    assert sloppy["features"]["MISKEY"]["features"]["clicks_24h"] == 1
    assert sloppy["features"]["DUPKEY"]["status"] == "NOT_FOUND"


def test_an_overflowing_price_is_a_schema_violation(sloppy: dict[str, Any]) -> None:
    """Item 5: unit_price 1e308 made revenue infinite, served as null."""
    f = sloppy["features"]["OVF"]["features"]
    assert f["orders_24h"] == 1 and f["revenue_1h"] == 20.0
    assert isinstance(f["revenue_5m"], float | int)


def test_the_same_id_twice_counts_once(sloppy: dict[str, Any]) -> None:
    """Item 6: a producer retry without idempotence counted twice."""
    f = sloppy["features"]["DUP"]["features"]
    assert (f["clicks_24h"], f["orders_24h"], f["units_24h"]) == (1, 1, 1)
    m = sloppy["metrics"]
    assert m[("streamproc_duplicates_total", "clicks")] == 1 and m[("streamproc_duplicates_total", "orders")] == 1


def test_silences_refuse_patterns_re2_cannot_take(sloppy: dict[str, Any]) -> None:
    """Item 8: matchers are RE2 (linear time); a backreference is refused, a nested quantifier is harmless."""
    assert sloppy["regex_status"] == {"backreference": 400, "nested": 200}
