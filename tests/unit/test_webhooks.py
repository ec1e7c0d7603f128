"""Webhook delivery against a real local HTTP receiver: signatures, retries, Retry-After, giving up, batching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from streamproc.alerts import new_alert
from streamproc.metrics import Metrics
from streamproc.webhooks import WebhookSender, sign, verify

SECRET = "webhook-secret"
T_MS = 1_714_000_000_000


def alert(i: int) -> dict[str, Any]:
    return new_alert(alertname="demand_surge", signal="orders", product_id=f"P{i}", category="shoes",
                     severity="warning", window_start_ms=T_MS, window_end_ms=T_MS + 60_000,
                     observed=30, expected=2.0, score=0.9)


# -- signatures ----------------------------------------------------------------------------------


def test_signature_verifies_with_the_secret() -> None:
    body = orjson.dumps({"version": "1", "alerts": [alert(1)]})
    header = sign(body, SECRET)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify(body, SECRET, header)


def test_signature_fails_with_another_secret_another_body_or_no_header() -> None:
    body = orjson.dumps({"version": "1", "alerts": [alert(1)]})
    header = sign(body, SECRET)
    assert not verify(body, "other-secret", header)
    assert not verify(body + b" ", SECRET, header)
    assert not verify(body, SECRET, None)
    assert not verify(body, SECRET, header.replace("sha256=", "sha1="))


# -- a receiver ----------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A local webhook endpoint that answers from a script, then 200, and records every POST."""

    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    posts: list[tuple[float, dict[str, str], bytes]] = field(default_factory=list)
    answer: Callable[[dict[str, Any]], int] | None = None
    """Optional per-request status from the parsed body (overrides the script)."""
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.append((time.monotonic(), dict(request.headers), body))
        self.arrived.set()
        if self.answer is not None:
            return web.Response(status=self.answer(orjson.loads(body)), text="per-request answer")
        if self.script:
            status, headers, text = self.script.pop(0)
            return web.Response(status=status, headers=headers, text=text)
        return web.Response(status=200, text="ok")

    def alerts(self) -> list[dict[str, Any]]:
        return [a for _, _, body in self.posts for a in orjson.loads(body)["alerts"]]


GiveUps = list[tuple[str, list[dict[str, Any]], int | None, str]]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> AsyncIterator[tuple[Receiver, str]]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = await aiohttp_server(app)
    yield rec, str(server.make_url("/hook"))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def make_sender(url: str, session: aiohttp.ClientSession, gave_up: GiveUps, **kw: Any) -> WebhookSender:
    async def on_give_up(u: str, batch: list[dict[str, Any]], status: int | None, excerpt: str) -> None:
        gave_up.append((u, batch, status, excerpt))

    kw.setdefault("base_backoff_s", 0.01)
    kw.setdefault("max_backoff_s", 0.05)
    return WebhookSender(url, secret=SECRET, session=session, metrics=Metrics(), on_give_up=on_give_up, **kw)


async def until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (without fixed sleeps) until ``cond`` holds."""
    async def poll() -> None:
        while not cond():
            await asyncio.sleep(0.005)
    await asyncio.wait_for(poll(), timeout_s)


async def running(sender: WebhookSender, body: Callable[[], Awaitable[None]]) -> None:
    sender.start()
    try:
        await body()
    finally:
        await sender.stop()


# -- delivery ------------------------------------------------------------------------------------


async def test_post_is_signed_json_with_a_delivery_id(receiver: tuple[Receiver, str],
                                                      session: aiohttp.ClientSession) -> None:
    rec, url = receiver
    gave_up: GiveUps = []
    sender = make_sender(url, session, gave_up)

    async def body() -> None:
        sender.submit(alert(1))
        await until(lambda: sender.delivered == 1)

    await running(sender, body)
    (_, headers, raw), = rec.posts
    assert headers["Content-Type"] == "application/json"
    assert verify(raw, SECRET, headers["X-Streamproc-Signature"])
    assert len(headers["X-Streamproc-Delivery"]) == 36
    payload = orjson.loads(raw)
    assert payload["version"] == "1" and payload["alerts"] == [alert(1)]
    assert gave_up == []


async def test_500_three_times_then_200_delivers_everything(receiver: tuple[Receiver, str],
                                                            session: aiohttp.ClientSession) -> None:
    rec, url = receiver
    rec.script = [(500, {}, "boom")] * 3
    gave_up: GiveUps = []
    sender = make_sender(url, session, gave_up)

    async def body() -> None:
        for i in range(3):
            sender.submit(alert(i))
        await until(lambda: sender.delivered == 3)

    await running(sender, body)
    assert len(rec.posts) == 4
    delivered = rec.alerts()
    assert {a["alert_id"] for a in delivered} == {alert(i)["alert_id"] for i in range(3)}
    # at least once: the retries repeat the same alerts with the same ids, receivers dedupe on them
    by_id: dict[str, list[dict[str, Any]]] = {}
    for a in delivered:
        by_id.setdefault(a["alert_id"], []).append(a)
    assert all(len(v) == 4 and all(x == v[0] for x in v) for v in by_id.values())
    for _, headers, raw in rec.posts:
        assert verify(raw, SECRET, headers["X-Streamproc-Signature"])
    assert gave_up == []


async def test_429_with_retry_after_waits_at_least_that_long(receiver: tuple[Receiver, str],
                                                             session: aiohttp.ClientSession) -> None:
    rec, url = receiver
    rec.script = [(429, {"Retry-After": "1"}, "slow down")]
    gave_up: GiveUps = []
    sender = make_sender(url, session, gave_up)

    async def body() -> None:
        sender.submit(alert(1))
        await until(lambda: sender.delivered == 1, timeout_s=10)

    await running(sender, body)
    assert len(rec.posts) == 2
    (first, _, _), (second, _, _) = rec.posts
    assert second - first >= 1.0  # measured at the receiver: honouring Retry-After is what it sees
    assert gave_up == []


async def test_400_gives_up_with_status_and_body_and_later_alerts_still_go(
        receiver: tuple[Receiver, str], session: aiohttp.ClientSession) -> None:
    rec, url = receiver
    rejected = alert(1)["alert_id"]
    rec.answer = lambda payload: 400 if any(a["alert_id"] == rejected for a in payload["alerts"]) else 200
    gave_up: GiveUps = []
    sender = make_sender(url, session, gave_up)

    async def body() -> None:
        sender.submit(alert(1))
        await until(lambda: len(gave_up) == 1)
        sender.submit(alert(2))
        sender.submit(alert(3))
        await until(lambda: sender.delivered == 2)

    await running(sender, body)
    (u, batch, status, excerpt), = gave_up
    assert u == url and status == 400
    assert excerpt == "per-request answer"
    assert [a["alert_id"] for a in batch] == [rejected]
    assert len([p for p in rec.posts if rejected in p[2].decode()]) == 1  # a 400 is not retried
    assert {a["product_id"] for a in (x["labels"] for x in rec.alerts())} >= {"P2", "P3"}


async def test_200_alerts_submitted_at_once_arrive_in_at_most_3_posts(
        receiver: tuple[Receiver, str], session: aiohttp.ClientSession) -> None:
    rec, url = receiver
    gave_up: GiveUps = []
    sender = make_sender(url, session, gave_up)

    async def body() -> None:
        for i in range(200):
            sender.submit(alert(i))
        await until(lambda: sender.delivered == 200)

    await running(sender, body)
    assert len(rec.posts) <= 3
    ids = [a["alert_id"] for a in rec.alerts()]
    assert len(ids) == 200 and len(set(ids)) == 200
    assert ids == [alert(i)["alert_id"] for i in range(200)]  # in order
