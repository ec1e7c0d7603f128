"""``streamproc demo``: broker, worker, traffic with injected anomalies, a webhook receiver that prints
alerts, and the web UI — all on this machine, stopped cleanly by Ctrl-C or ``--duration``.

The traffic starts with half an hour of history (event time), loaded as fast as the worker takes it, so
the detectors have a baseline; the live part then runs at ten times the wall clock, with an injected
surge a few minutes (event time) in, a negative-review spike on another product a few minutes after it
and a drop later, repeating every 40 minutes. The same traffic's customers (sessions, carts, orders) make
marketing triggers. The console tells that story (:mod:`streamproc.demo_story`): the plan, each injection
when it starts, each alert once marked as matching an injection or not, and the triggers published. The
worker's own log goes to ``<STREAMPROC_DATA_DIR>/demo-worker.log``.
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
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from . import generator
from .broker import EmbeddedBroker, create_topics, free_port, topic_specs
from .demo_story import Story, injections
from .processes import stop_process_group
from .settings import Settings

__all__ = ["run_demo", "split_at"]

LIVE_SPEED = 10.0
DEMO_RATE_EPS = 40.0
HISTORY_MS = 30 * 60_000
CART_ABANDON_MS = 15 * 60_000
TRIGGERS_EVERY_S = 20.0
"""How often the console reports the marketing triggers published (when their number changed)."""


def split_at(items: Iterator[tuple[str, bytes, bytes, int]], cut_ms: int) -> tuple[Iterator[Any], Iterator[Any]]:
    """Two iterators over a time-ordered stream: events before ``cut_ms``, then the rest."""
    first, second = itertools.tee(items)
    return itertools.takewhile(lambda e: e[3] < cut_ms, first), itertools.dropwhile(lambda e: e[3] < cut_ms, second)


async def _receiver(port: int, story: Story) -> web.AppRunner:
    async def hook(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        for a in body.get("alerts", []):
            line = story.alert_line(a)
            if line is not None:
                print(line, flush=True)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def _announcing(items: Iterator[generator.Event], story: Story) -> Iterator[generator.Event]:
    """The events unchanged; each injection is announced when the first event at or after its start is sent."""
    nxt = min((i.start_ms for i in story.plan), default=None)
    for item in items:
        if nxt is not None and item[3] >= nxt:
            for line in story.starting(item[3]):
                print(line, flush=True)
            nxt = min((i.start_ms for i in story.plan if i.number not in story.started), default=None)
        yield item


async def _report_triggers(url: str, story: Story) -> None:
    """Every ``TRIGGERS_EVERY_S``, a ``[triggers]`` line from the worker's dashboard state when it changed."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while True:
            await asyncio.sleep(TRIGGERS_EVERY_S)
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError):
                async with session.get(url + "/dashboard/state") as r:
                    st = orjson.loads(await r.read())
                line = story.triggers_line(st["triggers"], st.get("watermark_ms"))
                if line is not None:
                    print(line, flush=True)


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


async def _main(settings: Settings, bootstrap: str, duration_s: float | None, web_port: int, seed: int) -> int:
    from . import loadgen

    await create_topics(bootstrap, topic_specs(settings))
    now_ms = int(time.time() * 1000)
    sc = generator.scenario("demo", start_ms=now_ms - HISTORY_MS, duration_ms=HISTORY_MS + 4 * 3_600_000,
                            rate_eps=DEMO_RATE_EPS, seed=seed, warmup_ms=HISTORY_MS)
    story = Story(injections(generator.truth(sc)), now_ms, LIVE_SPEED)
    hook_port = free_port()
    runner = await _receiver(hook_port, story)
    env = dict(os.environ, STREAMPROC_BROKER=bootstrap, STREAMPROC_WEB_PORT=str(web_port),
               STREAMPROC_WEBHOOK_URLS=f"http://127.0.0.1:{hook_port}/hook")
    env.setdefault("STREAMPROC_IDLE_TIMEOUT_MS", "2000")
    # The demo has half an hour of history, not the day a new product needs before it may alert.
    env.setdefault("STREAMPROC_DETECT_WARMUP_MS", str(20 * 60_000))
    env.setdefault("STREAMPROC_DETECT_COOLDOWN_MS", str(30 * 60_000))
    # Show product alerts on the receiver even while a surge of their whole category covers them.
    env.setdefault("STREAMPROC_WEBHOOK_SEND_INHIBITED", "1")
    env.setdefault("STREAMPROC_WEBHOOK_GROUP_WAIT_MS", "1000")
    # A cart counts as abandoned after 15 min of event time (90 s at 10x) rather than an hour, so the
    # history's abandoned carts show as triggers once it is loaded.
    env.setdefault("STREAMPROC_CART_ABANDON_MS", str(CART_ABANDON_MS))
    # The worker's log (alerts again, Faust's warnings) goes to a file: the console tells the story.
    log_path = Path(settings.data_dir) / "demo-worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        worker = subprocess.Popen([sys.executable, "-m", "streamproc", "worker"], env=env, start_new_session=True,
                                  stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    print(f"streamproc demo: broker {bootstrap}\n  dashboard  http://127.0.0.1:{web_port}/\n"
          f"  alerts     http://127.0.0.1:{web_port}/alerts\n  webhook receiver on port {hook_port}\n"
          f"  worker log {log_path}\n  Ctrl-C stops everything.", flush=True)
    print(f"  customers: marketing triggers on the dashboard and every {TRIGGERS_EVERY_S:.0f} s here ([triggers]); a "
          f"cart counts as abandoned after {int(env['STREAMPROC_CART_ABANDON_MS']) // 60_000} min of event time",
          flush=True)
    started = time.monotonic()
    for line in story.plan_lines(horizon_ms=int((duration_s or 240) * 1000 * LIVE_SPEED)):
        print(line, flush=True)
    history, live = split_at(generator.events(sc, seed), now_ms)

    async def traffic() -> None:
        names = dict(settings.topics)
        print(f"  loading {HISTORY_MS // 60_000} min of history (event time before +0 min) ...", flush=True)
        await loadgen.produce(bootstrap, history, speed=None, progress=False, topic_names=names)
        print(f"  history loaded ({time.monotonic() - started:.0f} s); live traffic at {LIVE_SPEED:g}x", flush=True)
        await loadgen.produce(bootstrap, _announcing(live, story), speed=LIVE_SPEED, progress=False,
                              topic_names=names)

    task = asyncio.create_task(traffic())
    reporter = asyncio.create_task(_report_triggers(f"http://127.0.0.1:{web_port}", story))
    try:
        while True:
            await asyncio.sleep(0.5)
            if worker.poll() is not None:
                print(f"streamproc demo: the worker stopped (exit {worker.returncode}); the end of {log_path}:\n"
                      f"{_tail(log_path)}", file=sys.stderr)
                return 1
            if task.done() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if duration_s is not None and time.monotonic() - started >= duration_s:
                return 0
    finally:
        for t in (task, reporter):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        stop_process_group(worker)
        await runner.cleanup()
        print(f"streamproc demo: stopped; {story.summary()}", flush=True)


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
