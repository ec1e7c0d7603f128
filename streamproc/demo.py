"""``streamproc demo``: broker, worker, traffic with injected anomalies, a webhook receiver that prints
alerts, and the web UI — all on this machine, stopped cleanly by Ctrl-C or ``--duration``.

The traffic starts with half an hour of history (event time), loaded as fast as the worker takes it, so
the detectors have a baseline; the live part then runs at ten times the wall clock, and the first
injected surge comes a few minutes (event time) in, a negative-review spike (on another product) a few
minutes after it: the review test needs no warm-up, a new product's baseline being the shop-wide prior.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web

from .broker import EmbeddedBroker, create_topics, free_port, topic_specs
from .processes import stop_process_group
from .settings import Settings

__all__ = ["run_demo", "split_at"]

LIVE_SPEED = 10.0
DEMO_RATE_EPS = 40.0
HISTORY_MS = 30 * 60_000


def split_at(items: Iterator[tuple[str, bytes, bytes, int]], cut_ms: int) -> tuple[Iterator[Any], Iterator[Any]]:
    """Two iterators over a time-ordered stream: events before ``cut_ms``, then the rest."""
    first, second = itertools.tee(items)
    return itertools.takewhile(lambda e: e[3] < cut_ms, first), itertools.dropwhile(lambda e: e[3] < cut_ms, second)


async def _receiver(port: int, seen: list[dict[str, Any]]) -> web.AppRunner:
    async def hook(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        for a in body.get("alerts", []):
            seen.append(a)
            lab = a["labels"]
            subject = lab.get("product_id") or f"category:{lab.get('category')}"
            note = f" [inhibited by {a['inhibited_by']}]" if a.get("inhibited_by") else ""
            print(f"\n[webhook] {a['status'].upper():8} {lab['alertname']:<22} {subject} "
                  f"({lab['signal']}, {lab['severity']}): {a['annotations']['description']}{note}", flush=True)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def _main(settings: Settings, bootstrap: str, duration_s: float | None, web_port: int, seed: int) -> int:
    from . import generator, loadgen

    await create_topics(bootstrap, topic_specs(settings))
    hook_port = free_port()
    seen: list[dict[str, Any]] = []
    runner = await _receiver(hook_port, seen)
    env = dict(os.environ, STREAMPROC_BROKER=bootstrap, STREAMPROC_WEB_PORT=str(web_port),
               STREAMPROC_WEBHOOK_URLS=f"http://127.0.0.1:{hook_port}/hook")
    env.setdefault("STREAMPROC_IDLE_TIMEOUT_MS", "2000")
    # The demo has half an hour of history, not the day a new product needs before it may alert.
    env.setdefault("STREAMPROC_DETECT_WARMUP_MS", str(20 * 60_000))
    env.setdefault("STREAMPROC_DETECT_COOLDOWN_MS", str(30 * 60_000))
    # Show product alerts on the receiver even while a surge of their whole category covers them.
    env.setdefault("STREAMPROC_WEBHOOK_SEND_INHIBITED", "1")
    env.setdefault("STREAMPROC_WEBHOOK_GROUP_WAIT_MS", "1000")
    worker = subprocess.Popen([sys.executable, "-m", "streamproc", "worker"], env=env, start_new_session=True)
    print(f"streamproc demo: broker {bootstrap}\n  dashboard  http://127.0.0.1:{web_port}/\n"
          f"  alerts     http://127.0.0.1:{web_port}/alerts\n  webhook receiver on port {hook_port}\n"
          "  Ctrl-C stops everything.", flush=True)
    started = time.monotonic()
    now_ms = int(time.time() * 1000)
    sc = generator.scenario("demo", start_ms=now_ms - HISTORY_MS, duration_ms=HISTORY_MS + 4 * 3_600_000,
                            rate_eps=DEMO_RATE_EPS, seed=seed, warmup_ms=HISTORY_MS)
    for kind, what in (("demand_surge", "surge"), ("negative_review_spike", "negative-review spike")):
        first = next((t for t in generator.truth(sc) if t["kind"] == kind), None)
        if first:
            after_ms = int(first["start_ms"]) - now_ms  # type: ignore[call-overload]
            print(f"  injected: x{first['factor']:g} {what} on {first['product_id']} at event time "
                  f"+{after_ms / 60_000:.0f} min (about {after_ms / 1000 / LIVE_SPEED:.0f} s after the history "
                  "is loaded)", flush=True)
    history, live = split_at(generator.events(sc, seed), now_ms)

    async def traffic() -> None:
        names = dict(settings.topics)
        await loadgen.produce(bootstrap, history, speed=None, progress=False, topic_names=names)
        print(f"  history loaded ({time.monotonic() - started:.0f} s); live traffic at {LIVE_SPEED:g}x",
              flush=True)
        await loadgen.produce(bootstrap, live, speed=LIVE_SPEED, progress=False, topic_names=names)

    task = asyncio.create_task(traffic())
    try:
        while True:
            await asyncio.sleep(0.5)
            if worker.poll() is not None:
                print(f"streamproc demo: the worker stopped (exit {worker.returncode})", file=sys.stderr)
                return 1
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if duration_s is not None and time.monotonic() - started >= duration_s:
                return 0
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        stop_process_group(worker)
        await runner.cleanup()
        print(f"streamproc demo: stopped; {sum(a['status'] == 'firing' for a in seen)} alerts fired, "
              f"{sum(a['status'] == 'resolved' for a in seen)} resolved", flush=True)


def run_demo(settings: Settings, *, duration_s: float | None, web_port: int | None, seed: int) -> int:
    """Run the demo until Ctrl-C or ``duration_s``."""
    port = web_port or settings.web_port
    broker: EmbeddedBroker | None = None
    if settings.broker:
        bootstrap = settings.broker
    else:
        broker = EmbeddedBroker()
        bootstrap = broker.start()
    try:
        return asyncio.run(_main(settings, bootstrap, duration_s, port, seed))
    except KeyboardInterrupt:
        return 0
    finally:
        if broker:
            broker.stop()
