"""Review sentiment throughput: raw ``InferenceSession.run`` against the scorer and the worker's reviews agent.

    python benchmarks/sentiment.py [--reviews 1600] [--repeats 3] [--quick] [--model-dir DIR] [--no-worker]
    # prints one JSON object

Run by ``benchmarks/run.py`` (section ``sentiment``). All contenders score the SAME reviews: the hand-written
e-commerce sets (``model/data/ecommerce_dev.jsonl``, ``tests/data/sentiment/ecommerce_test.jsonl``) and every
text of the generator's pools (``streamproc.review_texts``), English, Chinese and mixed, shuffled and repeated
to ``--reviews``. On the scorer's own ``InferenceSession`` (same session options):

* **raw** — ``session.run`` on pre-tokenized, pre-padded inputs, no Python around it: one review per call
  (sequential, and ``threads`` calls at a time — the call shape the worker uses, see below), and
  length-bucketed batches of 8, 32 and 128, ``threads`` calls at a time, to show what batching would give;
* **scorer** — ``OnnxScorer.score`` as the worker calls it: chunks of ``STREAMPROC_SENTIMENT_BATCH`` (64)
  reviews in arrival order, tokenizing, padding, softmax and labels included;
* **worker** — ``python -m streamproc worker`` on the embedded broker with the reviews pre-loaded on its
  ``reviews`` topic (4 partitions), counted from its /metrics like the demand benchmark.

The int8 model is dynamically quantized, so a review's logits depend on its batch-mates: the scorer then
runs one review per ``session.run`` (``threads`` at a time) to keep alerts independent of replay speed. The
ratio scorer/raw is therefore taken against raw one-review calls at the same concurrency.
Per-review latency: the duration of the call that scored the review (for the scorer: its chunk's call).
In-process contenders run ``repeats`` times, interleaved; a rate is the median of the repeats, the ratio
scorer/raw the median of the per-repeat ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import numpy as np  # noqa: E402
import orjson  # noqa: E402

RAW_BATCHES = (1, 8, 32, 128)
TEXT_SETS = {"handwritten_dev": REPO / "model" / "data" / "ecommerce_dev.jsonl",
             "handwritten_test": REPO / "tests" / "data" / "sentiment" / "ecommerce_test.jsonl"}
EVENTS_START_MS = 1_780_000_000_000


def review_texts(n: int, seed: int = 3) -> tuple[list[str], dict[str, int]]:
    """``n`` review texts: every distinct text of the hand-written sets and the generator's pools, shuffled,
    then repeated (reshuffled each pass) up to ``n``. Also how many distinct texts each source gave."""
    from streamproc.review_texts import TEXTS

    sources: dict[str, list[str]] = {}
    for name, path in TEXT_SETS.items():
        if path.is_file():
            sources[name] = [orjson.loads(ln)["text"] for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    sources["generator_pools"] = sorted({t for pool in TEXTS.values() for t in pool})
    distinct = list(dict.fromkeys(t for texts in sources.values() for t in texts))
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        batch = distinct[:]
        rng.shuffle(batch)
        out.extend(batch)
    return out[:n], {k: len(v) for k, v in sources.items()} | {"distinct": len(distinct)}


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(p * len(s)))]


def _timed(fn: Callable[[Any], Any]) -> Callable[[Any], float]:
    def go(arg: Any) -> float:
        t = time.perf_counter()
        fn(arg)
        return time.perf_counter() - t
    return go


def _summary(n: int, seconds: float, per_review_s: list[float], calls: int, **extra: Any) -> dict[str, Any]:
    return {"reviews": n, "seconds": round(seconds, 3), "reviews_per_s": n / seconds, "calls": calls,
            "_latencies": per_review_s, **extra}


def _merge(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Repeats of one contender: the median rate, and p50/p99 over every review of every repeat."""
    lat = [x for r in runs for x in r.pop("_latencies")]
    rates = sorted(r["reviews_per_s"] for r in runs)
    out = dict(runs[0])
    out.update({"reviews_per_s": rates[len(rates) // 2], "repeats_reviews_per_s": [round(x, 1) for x in rates],
                "repeats_in_order": [r["reviews_per_s"] for r in runs],
                "seconds": round(sum(r["seconds"] for r in runs), 3), "reviews": sum(r["reviews"] for r in runs),
                "calls": sum(r["calls"] for r in runs), "p50_ms": 1000 * (_pct(lat, 0.5) or 0),
                "p99_ms": 1000 * (_pct(lat, 0.99) or 0)})
    return out


def raw_session(scorer: Any, seqs: list[list[int]], batch: int, concurrency: int) -> dict[str, Any]:
    """``session.run`` alone on length-bucketed, pre-padded batches of ``batch`` reviews, ``concurrency``
    calls at a time (each call timed in its thread; a review's latency is its call's)."""
    from streamproc.sentiment.text import length_buckets, pad_batch

    session = scorer.session
    groups = length_buckets([len(s) for s in seqs], batch)
    feeds = []
    padded = 0
    for g in groups:
        ids, mask = pad_batch([seqs[i] for i in g], scorer._pad_id)  # noqa: SLF001 - the scorer's pad id
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in scorer._inputs:  # noqa: SLF001
            feed["token_type_ids"] = np.zeros_like(ids)
        feeds.append(feed)
        padded += ids.size
    run = _timed(lambda f: session.run(["logits"], f))
    t = time.perf_counter()
    if concurrency > 1:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="raw") as pool:
            durations = list(pool.map(run, feeds))
    else:
        durations = [run(f) for f in feeds]
    seconds = time.perf_counter() - t
    per_review = [d for g, d in zip(groups, durations, strict=True) for _ in g]
    real = sum(len(s) for s in seqs)
    return _summary(len(seqs), seconds, per_review, len(feeds), batch=batch, concurrency=concurrency,
                    padding_share=round(1 - real / padded, 3) if padded else None)


def scorer_chunks(scorer: Any, texts: list[str], chunk: int) -> dict[str, Any]:
    """``scorer.score`` on consecutive chunks of ``chunk`` texts, as the reviews agent calls it."""
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    per_review: list[float] = []
    t = time.perf_counter()
    for c in chunks:
        t0 = time.perf_counter()
        scorer.score(c)
        per_review += [time.perf_counter() - t0] * len(c)
    return _summary(len(texts), time.perf_counter() - t, per_review, len(chunks), chunk=chunk)


def worker_end_to_end(texts: list[str], tmp: Path, bootstrap: str | None = None,
                      max_s: float = 120.0) -> dict[str, Any]:
    """The worker's reviews agent on the embedded broker (own broker unless ``bootstrap``): reviews
    pre-loaded on a 4-partition ``reviews`` topic, rate from /metrics (from the last sample at 0 to the
    first at all reviews processed)."""
    import throughput as tp

    from streamproc import loadgen
    from streamproc.broker import EmbeddedBroker, create_topics

    if bootstrap is None:
        with EmbeddedBroker() as broker:
            return worker_end_to_end(texts, tmp, broker.bootstrap, max_s)
    topic = f"sentbench-{uuid.uuid4().hex[:6]}-reviews"
    items = []
    for i, text in enumerate(texts):
        pid = f"P{i % 500:05d}"
        ts = EVENTS_START_MS + 50 * i
        items.append(("reviews", pid.encode(), orjson.dumps(
            {"review_id": f"sb-{i}", "ts": ts, "user_id": f"U{i % 9973:06d}", "product_id": pid,
             "rating": None, "title": None, "text": text, "lang": None}), ts))
    asyncio.run(create_topics(bootstrap, [(topic, 4, {})]))
    rep = asyncio.run(loadgen.produce(bootstrap, items, speed=None, progress=False, topic_names={"reviews": topic}))
    if rep.errors:
        raise RuntimeError(f"{rep.errors} reviews not acknowledged while pre-loading")
    env = tp.worker_env(bootstrap, tmp, {"reviews": topic})
    w = tp.WorkerProc(env, tmp)
    try:
        ready_s = w.wait_ready()
        samples = tp.count_until(w.url, len(texts), max_s)
        out = tp._rate(samples, len(texts))  # noqa: SLF001 - the demand benchmark's counting
        metrics = w.get("/metrics")
        out["dead_letters"] = tp.metric_sum(metrics, ("streamproc_dead_letters_total{",))
        calls = tp.metric_sum(metrics, ("streamproc_model_inference_seconds_count",))
        secs = tp.metric_sum(metrics, ("streamproc_model_inference_seconds_sum",))
        out["scorer_calls"] = calls
        out["scorer_seconds"] = round(secs, 3)
        out["mean_reviews_per_scorer_call"] = round(len(texts) / calls, 1) if calls else None
        out["startup_s"] = ready_s
        out["reviews"] = len(texts)
        return out
    finally:
        w.stop()


def scorer_rate(n: int = 400) -> float:
    """Reviews per second the shipped scorer takes here (one batch of ``n``, after a warm-up batch)."""
    from streamproc.sentiment import load_scorer
    from streamproc.settings import Settings

    scorer = load_scorer(None, threads=Settings().sentiment_threads)
    texts, _sources = review_texts(n)
    scorer.score(texts[:32])
    t = time.perf_counter()
    scorer.score(texts)
    return n / (time.perf_counter() - t)


def sentiment_bench(n: int, tmp: Path, *, bootstrap: str | None = None, worker: bool = True,
                    model_dir: str | None = None, quick: bool = False, repeats: int = 3) -> dict[str, Any]:
    """Every contender on the same ``n`` reviews; see the module docstring."""
    from streamproc.sentiment import load_scorer, resolve_model_dir
    from streamproc.settings import Settings

    settings = Settings()
    scorer = load_scorer(model_dir, threads=settings.sentiment_threads)
    meta = orjson.loads((Path(scorer.path or resolve_model_dir(model_dir)) / "model.json").read_bytes())
    texts, sources = review_texts(n)
    seqs = scorer.encode(texts)
    threads = scorer.threads
    out: dict[str, Any] = {
        "model_version": scorer.model_version, "model_description": meta.get("description"),
        "reviews": n, "texts": sources, "mean_tokens": round(float(np.mean([len(s) for s in seqs])), 1),
        "threads": threads, "worker_chunk": settings.sentiment_batch, "batch_invariant": scorer.batched,
        "worker_call_shape": (f"{settings.sentiment_batch} reviews per score(), " + (
            "length-bucketed batches" if scorer.batched else "one review per session.run") +
            f", {threads} calls at a time"),
    }
    contenders: dict[str, Callable[[], dict[str, Any]]] = {
        f"raw_b{b}": (lambda b=b: raw_session(scorer, seqs, b, threads)) for b in RAW_BATCHES}
    contenders["scorer"] = lambda: scorer_chunks(scorer, texts, settings.sentiment_batch)
    if not quick:
        contenders["raw_b1_sequential"] = lambda: raw_session(scorer, seqs, 1, 1)
        contenders["scorer_one_review_per_call"] = lambda: scorer_chunks(scorer, texts[:300], 1)
    raw_session(scorer, seqs[: min(len(seqs), 300)], 1, threads)["_latencies"].clear()  # warm-up
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in contenders}
    for _ in range(repeats):  # interleaved, so that a busy spell of the machine hits every contender alike
        for name, fn in contenders.items():
            runs[name].append(fn())
    merged = {k: _merge(v) for k, v in runs.items()}
    out["repeats"] = repeats
    raw = {k.removeprefix("raw_"): v for k, v in merged.items() if k.startswith("raw_")}
    out["raw"] = raw
    out["scorer"] = merged["scorer"]
    if "scorer_one_review_per_call" in merged:
        out["scorer_one_review_per_call"] = merged["scorer_one_review_per_call"]
    # the worker's call shape: one review per call, or (a batch-invariant model) its length buckets
    worker_batch = max(b for b in RAW_BATCHES if b <= settings.sentiment_batch) if scorer.batched else 1
    ref = raw[f"b{worker_batch}"]
    out["raw_reference"] = f"b{ref['batch']} ({ref['concurrency']} calls at a time): the worker's call shape"
    out["raw_onnx_reviews_per_s"] = ref["reviews_per_s"]
    out["sentiment_reviews_per_s"] = out["scorer"]["reviews_per_s"]
    # paired by repeat (the two ran back to back), so that a busy spell of the machine cancels out
    pairs = sorted(a / b for a, b in zip(out["scorer"]["repeats_in_order"], ref["repeats_in_order"], strict=True))
    out["scorer_vs_raw"] = pairs[len(pairs) // 2]
    out["scorer_vs_raw_per_repeat"] = [round(x, 3) for x in pairs]
    if worker:
        w = worker_end_to_end(texts, tmp, bootstrap)
        out["worker"] = w
        if w.get("eps"):
            out["sentiment_worker_reviews_per_s"] = w["eps"]
            out["worker_vs_raw"] = w["eps"] / ref["reviews_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reviews", type=int, default=1600)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each in-process contender")
    ap.add_argument("--quick", action="store_true", help="no sequential-raw and one-review-per-call contenders")
    ap.add_argument("--no-worker", action="store_true", help="skip the end-to-end worker run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="streamproc-sentbench-") as tmp:
        out = sentiment_bench(args.reviews, Path(tmp), worker=not args.no_worker, model_dir=args.model_dir,
                              quick=args.quick, repeats=args.repeats)
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
