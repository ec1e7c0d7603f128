"""Webhook delivery against the embedded broker and real aiohttp receivers on loopback.

The delivery loops here are the worker's own (:class:`DeliveryService`, started in-process, or
``python -m streamproc.delivery_service`` for the crash test). Alerts are put on the ``alerts`` topic the
way the worker does it (:meth:`Runtime.publish` with the notifier) or directly with a producer.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from streamproc.alerts import new_alert
from streamproc.broker import create_topics, free_port, topic_specs
from streamproc.delivery_service import DeliveryService
from streamproc.demand import Output
from streamproc.lifecycle import Notifier
from streamproc.runtime import Runtime
from streamproc.settings import TOPICS, Settings
from streamproc.silences import SilenceLog, SilenceService, SilenceStore
from streamproc.webhooks import verify

from .support import read_topic, values

pytestmark = pytest.mark.integration

SECRET = "hook-secret"
T0 = 1_700_000_000_000
Answer = tuple[int, dict[str, str], str]


class Hook:
    """A webhook receiver: verifies signatures, records every POST, answers as ``behaviour`` says."""

    def __init__(self) -> None:
        self.port = free_port()
        self.attempts: list[tuple[float, str, list[dict[str, Any]]]] = []
        self.accepted: list[list[dict[str, Any]]] = []
        self.bad_signatures = 0
        self.behaviour: Callable[[list[dict[str, Any]]], Awaitable[Answer]] = self.ok
        self._runner: web.AppRunner | None = None

    @staticmethod
    async def ok(alerts: list[dict[str, Any]]) -> Answer:
        return 200, {}, "ok"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def ids(self) -> set[str]:
        return {a["alert_id"] for batch in self.accepted for a in batch}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        sig = request.headers.get("X-Streamproc-Signature")
        if not verify(body, SECRET, sig) or verify(body, "another-secret", sig):
            self.bad_signatures += 1
        alerts = orjson.loads(body)["alerts"]
        self.attempts.append((time.monotonic(), request.headers["X-Streamproc-Delivery"], alerts))
        status, headers, text = await self.behaviour(alerts)
        if 200 <= status < 300:
            self.accepted.append(alerts)
        return web.Response(status=status, headers=headers, text=text)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def env_for(bootstrap: str, hooks: list[str], **extra: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {
        "STREAMPROC_BROKER": bootstrap,
        "STREAMPROC_APP_ID": f"dl-{tag}",
        "STREAMPROC_WEBHOOK_URLS": ",".join(hooks),
        "STREAMPROC_WEBHOOK_SECRET": SECRET,
        "STREAMPROC_WEBHOOK_GROUP_WAIT_MS": "200",
        "STREAMPROC_WEBHOOK_BACKOFF_MS": "100",
        "STREAMPROC_WEBHOOK_MAX_BACKOFF_MS": "1000",
        "STREAMPROC_WEBHOOK_TIMEOUT_MS": "30000",
    }
    for t in TOPICS:
        env[f"STREAMPROC_TOPIC_{t.upper().replace('-', '_')}"] = f"{tag}-{t}"
    env.update(extra)
    return env


async def settings_for(bootstrap: str, hooks: list[str], **extra: str) -> Settings:
    s = Settings.from_env(env_for(bootstrap, hooks, **extra))
    await create_topics(bootstrap, topic_specs(s))
    return s


def alert(i: int, pid: str | None = None) -> dict[str, Any]:
    return new_alert(alertname="demand_surge", signal="orders", product_id=pid or f"P{i}", category="shoes",
                     severity="warning", window_start_ms=T0 + i * 60_000, window_end_ms=T0 + (i + 1) * 60_000,
                     observed=30, expected=2.0, score=0.9)


class Producer:
    def __init__(self, bootstrap: str, settings: Settings) -> None:
        self.p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
        self.topics = {t: settings.topic(t) for t in TOPICS}
        self.app_id = settings.app_id

    async def __aenter__(self) -> Producer:
        await self.p.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.p.stop()

    async def send(self, logical: str, key: bytes | None, value: bytes, headers: Any) -> None:
        topic = self.topics.get(logical) or f"{self.app_id}-{logical}"  # internal: order-items, customer-events
        await self.p.send_and_wait(topic, value, key=key, headers=headers)

    async def alerts(self, items: list[dict[str, Any]], spread_s: float = 0.0) -> None:
        for a in items:
            await self.p.send(self.topics["alerts"], orjson.dumps(a), key=a["dedup_key"].encode())
            if spread_s:
                await asyncio.sleep(spread_s / len(items))
        await self.p.flush()


async def until(cond: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def hooks() -> AsyncIterator[Callable[[], Awaitable[Hook]]]:
    made: list[Hook] = []

    async def make() -> Hook:
        h = Hook()
        await h.start()
        made.append(h)
        return h

    yield make
    for h in made:
        await h.stop()


@pytest.fixture
async def services() -> AsyncIterator[Callable[[Settings, str], Awaitable[DeliveryService]]]:
    made: list[DeliveryService] = []

    async def make(settings: Settings, bootstrap: str) -> DeliveryService:
        svc = DeliveryService(settings, bootstrap)
        await svc.start()
        made.append(svc)
        return svc

    yield make
    for svc in made:
        await svc.stop()


# -- tests ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure_window_s", [30.0])  # the 30 s outage
async def test_outage_then_recovery_delivers_every_alert(embedded_broker: str, hooks: Any, services: Any,
                                                         failure_window_s: float) -> None:
    """A receiver answering 500 for a while, then 200: nothing lost; duplicates share alert_id."""
    hook = await hooks()

    async def flaky(alerts: list[dict[str, Any]]) -> Answer:
        first = hook.attempts[0][0]  # the window starts with the first POST
        return (500, {}, "down") if time.monotonic() - first < failure_window_s else (200, {}, "ok")

    hook.behaviour = flaky
    s = await settings_for(embedded_broker, [hook.url], STREAMPROC_WEBHOOK_MAX_ALERTS="7")
    sent = [alert(i) for i in range(30)]
    await services(s, embedded_broker)
    async with Producer(embedded_broker, s) as prod:
        await prod.alerts(sent, spread_s=1.0)
    await until(lambda: hook.ids() == {a["alert_id"] for a in sent}, 150, "every alert delivered")
    first = hook.attempts[0][0]
    assert sum(1 for t, _, _ in hook.attempts if t - first < failure_window_s) >= 3  # it did fail, and retry
    got = [a for batch in hook.accepted for a in batch]
    assert {a["alert_id"] for a in got} <= {a["alert_id"] for a in sent}
    assert all(len(b) <= 7 for b in hook.accepted)
    assert hook.bad_signatures == 0


async def test_retry_after_is_waited_for(embedded_broker: str, hooks: Any, services: Any) -> None:
    hook = await hooks()

    async def busy_once(alerts: list[dict[str, Any]]) -> Answer:
        return (429, {"Retry-After": "2"}, "slow down") if len(hook.attempts) == 1 else (200, {}, "ok")

    hook.behaviour = busy_once
    s = await settings_for(embedded_broker, [hook.url])
    await services(s, embedded_broker)
    async with Producer(embedded_broker, s) as prod:
        await prod.alerts([alert(1)])
    await until(lambda: len(hook.accepted) == 1, 60, "delivery after the 429")
    (t1, d1, _), (t2, d2, _) = hook.attempts[:2]
    assert t2 - t1 >= 2.0
    assert d1 == d2  # a retry is the same delivery


async def test_a_400_dead_letters_with_the_status_and_others_still_flow(embedded_broker: str, hooks: Any,
                                                                         services: Any) -> None:
    picky, other = await hooks(), await hooks()

    async def reject_bad(alerts: list[dict[str, Any]]) -> Answer:
        if any(a["labels"]["product_id"] == "BAD" for a in alerts):
            return 400, {}, "unknown product BAD"
        return 200, {}, "ok"

    picky.behaviour = reject_bad
    s = await settings_for(embedded_broker, [picky.url, "am+" + other.url.replace("/hook", "/am")],
                           STREAMPROC_WEBHOOK_MAX_ALERTS="1")
    # ``other`` takes the Alertmanager format on /am.
    am_posts: list[dict[str, Any]] = []

    async def am_handler(request: web.Request) -> web.Response:
        am_posts.append(orjson.loads(await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/am", am_handler)
    runner = web.AppRunner(app, access_log=None)
    await other.stop()
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", other.port).start()
    try:
        sent = [alert(0, "BAD")] + [alert(i) for i in range(1, 6)]
        await services(s, embedded_broker)
        async with Producer(embedded_broker, s) as prod:
            await prod.alerts(sent)
        await until(lambda: len(picky.ids()) == 5 and len(am_posts) >= 6, 60, "the good alerts")
        assert picky.ids() == {a["alert_id"] for a in sent[1:]}
        assert {a["fingerprint"] for p in am_posts for a in p["alerts"]} == {a["fingerprint"] for a in sent}
        assert all(p["version"] == "4" and p["receiver"] for p in am_posts)
        dead = values(await read_topic(embedded_broker, s.topic("dead-letters"), until=lambda r: len(r) >= 1,
                                       timeout_s=30))
        assert len(dead) == 1
        d = dead[0]
        assert d["error"]["kind"] == "delivery" and "400" in d["error"]["message"]
        assert d["delivery"]["status"] == 400 and d["delivery"]["body_excerpt"] == "unknown product BAD"
        assert d["delivery"]["receiver"] == picky.url
        assert orjson.loads(base64.b64decode(d["payload_b64"]))["alert_id"] == sent[0]["alert_id"]
    finally:
        await runner.cleanup()


async def test_a_slow_receiver_slows_neither_the_other_nor_processing(embedded_broker: str, hooks: Any,
                                                                       services: Any) -> None:
    slow, fast = await hooks(), await hooks()

    async def ten_seconds(alerts: list[dict[str, Any]]) -> Answer:
        await asyncio.sleep(10)
        return 200, {}, "ok"

    slow.behaviour = ten_seconds
    # the product side only: this producer awaits every record, and 20k customer copies would take longer
    # than the slow receiver's answers
    s = await settings_for(embedded_broker, [slow.url, fast.url], STREAMPROC_WEBHOOK_MAX_ALERTS="5",
                           STREAMPROC_CUSTOMERS="0")
    await services(s, embedded_broker)
    async with Producer(embedded_broker, s) as prod:
        runtime = Runtime(s, prod.send)
        runtime.notifier = Notifier()
        sent = [alert(i) for i in range(40)]
        await runtime.publish([Output("alert", a["dedup_key"], a) for a in sent])
        # Event processing on the same event loop while the slow receiver holds its requests.
        from streamproc.runtime import Record, partition_for
        n = 20_000
        pids = [p for p in (f"Q{j}" for j in range(1000)) if partition_for(p, s.partitions) == 0][:50]  # unit 0's
        recs = [Record("clicks", 0, i, pids[i % 50].encode(), orjson.dumps({
            "event_id": f"e{i}", "ts": T0 + i, "user_id": "u", "product_id": pids[i % 50]})) for i in range(n)]
        runtime.assign("clicks", 0)
        for i in range(0, n, 2000):
            await runtime.on_records("clicks", recs[i:i + 2000])
            await runtime.tick()
        await until(lambda: fast.ids() == {a["alert_id"] for a in sent}, 30, "the fast receiver")
    assert runtime.metrics.records_processed.labels("clicks")._value.get() == n
    assert len(slow.accepted) <= 1  # it is still on its first POST or two


async def test_undelivered_alerts_survive_a_sigkill(embedded_broker: str, hooks: Any, tmp_path: Path) -> None:
    hook = await hooks()
    down = True

    async def outage(alerts: list[dict[str, Any]]) -> Answer:
        return (503, {}, "down") if down else (200, {}, "ok")

    hook.behaviour = outage
    env = {**os.environ, **env_for(embedded_broker, [hook.url])}
    s = Settings.from_env(env)
    await create_topics(embedded_broker, topic_specs(s))
    log = open(tmp_path / "delivery.log", "ab")  # noqa: SIM115

    async def spawn() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(sys.executable, "-m", "streamproc.delivery_service", env=env,
                                                    stdout=log, stderr=log, start_new_session=True)

    sent = [alert(i) for i in range(12)]
    proc = await spawn()
    try:
        async with Producer(embedded_broker, s) as prod:
            await prod.alerts(sent)
        await until(lambda: len(hook.attempts) >= 2, 60, "the first (failing) attempts")
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        seen = len(hook.attempts)
        await asyncio.sleep(0.5)
        assert len(hook.attempts) == seen and hook.accepted == []
        down = False
        proc = await spawn()
        await until(lambda: hook.ids() == {a["alert_id"] for a in sent}, 90, "delivery after the restart")
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        log.close()


async def test_two_hundred_alerts_in_a_second_arrive_in_a_handful_of_posts(embedded_broker: str, hooks: Any,
                                                                            services: Any) -> None:
    hook = await hooks()
    s = await settings_for(embedded_broker, [hook.url], STREAMPROC_WEBHOOK_GROUP_WAIT_MS="5000")  # the default
    await services(s, embedded_broker)
    sent = [alert(i) for i in range(200)]
    async with Producer(embedded_broker, s) as prod:
        await prod.alerts(sent, spread_s=1.0)
    await until(lambda: hook.ids() == {a["alert_id"] for a in sent}, 60, "all 200 alerts")
    assert len(hook.attempts) <= 5


async def test_silences_mute_matching_alerts_only_and_survive_a_restart(embedded_broker: str, hooks: Any,
                                                                        services: Any) -> None:
    hook = await hooks()
    s = await settings_for(embedded_broker, [hook.url])
    topic = f"{s.app_id}-silences"
    store = SilenceStore()
    silence_log = SilenceLog(embedded_broker, topic, store)
    await silence_log.start()
    try:
        svc = SilenceService(store, silence_log.persist)
        now = int(time.time() * 1000)
        silence = await svc.create({"matchers": [{"name": "product_id", "value": "P1|P2", "isRegex": True}],
                                    "endsAt": now + 3_600_000, "comment": "planned"}, now)
    finally:
        await silence_log.stop()

    restored = SilenceStore()  # another worker (or this one after a restart)
    again = SilenceLog(embedded_broker, topic, restored)
    await again.start()
    try:
        assert restored.get(silence.id) == silence
        await services(s, embedded_broker)
        async with Producer(embedded_broker, s) as prod:
            runtime = Runtime(s, prod.send)
            runtime.notifier = Notifier(silences=restored)
            sent = [alert(i) for i in range(5)]
            await runtime.publish([Output("alert", a["dedup_key"], a) for a in sent])
        await until(lambda: len(hook.ids()) == 3, 30, "the unsilenced alerts")
        await asyncio.sleep(1.0)
        assert hook.ids() == {a["alert_id"] for a in sent[0:1] + sent[3:]}
        on_topic = values(await read_topic(embedded_broker, s.topic("alerts"), until=lambda r: len(r) >= 5))
        assert [a.get("silenced", False) for a in on_topic if a["labels"]["product_id"] in ("P1", "P2")] == [True] * 2
        assert all(a["silenced_by"] == [silence.id] for a in on_topic if a.get("silenced"))
    finally:
        await again.stop()


async def test_a_sigkilled_worker_delivers_its_undelivered_alerts_after_restart(
        embedded_broker: str, hooks: Any, tmp_path: Path) -> None:
    """The same, with the whole worker (``streamproc worker``) killed and restarted."""
    import aiohttp

    hook = await hooks()
    down = True

    async def outage(alerts: list[dict[str, Any]]) -> Answer:
        return (503, {}, "down") if down else (200, {}, "ok")

    hook.behaviour = outage
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMPROC_")}
    env.update(env_for(embedded_broker, [hook.url], STREAMPROC_WEB_PORT=str(port),
                       STREAMPROC_DATA_DIR=str(tmp_path / "data")))
    s = Settings.from_env(env)
    await create_topics(embedded_broker, topic_specs(s))
    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115

    async def spawn() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "streamproc", "worker", env=env,
                                                    stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 90
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert proc.returncode is None, (tmp_path / "worker.log").read_text()[-2000:]
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as r:
                        if r.status == 200:
                            return proc
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.3)
        raise AssertionError("worker not ready: " + (tmp_path / "worker.log").read_text()[-2000:])

    sent = [alert(i, pid=f"K{i}") for i in range(12)]
    proc = await spawn()
    try:
        async with Producer(embedded_broker, s) as prod:
            await prod.alerts(sent)
        await until(lambda: len(hook.attempts) >= 2, 60, "the first (failing) attempts")
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        assert hook.accepted == []
        down = False
        proc = await spawn()
        await until(lambda: hook.ids() == {a["alert_id"] for a in sent}, 90, "delivery after the restart")
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        log.close()


async def test_a_redirect_is_not_followed_and_dead_letters_as_redirected(embedded_broker: str, hooks: Any,
                                                                          services: Any) -> None:
    """Issue 18, item 3: a 302 was followed as a GET without the body, counted delivered, never retried."""
    hook = await hooks()
    landing: list[str] = []

    async def land(request: web.Request) -> web.Response:
        landing.append(request.method)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/landing", land)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    landing_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", landing_port).start()

    async def moved(alerts: list[dict[str, Any]]) -> Answer:
        return 302, {"Location": f"http://127.0.0.1:{landing_port}/landing"}, ""

    hook.behaviour = moved
    try:
        s = await settings_for(embedded_broker, [hook.url])
        svc = await services(s, embedded_broker)
        sent = alert(1)
        async with Producer(embedded_broker, s) as prod:
            await prod.alerts([sent])
        dead = values(await read_topic(embedded_broker, s.topic("dead-letters"), until=lambda r: len(r) >= 1,
                                       timeout_s=30, idle_s=2.0))
        assert len(dead) == 1 and len(hook.attempts) == 1  # not retried
        d = dead[0]
        assert d["delivery"]["outcome"] == "redirected" and d["delivery"]["status"] == 302
        assert f"127.0.0.1:{landing_port}/landing" in d["error"]["message"]
        assert orjson.loads(base64.b64decode(d["payload_b64"]))["alert_id"] == sent["alert_id"]
        assert landing == []  # nothing was sent to where it pointed
        assert svc.loops[0].delivered == 0
    finally:
        await runner.cleanup()


async def test_a_receiver_slower_than_its_timeout_gets_a_bounded_number_of_copies(embedded_broker: str, hooks: Any,
                                                                                 services: Any) -> None:
    """Issue 18, item 7: a receiver slower than the timeout got a copy per timeout until the 1 h deadline.
    ``slow`` keeps the 1 s default timeout and gets at most 2 copies (``#max_copies=2``); ``patient`` is as
    slow but has its own 5 s timeout and takes the alert with one POST."""
    slow, patient = await hooks(), await hooks()

    async def three_seconds(alerts: list[dict[str, Any]]) -> Answer:
        await asyncio.sleep(3)
        return 200, {}, "ok"

    slow.behaviour = patient.behaviour = three_seconds
    s = await settings_for(embedded_broker, [slow.url + "#max_copies=2", patient.url + "#timeout_ms=5000"],
                           STREAMPROC_WEBHOOK_TIMEOUT_MS="1000")
    await services(s, embedded_broker)
    sent = alert(1)
    async with Producer(embedded_broker, s) as prod:
        await prod.alerts([sent])
    dead = values(await read_topic(embedded_broker, s.topic("dead-letters"), until=lambda r: len(r) >= 1,
                                   timeout_s=30, idle_s=2.0))
    await until(lambda: patient.ids() == {sent["alert_id"]}, 30, "the patient receiver")
    await asyncio.sleep(5)  # no further copies come later
    assert len(slow.attempts) == 2 and len(patient.attempts) == 1
    assert len(dead) == 1
    d = dead[0]
    assert d["delivery"]["outcome"] == "timeout" and d["delivery"]["receiver"] == slow.url
    assert d["delivery"]["attempts"] == 2
