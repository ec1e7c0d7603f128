"""Readers against a busy worker (issue 18, item 2): does the HTTP read side slow the processing down?

A worker on the embedded broker (loopback only) is loaded with ``--products`` products (one click each),
then consumes clicks over those products at ``--rate`` events/s for ``--baseline-s`` seconds without
readers, then for ``--seconds`` with ``--readers`` concurrent readers cycling over every GET endpoint.
Measured per phase: processing rate (processed + dead-lettered input records per second, from
``/metrics``), ``/healthz`` latency from a separate prober (10 requests/s), the worker's RSS, and rebalance
or heartbeat trouble in the worker's log; per endpoint in the loaded phase: requests, non-200 answers
(503 = turned away by the concurrency limit), latency quantiles. Everything goes to one JSON file.

Targets (the issue's acceptance): processing rate drops by at most 20%, ``/healthz`` p99 <= 100 ms, no
rebalance. The full run is heavy (200k products, 200 readers, 60 s): run it on a quiet machine.

    python benchmarks/read_load.py                                      # the full run
    python benchmarks/read_load.py --products 2000 --rate 300 --readers 10 --seconds 10 --baseline-s 5  # smoke

The load generator and the readers run in child processes of their own (``produce`` / ``read``), so that
their CPU does not count against the measuring process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from throughput import COUNTED, HERE, WorkerProc, metric_sum, worker_env

from streamproc.broker import EmbeddedBroker

TROUBLE = re.compile(r"rebalanc|livelock|heartbeat|RequestTimedOut|revoked|coordinator", re.IGNORECASE)
"""Worker log lines that mean the group lost or re-balanced this worker."""


def _q(xs: list[float], p: float) -> float | None:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else None


def _pid(i: int) -> str:
    return f"L{i:07d}"


# -- child: steady click producer --------------------------------------------------------------------


async def _produce(bootstrap: str, topic: str, products: int, rate: float, seconds: float, first: bool) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024)
    await producer.start()
    rng = random.Random(7)
    try:
        if first:  # one click per product, as fast as the broker takes them
            for i in range(products):
                await producer.send(topic, orjson.dumps({"event_id": f"pre{i}", "ts": int(time.time() * 1000),
                                                         "user_id": "u", "product_id": _pid(i)}), key=_pid(i).encode())
            await producer.flush()
            return
        step_s, start, n = 0.01, time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate) - n
            now_ms = int(time.time() * 1000)
            for _ in range(max(0, due)):
                pid = _pid(rng.randrange(products))
                await producer.send(topic, orjson.dumps({"event_id": f"s{n}", "ts": now_ms, "user_id": "u",
                                                         "product_id": pid}), key=pid.encode())
                n += 1
            await asyncio.sleep(step_s)
        await producer.flush()
    finally:
        await producer.stop()


# -- child: readers ----------------------------------------------------------------------------------


def _endpoints(products: int, rng: random.Random) -> list[tuple[str, str]]:
    ids = ",".join(_pid(rng.randrange(products)) for _ in range(100))
    return [
        ("features_one", f"/features/{_pid(rng.randrange(products))}"),
        ("features_100", f"/features?ids={ids}"),
        ("trending_orders", "/trending?signal=orders&limit=100"),
        ("trending_clicks_1000", "/trending?signal=clicks&limit=1000"),
        ("alerts", "/alerts?status=firing"),
        ("alerts_all", "/alerts?status=all"),
        ("dashboard_state", "/dashboard/state"),
        ("metrics", "/metrics"),
        ("watermarks", "/watermarks"),
        ("readyz", "/readyz"),
        ("healthz", "/healthz"),
        ("page", "/"),
        ("silences", "/silences"),
        ("event_stream", "/events/stream"),
    ]


async def _read(url: str, readers: int, seconds: float, products: int, out: str) -> None:
    lat: dict[str, list[float]] = {}
    status: dict[str, dict[str, int]] = {}
    stop_at = time.monotonic() + seconds

    async def reader(k: int, session: aiohttp.ClientSession) -> None:
        rng = random.Random(k)
        while time.monotonic() < stop_at:
            for name, path in _endpoints(products, rng):
                if time.monotonic() >= stop_at:
                    return
                t0 = time.perf_counter()
                code = "error"
                try:
                    async with session.get(url + path, timeout=aiohttp.ClientTimeout(total=30)) as r:
                        code = str(r.status)
                        if name == "event_stream":
                            await r.content.readuntil(b"\n\n")  # the retry line
                            await r.content.readuntil(b"\n\n")  # one state event, then go away
                        else:
                            await r.read()
                except Exception as exc:  # noqa: BLE001 - counted by kind
                    code = type(exc).__name__
                lat.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                by = status.setdefault(name, {})
                by[code] = by.get(code, 0) + 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(reader(k, session) for k in range(readers)))
    result = {name: {"requests": len(xs), "status": status.get(name, {}), "p50_ms": _q(xs, 0.5),
                     "p99_ms": _q(xs, 0.99), "max_ms": _q(xs, 1.0)} for name, xs in sorted(lat.items())}
    Path(out).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


# -- the measuring process ---------------------------------------------------------------------------


async def _phase(url: str, pid: int, seconds: float) -> dict[str, Any]:
    """Processing rate, /healthz latency (10/s) and RSS over ``seconds``."""
    healthz: list[float] = []
    failures = 0
    counted: list[tuple[float, float]] = []
    rss: list[float] = []
    stop_at = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        async def probe() -> None:
            nonlocal failures
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                try:
                    async with s.get(url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                        ok = r.status == 200
                except Exception:  # noqa: BLE001 - counted
                    ok = False
                healthz.append((time.perf_counter() - t0) * 1000)
                failures += not ok
                await asyncio.sleep(max(0.0, 0.1 - (time.perf_counter() - t0)))

        async def count() -> None:
            while time.monotonic() < stop_at:
                with contextlib.suppress(Exception):
                    async with s.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=30)) as r:
                        counted.append((time.monotonic(), metric_sum(await r.text(), COUNTED)))
                rss.append(_rss_mib(pid) or 0.0)
                await asyncio.sleep(2.0)

        await asyncio.gather(probe(), count())
    rate = None
    if len(counted) >= 2:
        (t0, c0), (t1, c1) = counted[0], counted[-1]
        rate = round((c1 - c0) / (t1 - t0), 1) if t1 > t0 else None
    return {"seconds": seconds, "rate_eps": rate, "healthz_requests": len(healthz), "healthz_failures": failures,
            "healthz_p50_ms": _q(healthz, 0.5), "healthz_p99_ms": _q(healthz, 0.99), "healthz_max_ms": _q(healthz, 1.0),
            "rss_mib_max": max(rss) if rss else None}


def _rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _trouble(log: Path, start: int) -> list[str]:
    with open(log, "rb") as fh:
        fh.seek(start)
        text = fh.read().decode("utf-8", "replace")
    return [ln[:300] for ln in text.splitlines() if TROUBLE.search(ln)][:50]


CATCH_UP_S = 300.0
CATCH_UP_MIN_S = 75.0
"""... and at least this long: past the first minute's close of every pre-loaded product (a burst of new
products' closes during which the worker reads nothing)."""
"""At most this long for the worker to process the preload's bucket closes and reach the steady rate."""


def _catch_up(worker: WorkerProc, rate: float) -> float:
    """Seconds until the worker keeps up with the steady producer: consumer lag under one second of input
    on three samples in a row, after CATCH_UP_MIN_S. Before that the baseline would measure the preload's tail, not the rate."""
    t0, ok = time.monotonic(), 0
    while ok < 3 or time.monotonic() - t0 < CATCH_UP_MIN_S:
        if time.monotonic() - t0 > CATCH_UP_S:
            raise RuntimeError(f"the worker did not catch up with {rate} events/s in {CATCH_UP_S} s")
        time.sleep(1.0)
        try:
            lag = metric_sum(worker.get("/metrics"), ("streamproc_consumer_lag_records{",))
        except Exception:  # noqa: BLE001 - a worker busy with the preload's closes can miss the 5 s timeout
            lag = rate
        ok = ok + 1 if lag < rate else 0
    return round(time.monotonic() - t0, 1)


PHASE_OFFSET_S = 10.0


def _align() -> None:
    """Wait until ``PHASE_OFFSET_S`` past a wall-clock minute. Event time is wall time here, so each
    minute's bucket close (every active product at once) falls at the same point of both phases."""
    time.sleep((PHASE_OFFSET_S - time.time()) % 60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("produce")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--products", type=int, required=True)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--seconds", type=float, default=0)
    p.add_argument("--preload", action="store_true")
    r = sub.add_parser("read")
    r.add_argument("--url", required=True)
    r.add_argument("--readers", type=int, required=True)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--products", type=int, required=True)
    r.add_argument("--out", required=True)
    for a, d in (("--products", 200_000), ("--rate", 5000.0), ("--readers", 200), ("--seconds", 60.0),
                 ("--baseline-s", 60.0)):
        ap.add_argument(a, type=type(d), default=d)
    ap.add_argument("--broker", help="bootstrap of a running broker (default: start the embedded one)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="extra worker setting (repeatable)")
    args = ap.parse_args()
    if args.cmd == "produce":
        asyncio.run(_produce(args.bootstrap, args.topic, args.products, args.rate, args.seconds, args.preload))
        return 0
    if args.cmd == "read":
        asyncio.run(_read(args.url, args.readers, args.seconds, args.products, args.out))
        return 0
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    out = args.out or HERE / "results" / f"read-load-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    broker = None if args.broker else EmbeddedBroker()
    bootstrap = args.broker or broker.start()  # type: ignore[union-attr]
    me = [sys.executable, str(Path(__file__).resolve())]
    result: dict[str, Any] = {"config": {"products": args.products, "rate_eps": args.rate, "readers": args.readers,
                                         "seconds": args.seconds, "baseline_s": args.baseline_s,
                                         "worker_env": args.env}}
    with tempfile.TemporaryDirectory(prefix="read-load-") as tmpdir:
        tmp = Path(tmpdir)
        env = worker_env(bootstrap, tmp, extra=dict(kv.split("=", 1) for kv in args.env))
        clicks = env["STREAMPROC_TOPIC_CLICKS"]
        worker = WorkerProc(env, tmp)
        try:
            result["worker_ready_s"] = round(worker.wait_ready(), 1)
            t0 = time.monotonic()
            subprocess.run([*me, "produce", "--bootstrap", bootstrap, "--topic", clicks,
                            "--products", str(args.products), "--preload"], check=True)
            while metric_sum(worker.get("/metrics"), COUNTED) < args.products:
                if time.monotonic() - t0 > 600:
                    raise RuntimeError("preload not processed in 600 s")
                time.sleep(1.0)
            result["preload_s"] = round(time.monotonic() - t0, 1)
            total_s = args.baseline_s + args.seconds + CATCH_UP_S + 125  # + two alignments
            producer = subprocess.Popen([*me, "produce", "--bootstrap", bootstrap, "--topic", clicks,
                                         "--products", str(args.products), "--rate", str(args.rate),
                                         "--seconds", str(total_s)])
            try:
                result["catch_up_s"] = _catch_up(worker, args.rate)
                _align()
                mark = worker.log.stat().st_size
                result["baseline"] = asyncio.run(_phase(worker.url, worker.proc.pid, args.baseline_s))
                result["baseline"]["log_trouble"] = _trouble(worker.log, mark)
                readers_out = tmp / "readers.json"
                mark = worker.log.stat().st_size
                readers = subprocess.Popen([*me, "read", "--url", worker.url, "--readers", str(args.readers),
                                            "--seconds", str(args.seconds), "--products", str(args.products),
                                            "--out", str(readers_out)])
                _align()
                result["loaded"] = asyncio.run(_phase(worker.url, worker.proc.pid, args.seconds))
                readers.wait(timeout=120)
                result["loaded"]["log_trouble"] = _trouble(worker.log, mark)
                result["loaded"]["endpoints"] = orjson.loads(readers_out.read_bytes()) if readers_out.exists() else None
            finally:
                producer.terminate()  # it was started to outlast the longest catch-up
                producer.wait(timeout=60)
            base, loaded = result["baseline"]["rate_eps"], result["loaded"]["rate_eps"]
            drop = round(100 * (1 - loaded / base), 1) if base and loaded is not None else None
            result["rate_drop_pct"] = drop
            result["targets"] = {
                "rate_drop_le_20pct": drop is not None and drop <= 20,
                "healthz_p99_le_100ms": (result["loaded"]["healthz_p99_ms"] or 1e9) <= 100,
                "no_rebalance": not result["baseline"]["log_trouble"] and not result["loaded"]["log_trouble"],
            }
        finally:
            worker.stop()
            if broker is not None:
                broker.stop()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(orjson.dumps({k: result.get(k) for k in ("config", "rate_drop_pct", "targets")}).decode())
    print(f"results: {out}")
    return 0 if all(result["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
