"""Helpers for integration tests: a real worker process on the embedded broker, isolated per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from streamproc.broker import create_topics, free_port, topic_specs
from streamproc.processes import stop_process_group
from streamproc.settings import TOPICS, Settings


@dataclass
class Worker:
    """A running ``streamproc worker`` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    settings: Settings
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> Any:
        return asyncio.run(_get_json(self.url + path))

    def stop(self, deadline_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after a deadline (Faust can hang in shutdown)."""
        return stop_process_group(self.proc, deadline_s)


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
        return await r.json(content_type=None)


PRODUCTS_ONLY = {"STREAMPROC_CUSTOMERS": "0"}
"""For tests that check product outputs only: the customer side (on by default) costs most of a worker's CPU on
generated traffic. The default configuration still runs under a crash (test_recovery memory://, the customer
SIGKILL tests), a rebalance (join/leave on both brokers, two customer workers) and a broker's death."""


def isolated_env(bootstrap: str, tmp: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker with its own app id and topic names on a shared broker."""
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update({
        "STREAMPROC_BROKER": bootstrap,
        "STREAMPROC_APP_ID": f"sp-{tag}",
        "STREAMPROC_WEB_PORT": str(free_port()),
        "STREAMPROC_DATA_DIR": str(tmp / "data"),
        "STREAMPROC_LOG_LEVEL": "warn",
    })
    for t in TOPICS:
        env[f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"] = f"{tag}-{t}"
    env.update(extra or {})
    return env


def start_worker(env: dict[str, str], tmp: Path, *, ready_timeout_s: float = 60.0) -> Worker:
    """Create the topics, start a worker and wait until /readyz says ready."""
    return wait_ready(launch_worker(env, tmp), ready_timeout_s)


def launch_worker(env: dict[str, str], tmp: Path, *, name: str | None = None) -> Worker:
    """Create the topics and start a worker process, without waiting for it (see :func:`wait_ready`)."""
    settings = Settings.from_env(env)
    asyncio.run(create_topics(env["STREAMPROC_BROKER"], topic_specs(settings)))
    log = tmp / f"worker-{name or settings.app_id}.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "streamproc", "worker"], env=env, stdout=fh, stderr=fh,
                                start_new_session=True)
    return Worker(proc, settings.web_port, settings, env, log)


def wait_ready(w: Worker, timeout_s: float = 60.0) -> Worker:
    """Wait until the worker's /readyz says ready (joined its group, table restored); stop it on failure."""
    deadline = time.monotonic() + timeout_s
    while True:
        if w.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {w.proc.returncode}: {w.log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            if w.get("/readyz").get("ready"):
                return w
        if time.monotonic() > deadline:
            w.stop()
            raise RuntimeError(f"worker not ready in {timeout_s}s: {w.log.read_text()[-3000:]}")
        time.sleep(0.3)


async def read_topic(bootstrap: str, topic: str, *, until: Any = None, timeout_s: float = 60.0,
                     idle_s: float = 3.0) -> list[Any]:
    """Every record of a topic from the beginning: reads until ``until(records)`` holds (if given) and
    then nothing new arrived for ``idle_s``, with a deadline."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for recs in batch.values():
                out.extend(recs)
                last_new = time.monotonic()
            if (until is None or until(out)) and out and time.monotonic() - last_new > idle_s:
                break
    finally:
        await consumer.stop()
    return out


def values(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


def wait_for(fn: Any, timeout_s: float, interval_s: float = 0.3) -> Any:
    """Poll ``fn()`` until it returns something truthy, or fail with the last value."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = fn()
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met in {timeout_s}s; last value: {str(last)[:500]}")


def iter_events(items: Iterator[tuple[str, bytes, bytes, int]]) -> Iterator[tuple[str, dict[str, Any], int]]:
    for topic, _k, v, ts in items:
        yield topic, orjson.loads(v), ts
