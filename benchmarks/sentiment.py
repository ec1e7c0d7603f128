"""Review sentiment throughput: the raw ONNX session, the scorer, and the worker end to end.

    python benchmarks/sentiment.py [--reviews 6000] [--model-dir DIR] [ENV=VALUE ...]

On the same generated reviews (English, Chinese and mixed, from the generator's pools): (1)
``InferenceSession.run`` on the scorer's own calls (one review per call when the model is not
batch-invariant, else its length buckets), ``threads`` at a time; (2) ``Scorer.score``, tokenizing
included; (3) length-bucketed batches of 32 regardless, for comparison; (4) ``python -m streamproc worker``
on the embedded broker, reviews pre-loaded on the ``reviews`` topic, counted from /metrics between 10%
and 90% processed. ``ENV=VALUE`` arguments go to the worker (e.g. ``STREAMPROC_SENTIMENT_BATCH=128``).
Prints one JSON object. Not run by the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from streamproc.broker import EmbeddedBroker, create_topics, topic_specs  # noqa: E402
from streamproc.review_texts import TEXTS  # noqa: E402
from streamproc.sentiment import load_scorer  # noqa: E402
from streamproc.settings import Settings  # noqa: E402
from tests.integration.support import isolated_env, start_worker  # noqa: E402


def _rate(n: int, fn: object) -> float:
    started = time.perf_counter()
    fn()  # type: ignore[operator]
    return n / (time.perf_counter() - started)


def _processed(url: str) -> float:
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("streamproc_records_processed_total{") and 'topic="reviews"' in line)


async def _produce(bootstrap: str, topic: str, texts: list[str], start_ms: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    await producer.start()
    try:
        for i, text in enumerate(texts):
            pid = f"P{i % 200:04d}"
            await producer.send(topic, orjson.dumps({"review_id": f"r{i}", "ts": start_ms + i * 50, "product_id": pid,
                                                     "text": text}), key=pid.encode())
        await producer.flush()
    finally:
        await producer.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reviews", type=int, default=6000)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("env", nargs="*", help="ENV=VALUE for the worker")
    args = ap.parse_args()
    rng = random.Random(3)
    pools = list(TEXTS.values())
    texts = [rng.choice(rng.choice(pools)) for _ in range(args.reviews)]
    n = len(texts)
    scorer = load_scorer(args.model_dir)
    seqs = scorer.encode(texts)
    groups = [[i] for i in range(n)] if not scorer.batched else None
    calls = [[seqs[i] for i in g] for g in groups] if groups else None
    scorer.score(texts[:200])  # warm up
    out: dict[str, object] = {"model_version": scorer.model_version, "reviews": n, "threads": scorer.threads,
                              "batch_invariant": scorer.batched, "mean_tokens": float(np.mean([len(s) for s in seqs]))}
    if calls is not None:
        pool = scorer._pool  # noqa: SLF001 - the scorer's own threads, as it uses them
        out["session_run_per_s"] = _rate(n, lambda: list(pool.map(scorer._run, calls)) if pool else  # noqa: SLF001
                                         [scorer._run(c) for c in calls])  # noqa: SLF001
    else:
        out["session_run_per_s"] = _rate(n, lambda: scorer.logits(seqs))
    out["scorer_per_s"] = _rate(n, lambda: scorer.score(texts))
    batched = scorer.batched
    scorer.batched = True
    out["bucketed_batches_32_per_s"] = _rate(n, lambda: scorer.logits(seqs))
    scorer.batched = batched
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        extra = dict(a.split("=", 1) for a in args.env)
        if args.model_dir:
            extra["STREAMPROC_MODEL_DIR"] = args.model_dir
        env = isolated_env(broker.bootstrap, Path(tmp), extra)
        settings = Settings.from_env(env)
        asyncio.run(create_topics(broker.bootstrap, topic_specs(settings)))
        asyncio.run(_produce(broker.bootstrap, settings.topic("reviews"), texts, int(time.time() * 1000) - n * 50))
        worker = start_worker(env, Path(tmp))
        try:
            marks: dict[float, float] = {}
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and len(marks) < 2:
                done, now = _processed(worker.url), time.monotonic()
                for frac in (0.1, 0.9):
                    if done >= frac * n:
                        marks.setdefault(frac, now)
                time.sleep(0.2)
            out["worker_per_s"] = 0.8 * n / (marks[0.9] - marks[0.1]) if len(marks) == 2 else None
        finally:
            worker.stop()
    if out.get("worker_per_s"):
        out["worker_vs_session_run"] = float(out["worker_per_s"]) / float(out["session_run_per_s"])  # type: ignore[arg-type]
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=1))


if __name__ == "__main__":
    main()
