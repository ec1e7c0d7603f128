"""Review sentiment end to end with the packaged ONNX model (no mock): the worker scores every review
into ``scored-reviews``, feeds the sentiment features, and raises one ``negative_review_spike`` (with
evidence) for a product whose reviews turn negative — not for one that only gets more reviews. Also
``streamproc score`` as a user runs it, and the shipped model's accuracy on the held-out e-commerce set
and on the review corpus's held-out voices and categories.

Input is scripted (reviews only, texts from the generator's pools): eight products with about 1.5
reviews a minute for 130 minutes of event time ending 20 minutes ago; from minute 100 to 120 product
``PNEG`` gets 8 a minute, 80% from the negative pool, and ``PVOL`` 8 a minute at the usual mix.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streamproc.broker import create_topics, topic_specs
from streamproc.review_texts import TEXTS
from streamproc.runtime import partition_for
from streamproc.sentiment import DEFAULT_MODEL_DIR, load_model_info, load_scorer
from streamproc.settings import Settings

from .support import PRODUCTS_ONLY, isolated_env, read_topic, start_worker, values, wait_for

pytestmark = pytest.mark.integration

MIN = 60_000
MINUTES = 130
SPIKE = (100, 120)
PRODUCTS = ["PNEG", "PVOL", *(f"PA{i}" for i in range(6))]
USUAL = {"positive": 0.75, "neutral": 0.12, "negative": 0.13}
SPIKED = {"positive": 0.12, "neutral": 0.08, "negative": 0.80}
HELD_OUT = Path(__file__).resolve().parents[1] / "data" / "sentiment" / "ecommerce_test.jsonl"
CORPUS = Path(__file__).resolve().parents[2] / "model" / "corpus"


def _markers(partitions: int) -> list[str]:
    """One product per partition, reviewed two minutes after the script: every unit's watermark then
    passes the script's last bucket without waiting for the wall clock."""
    out: dict[int, str] = {}
    i = 0
    while len(out) < partitions:
        out.setdefault(partition_for(f"PZ{i}", partitions), f"PZ{i}")
        i += 1
    return [out[k] for k in sorted(out)]


def _script(t0: int, partitions: int, seed: int = 11) -> list[dict[str, Any]]:
    """The reviews, in event-time order, each with the pool it was drawn from (``pool``, not sent)."""
    rng = random.Random(seed)
    out = []
    for m in range(MINUTES):
        for pid in PRODUCTS:
            spiking = SPIKE[0] <= m < SPIKE[1] and pid in ("PNEG", "PVOL")
            n = 8 if spiking else rng.choice((1, 1, 2, 2))
            mix = SPIKED if spiking and pid == "PNEG" else USUAL
            for _ in range(n):
                pool = rng.choices(list(mix), weights=list(mix.values()))[0]
                lang = rng.choice(("en", "en", "zh"))
                out.append({"review_id": f"r{len(out)}", "ts": t0 + m * MIN + rng.randrange(MIN), "user_id": "u",
                            "product_id": pid, "text": rng.choice(TEXTS[pool, lang]), "lang": lang, "pool": pool})
    for pid in _markers(partitions):
        out.append({"review_id": f"r{len(out)}", "ts": t0 + (MINUTES + 2) * MIN, "user_id": "u", "product_id": pid,
                    "text": "Works great, fast shipping", "lang": "en", "pool": "positive"})
    out.sort(key=lambda r: r["ts"])
    return out


async def _produce(bootstrap: str, topic: str, reviews: list[dict[str, Any]], bad: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for r in reviews:
            body = {k: v for k, v in r.items() if k != "pool"}
            await producer.send(topic, orjson.dumps(body), key=r["product_id"].encode())
        for b in bad:
            await producer.send(topic, b, key=b"PA0")
        await producer.flush()
    finally:
        await producer.stop()


def _metric(worker: Any, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(worker.url + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + "{") and 'topic="reviews"' in line)


@pytest.fixture(scope="module")
def run(embedded_broker: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("sentiment")
    now = int(time.time() * 1000)
    t0 = now - now % MIN - (MINUTES + 20) * MIN
    bad = [b"not json at all", orjson.dumps({"review_id": "bad-1", "ts": t0, "product_id": "PA0"})]  # no text
    env = isolated_env(embedded_broker, tmp, {**PRODUCTS_ONLY, "STREAMPROC_IDLE_TIMEOUT_MS": "1000"})
    settings = Settings.from_env(env)
    reviews = _script(t0, settings.partitions)
    asyncio.run(create_topics(embedded_broker, topic_specs(settings)))
    asyncio.run(_produce(embedded_broker, settings.topic("reviews"), reviews, bad))
    started = time.monotonic()
    worker = start_worker(env, tmp)
    try:
        total = len(reviews) + len(bad)
        wait_for(lambda: _metric(worker, "streamproc_records_processed_total")
                 + _metric(worker, "streamproc_dead_letters_total") >= total, 120)
        t_counted = time.monotonic() - started
        scored = asyncio.run(read_topic(embedded_broker, settings.topic("scored-reviews"), timeout_s=60, idle_s=1.0,
                                        until=lambda rs: len({orjson.loads(r.value)["review_id"] for r in rs})
                                        >= len(reviews)))
        # Every bucket closes once the input has gone quiet (the watermark follows the wall clock).
        t_read = time.monotonic() - started
        last = t0 + MINUTES * MIN
        wait_for(lambda: all((r["as_of_ms"] or 0) >= last
                             for r in worker.get("/features?ids=" + ",".join(PRODUCTS))["results"]), 60)
        alerts = values(asyncio.run(read_topic(embedded_broker, settings.topic("alerts"), timeout_s=10, idle_s=1.0)))
        dead = values(asyncio.run(read_topic(embedded_broker, settings.topic("dead-letters"), timeout_s=10,
                                             idle_s=1.0)))
        features = {pid: worker.get(f"/features/{pid}") for pid in PRODUCTS}
        firing = worker.get("/alerts?status=firing")["alerts"]
        print(f"{len(reviews)} reviews: counted after {t_counted:.1f}s (worker start included), scored-reviews read "
              f"after {t_read:.1f}s, all closed after {time.monotonic() - started:.1f}s")
        return {"reviews": reviews, "scored": scored, "alerts": alerts, "dead": dead, "features": features,
                "firing": firing}
    finally:
        worker.stop()


def test_every_review_is_scored_once_with_label_and_model_version(run: dict[str, Any]) -> None:
    version = load_model_info(DEFAULT_MODEL_DIR).model_version
    recs = run["scored"]
    by_id = {}
    for r in recs:
        v = orjson.loads(r.value)
        assert r.key == v["product_id"].encode()  # keyed by product, like the input
        by_id[v["review_id"]] = v
    sent = {r["review_id"]: r for r in run["reviews"]}
    assert set(by_id) == set(sent)  # at-least-once: each sent review at least once, nothing else
    for rid, v in by_id.items():
        assert v["label"] in ("negative", "neutral", "positive")
        assert v["model_version"] == version
        assert v["product_id"] == sent[rid]["product_id"] and v["ts"] == sent[rid]["ts"]
        assert v["lang"] == sent[rid]["lang"]
        p = v["probabilities"]
        assert {"negative", "positive"} <= set(p) and abs(sum(p.values()) - 1.0) < 1e-4
    # The model agrees with the pools the texts came from, most of the time.
    neg = [by_id[r["review_id"]]["label"] for r in run["reviews"] if r["pool"] == "negative"]
    pos = [by_id[r["review_id"]]["label"] for r in run["reviews"] if r["pool"] == "positive"]
    assert neg.count("negative") / len(neg) > 0.6 and pos.count("negative") / len(pos) < 0.05


def test_malformed_reviews_go_to_dead_letters(run: dict[str, Any]) -> None:
    kinds = collections.Counter(d["error"]["kind"] for d in run["dead"])
    assert kinds == {"not_json": 1, "schema": 1}


def test_one_negative_review_spike_with_evidence_for_the_spiked_product_only(run: dict[str, Any]) -> None:
    spikes = [a for a in run["alerts"] if a["labels"]["alertname"] == "negative_review_spike"]
    firing = [a for a in spikes if a["status"] == "firing"]
    assert [a["labels"]["product_id"] for a in firing] == ["PNEG"], [a["dedup_key"] for a in spikes]
    assert {a["labels"]["product_id"] for a in spikes} == {"PNEG"}  # nothing for PVOL's volume-only rise
    a = firing[0]
    assert a["dedup_key"] == "negative_review_spike:reviews:PNEG"
    assert a["labels"]["signal"] == "reviews" and a["labels"]["severity"] in ("warning", "critical")
    assert 0.5 <= a["score"] <= 1.0 and a["observed"] > a["expected"]
    # Within the spike, or just after its start.
    start, end = a["window"]["start_ms"], a["window"]["end_ms"]
    t0 = min(r["ts"] for r in run["reviews"]) // MIN * MIN
    assert t0 + SPIKE[0] * MIN < end <= t0 + SPIKE[1] * MIN
    ev = a["evidence"]
    assert ev["review_ids"] and len(ev["snippets"]) == len(ev["review_ids"])
    labels = {orjson.loads(r.value)["review_id"]: orjson.loads(r.value)["label"] for r in run["scored"]}
    sent = {r["review_id"]: r for r in run["reviews"]}
    for rid, snippet in zip(ev["review_ids"], ev["snippets"], strict=True):
        r = sent[rid]
        assert r["product_id"] == "PNEG" and start <= r["ts"] < end and labels[rid] == "negative"
        assert snippet == r["text"][:120]
    assert "PNEG" in {x["labels"].get("product_id") for x in run["firing"]}


def test_features_carry_review_counts_and_sentiment(run: dict[str, Any]) -> None:
    scored = [orjson.loads(r.value) for r in run["scored"]]
    for pid in ("PNEG", "PVOL", "PA0"):
        rec = run["features"][pid]
        assert rec["status"] in ("PRESENT", "OUTSIDE_MAX_AGE")
        f = rec["features"]
        mine = {s["review_id"]: s for s in scored if s["product_id"] == pid}
        assert f["reviews_24h"] == len(mine)
        assert f["negative_share_24h"] == pytest.approx(sum(s["label"] == "negative" for s in mine.values()) / len(mine))
        mean = sum(s["probabilities"]["positive"] - s["probabilities"]["negative"] for s in mine.values()) / len(mine)
        assert f["sentiment_mean_24h"] == pytest.approx(mean, abs=1e-6)
        assert -1.0 <= f["sentiment_mean_24h"] <= 1.0
    assert run["features"]["PNEG"]["features"]["negative_share_24h"] > run["features"]["PVOL"]["features"]["negative_share_24h"]


# -- the command ------------------------------------------------------------------------------------


def _score(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamproc", "score", *args], capture_output=True, text=True,
                          timeout=120, env=env, input=stdin)


def test_score_command_prints_negative_then_positive() -> None:
    res = _score("质量很差，退货了", "Works great, fast shipping")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["label"] for x in lines] == ["negative", "positive"]
    assert [x["text"] for x in lines] == ["质量很差，退货了", "Works great, fast shipping"]
    for x in lines:
        assert x["negative"] + x["neutral"] + x["positive"] == pytest.approx(1.0, abs=1e-4)


def test_score_command_prints_neutral_for_lukewarm_and_negative_for_sarcasm() -> None:
    res = _score("还行吧，一般般", "It's fine I guess", "Great, another broken charger.")
    assert res.returncode == 0, res.stderr
    assert [json.loads(x)["label"] for x in res.stdout.splitlines()] == ["neutral", "neutral", "negative"]


def test_score_file_keeps_input_order_and_fields(tmp_path: Path) -> None:
    texts = ["Terrible quality, broke after one day.", "非常满意！物流很快。", "It's okay.", "quality很差，very angry",
             "Exactly as described, would buy again."] * 3
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "text": t, "meta": {"shop": "x"}}, ensure_ascii=False)
                             for i, t in enumerate(texts)) + "\n")
    res = _score("--file", str(src))
    assert res.returncode == 0, res.stderr
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [o["id"] for o in out] == list(range(len(texts)))
    assert all(o["text"] == t and o["meta"] == {"shop": "x"} for o, t in zip(out, texts, strict=True))
    assert all(o["label"] in ("negative", "neutral", "positive") and "negative" in o and "positive" in o for o in out)
    # Same text, same scores, wherever it sits in the file.
    assert len({(o["text"], o["negative"]) for o in out}) == len(set(texts))


def test_score_with_a_missing_model_exits_2_with_the_fix(tmp_path: Path) -> None:
    import os

    env = dict(os.environ, STREAMPROC_MODEL_DIR=str(tmp_path / "no-model"))
    res = _score("hello", env=env)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "STREAMPROC_MODEL_DIR" in res.stderr and res.stdout == ""


# -- the shipped model's quality --------------------------------------------------------------------


def test_packaged_model_accuracy_on_the_held_out_ecommerce_reviews() -> None:
    """Positive-vs-negative accuracy (argmax of the two probabilities) on the hand-labelled set, which was
    never used for training, tuning or thresholds: at least 0.92."""
    rows = [json.loads(line) for line in HELD_OUT.read_text(encoding="utf-8").splitlines() if line.strip()]
    polar = [r for r in rows if r["label"] in ("negative", "positive")]
    assert len(polar) >= 200
    scores = load_scorer().score([r["text"] for r in polar])
    right = sum((s.negative > s.positive) == (r["label"] == "negative") for s, r in zip(scores, polar, strict=True))
    accuracy = right / len(polar)
    print(f"held-out accuracy {accuracy:.4f} on {len(polar)} reviews")
    assert accuracy >= 0.92


def _corpus_test_rows() -> list[dict[str, Any]]:
    """The review corpus's test split: its held-out voices, which alone write the held-out categories."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_corpus_validate_for_test", CORPUS / "validate.py")
    assert spec is not None and spec.loader is not None
    validate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = validate
    spec.loader.exec_module(validate)
    rows = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        records, problems = validate.load(path)
        assert not problems, problems[:3]
        rows += [r for r in records if validate.split(r) == "test"]
    return rows


def test_packaged_model_on_the_review_corpus_held_out_voices() -> None:
    """Never trained or tuned on. Positive-vs-negative (larger of the two probabilities) per language and
    the neutral label's F1, at the levels the model card reports (English is the known gap: the held-out
    British voice's irony and understatement)."""
    rows = _corpus_test_rows()
    assert len(rows) >= 1000
    scores = load_scorer().score([r["text"] for r in rows])
    polar: dict[str, list[bool]] = collections.defaultdict(list)
    for s, r in zip(scores, rows, strict=True):
        if r["label"] != "neutral":
            right = (s.negative > s.positive) == (r["label"] == "negative")
            polar[r["lang"]].append(right)
            polar["all"].append(right)
    acc = {k: sum(v) / len(v) for k, v in polar.items()}
    tp = sum(s.label == "neutral" and r["label"] == "neutral" for s, r in zip(scores, rows, strict=True))
    said = sum(s.label == "neutral" for s in scores)
    truth = sum(r["label"] == "neutral" for r in rows)
    neutral_f1 = 2 * tp / (said + truth)
    print(f"held-out corpus voices: positive-vs-negative {acc}, neutral F1 {neutral_f1:.3f}")
    assert acc["all"] >= 0.87 and acc["zh"] >= 0.92 and acc["mixed"] >= 0.92 and acc["en"] >= 0.77
    assert neutral_f1 >= 0.80
