"""Generated traffic replayed through the engine, for the differential test against recorded outputs.

Two drivers, both deterministic:

* :func:`run_runtime` feeds :class:`~streamproc.runtime.Runtime` (decoding, dead letters, order lines
  forwarded between units, scored reviews) in per-topic batches of ``batch`` records, with a FakeClock at
  the batch's event time and a tick after every batch, a restart from snapshots half-way, and an idle
  hour at the end.
* :func:`run_engine` drives :class:`~streamproc.demand.DemandEngine` directly with a short ``live_ms``
  and gaps in the traffic, so that products expire and come back.

Both return what was emitted as ``(topic, key, value)`` tuples; :func:`digest` folds them per key into a
compact, order-sensitive fingerprint (the golden file stores those).
"""

from __future__ import annotations

import asyncio
import hashlib
import zlib
from collections import defaultdict
from typing import Any

import orjson

from streamproc import generator
from streamproc.clock import FakeClock
from streamproc.demand import DemandEngine, Output
from streamproc.detectors import DetectorConfig
from streamproc.events import decode_click, decode_order, decode_review
from streamproc.review_texts import TEXTS
from streamproc.runtime import CUSTOMER_EVENTS, ORDER_ITEMS, Record, Runtime, partition_for
from streamproc.sentiment import Sentiment
from streamproc.settings import INPUT_TOPICS, Settings
from streamproc.windows import WindowSpec

MIN = 60_000
START_MS = 1_780_000_000_000 - 1_780_000_000_000 % MIN
DETECTOR_ENV = {"STREAMPROC_DETECT_WARMUP_MS": str(30 * MIN), "STREAMPROC_DETECT_COOLDOWN_MS": str(40 * MIN),
                "STREAMPROC_IDLE_TIMEOUT_MS": "2000"}
BATCH_SIZES = (1, 7, 500, 0)
"""0: the whole input in one batch per topic run."""
SCENARIOS = {
    "surges": {"name": "surges", "duration_ms": 100 * MIN, "rate_eps": 4.0, "products": 40, "seed": 3},
    "negative-reviews": {"name": "negative-reviews", "duration_ms": 70 * MIN, "rate_eps": 3.0, "products": 12,
                         "seed": 5, "review_share": 0.3},
}
_NEGATIVE_TEXTS = {t for (s, _lang), ts in TEXTS.items() if s == "negative" for t in ts}


class TextScorer:
    """Deterministic sentiment: negative texts of the generator's pools score P(negative) in 0.6-0.99,
    the others 0.01-0.4, spread by a checksum of the text."""

    model_version = "fake-golden"

    def score(self, texts: list[str]) -> list[Sentiment]:
        out = []
        for t in texts:
            spread = (zlib.crc32(t.encode()) % 997) / 997
            neg = 0.6 + 0.39 * spread if t in _NEGATIVE_TEXTS else 0.01 + 0.39 * spread
            out.append(Sentiment("negative" if neg >= 0.5 else "positive", {"negative": neg, "positive": 1 - neg}))
        return out


def _mutate(i: int, topic: str, value: bytes) -> bytes:
    """Every 53rd record is bent: broken JSON, a missing or mistyped field, a string or float ``ts`` (valid
    shapes the fast path must hand over), a record from the far past (late)."""
    d = orjson.loads(value)
    kind = (i // 53) % 9
    if kind == 0:
        return value[:-3]
    if kind == 1:
        d.pop("user_id", None)
    elif kind == 2:
        d["ts"] = generator_rfc3339(d["ts"])
    elif kind == 3:
        d["ts"] = float(d["ts"])
    elif kind == 4:
        d["ts"] = d["ts"] - 6 * 3_600_000
    elif kind == 5:
        d["user_id"] = 12
    elif kind == 6:
        d["extra"] = {"nested": [1, 2]}
        if topic == "clicks":
            d["action"] = "purchase"
        elif topic == "orders":
            d["items"][0]["quantity"] = 2.0
        else:
            d["rating"] = 4.0
    elif kind == 7:
        d["ts"] = str(d["ts"])
    else:
        if topic == "orders":
            d["items"] = []
        else:
            d["product_id"] = ""
    return orjson.dumps(d)


CUSTOMER_TOPICS = (CUSTOMER_EVENTS, "marketing-triggers", "customer-features")
"""Outputs of the customer side (tests/unit/test_runtime_customers.py), not part of the golden digests."""


def generator_rfc3339(ts_ms: int) -> str:
    from streamproc.alerts import rfc3339

    return rfc3339(ts_ms)


def _events(name: str) -> tuple[generator.Scenario, list[tuple[str, bytes, bytes, int]]]:
    import dataclasses

    cfg = SCENARIOS[name]
    sc = generator.scenario(cfg["name"], start_ms=START_MS, duration_ms=cfg["duration_ms"],
                            rate_eps=cfg["rate_eps"], seed=cfg["seed"], products=cfg["products"])
    if "review_share" in cfg:
        sc = dataclasses.replace(sc, review_share=cfg["review_share"])
    evs = []
    for i, (topic, key, value, ts) in enumerate(generator.events(sc, cfg["seed"])):
        if i % 53 == 17:
            value = _mutate(i, topic, value)
        evs.append((topic, key, value, ts))
    return sc, evs


async def _run_runtime(name: str, batch: int) -> list[tuple[str, str, bytes]]:
    sc, evs = _events(name)
    settings = Settings.from_env(DETECTOR_ENV)
    clock = FakeClock(sc.start_ms)
    sent: list[tuple[str, bytes | None, bytes]] = []
    out: list[tuple[str, str, bytes]] = []

    async def send(logical: str, key: bytes | None, value: bytes, headers: Any) -> None:
        sent.append((logical, key, value))

    def make() -> Runtime:
        rt = Runtime(settings, send, clock=clock, scorer=TextScorer())
        for logical in (*INPUT_TOPICS, ORDER_ITEMS):
            for p in range(settings.partitions):
                rt.assign(logical, p)
        rt.ready = True
        return rt

    rt = make()
    n = settings.partitions
    offsets: dict[tuple[str, int], int] = defaultdict(int)

    def record(logical: str, key: bytes | None, value: bytes) -> Record:
        p = partition_for(key.decode(), n) if key else 0
        off = offsets[logical, p]
        offsets[logical, p] = off + 1
        return Record(logical, p, off, key, value)

    def collect() -> list[tuple[bytes | None, bytes]]:
        items = [(k, v) for t, k, v in sent if t == ORDER_ITEMS]
        for t, k, v in sent:
            if t == "dead-letters":
                d = orjson.loads(v)
                d.pop("dead_lettered_at_ms", None)
                out.append((t, f"{d['source']['topic']}/{d['source']['partition']}", orjson.dumps(d)))
            elif t not in (ORDER_ITEMS, *CUSTOMER_TOPICS):  # the golden digests are of the product side
                out.append((t, (k or b"").decode(), v))
        sent.clear()
        return items

    async def flush(logical: str, recs: list[Record], ts: int) -> None:
        clock.advance(max(0, ts - clock.now_ms()))
        await rt.on_records(logical, recs)
        while items := collect():
            await rt.on_records(ORDER_ITEMS, [record(ORDER_ITEMS, k, v) for k, v in items])
        await rt.tick()
        collect()

    cur: str | None = None
    recs: list[Record] = []
    last_ts = sc.start_ms
    half = len(evs) // 2
    for i, (topic, key, value, ts) in enumerate(evs):
        if topic != cur or (batch and len(recs) >= batch) or i == half:
            if recs and cur is not None:
                await flush(cur, recs, last_ts)
            cur, recs = topic, []
            if i == half:  # a restart: a new runtime restored from the snapshots of the old one
                upserts, _deletes = rt.drain_dirty()
                snapshots = {pid: snap for pid, snap in upserts.items()}
                rt = make()
                for snap in snapshots.values():
                    rt.restore(snap)
        recs.append(record(topic, key, value))
        last_ts = ts
    if recs and cur is not None:
        await flush(cur, recs, last_ts)
    for _ in range(70):  # an idle hour: every bucket closes, features stop, incidents resolve
        clock.advance(MIN)
        await rt.tick()
        collect()
    return out


def run_runtime(name: str, batch: int) -> list[tuple[str, str, bytes]]:
    """Outputs of the runtime driver (features, alerts, scored reviews, dead letters) in emission order."""
    import logging

    log = logging.getLogger("streamproc")
    level = log.level
    log.setLevel(logging.ERROR)  # the runtime logs every alert as a warning
    try:
        return asyncio.run(_run_runtime(name, batch))
    finally:
        log.setLevel(level)


def run_engine(batch: int) -> list[tuple[str, str, bytes]]:
    """The engine alone, one unit per partition, ``live_ms`` of 20 min, traffic with two 45-minute gaps."""
    sc, evs = _events("surges")
    spec = WindowSpec(idle_timeout_ms=2000)
    eng = DemandEngine(spec, DetectorConfig(warmup_ms=20 * MIN, cooldown_ms=30 * MIN), live_ms=20 * MIN)
    out: list[tuple[str, str, bytes]] = []
    gap1, gap2 = sc.start_ms + 30 * MIN, sc.start_ms + 65 * MIN
    wall = sc.start_ms
    shift = 0
    pending: list[tuple[str, bytes, int]] = []
    seq: dict[str, int] = defaultdict(int)

    def emit(outputs: list[Output]) -> None:
        for o in outputs:
            out.append((o.kind, o.key, orjson.dumps(o.value)))

    def apply(topic: str, value: bytes, ts: int) -> None:
        nonlocal wall
        if topic == "clicks":
            ev = decode_click(value)
        elif topic == "orders":
            ev = decode_order(value)
        else:
            ev = decode_review(value)
        if hasattr(ev, "kind"):
            return
        ev = type(ev)(**{**{f: getattr(ev, f) for f in ev.__slots__}, "ts_ms": ev.ts_ms + shift})  # type: ignore[union-attr]
        unit = zlib.crc32(value[:40]) % 2
        stream = f"{topic}/{unit}"
        off = seq[stream]
        seq[stream] = off + 1
        if topic == "clicks":
            err = eng.apply_click(unit, stream, ev, wall, off)
        elif topic == "orders":
            err = eng.admit_order(unit, stream, ev.ts_ms, wall)
            if err is None:
                for line, item in enumerate(ev.items):
                    eng.apply_item(unit, ev.ts_ms, item, stream, off * 1000 + line)
        else:
            neg = (zlib.crc32(ev.text.encode()) % 100) / 100
            err = eng.apply_review(unit, stream, ev, wall, neg, off)
        if err is not None:
            out.append(("late", stream, orjson.dumps([err.kind, err.message])))

    for topic, _key, value, ts in evs:
        if shift == 0 and ts >= gap1 or shift == 45 * MIN and ts >= gap2:
            for t, v, s in pending:
                apply(t, v, s)
            pending.clear()
            emit(eng.tick(wall))
            for _ in range(45):
                wall += MIN
                emit(eng.tick(wall))
            shift += 45 * MIN
        pending.append((topic, value, ts))
        if len(pending) >= (batch or len(evs)):
            wall = max(wall, ts + shift)
            for t, v, s in pending:
                apply(t, v, s)
            pending.clear()
            emit(eng.tick(wall))
    wall = max(wall, evs[-1][3] + shift)
    for t, v, s in pending:
        apply(t, v, s)
    for _ in range(40):
        emit(eng.tick(wall))
        wall += MIN
    return out


def _comparable(topic: str, value: bytes) -> bytes:
    """The record as compared: an alert's description is prose written from the fields compared beside it
    (its wording changes on its own, e.g. how a time is printed), so it is left out."""
    if topic not in ("alert", "alerts"):
        return value
    d = orjson.loads(value)
    d.get("annotations", {}).pop("description", None)
    return orjson.dumps(d)


def digest(outputs: list[tuple[str, str, bytes]]) -> dict[str, Any]:
    """Per ``topic:key``, the number of records and a hash chained over them in order; and the totals."""
    per: dict[str, list[Any]] = {}
    for topic, key, value in outputs:
        value = _comparable(topic, value)
        k = f"{topic}:{key}"
        cur = per.get(k)
        h = hashlib.sha256(((cur[1] if cur else "") + value.decode()).encode()).hexdigest()[:16]
        per[k] = [(cur[0] if cur else 0) + 1, h]
    totals: dict[str, int] = defaultdict(int)
    for topic, _k, _v in outputs:
        totals[topic] += 1
    return {"totals": dict(sorted(totals.items())), "keys": dict(sorted(per.items()))}


def all_digests() -> dict[str, Any]:
    """Every driver at every batch size."""
    out: dict[str, Any] = {}
    for name in SCENARIOS:
        for b in BATCH_SIZES:
            out[f"runtime/{name}/{b}"] = digest(run_runtime(name, b))
    for b in BATCH_SIZES:
        out[f"engine/surges/{b}"] = digest(run_engine(b))
    return out


GOLDEN = __import__("pathlib").Path(__file__).with_name("engine_golden.json")

if __name__ == "__main__":  # re-record (only from the engine whose outputs are the reference)
    GOLDEN.write_bytes(orjson.dumps(all_digests(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    print(f"wrote {GOLDEN}")
