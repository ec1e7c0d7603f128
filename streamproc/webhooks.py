"""Webhook delivery of alerts: one queue and one sender task per receiver, signed, retried, never blocking.

Body: ``{"version": "1", "alerts": [...]}``; headers ``X-Streamproc-Delivery`` (a uuid per POST) and,
with a secret, ``X-Streamproc-Signature: sha256=<hex HMAC-SHA256 of the body>``. Retries on network
errors, 5xx and 429 (honouring ``Retry-After``) with exponential backoff and jitter until a deadline;
a 4xx other than 429, or the deadline, hands the alerts to ``on_give_up`` (the dead-letter topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import orjson

from .metrics import Metrics

__all__ = ["sign", "verify", "WebhookSender", "WebhookFanout"]

log = logging.getLogger(__name__)

GiveUp = Callable[[str, list[dict[str, Any]], int | None, str], Awaitable[None]]


def sign(body: bytes, secret: str) -> str:
    """The ``X-Streamproc-Signature`` header value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def _retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class WebhookSender:
    """Delivers alerts to one receiver, in order, batching what has queued up."""

    def __init__(self, url: str, *, secret: str | None, session: aiohttp.ClientSession, metrics: Metrics,
                 on_give_up: GiveUp, timeout_s: float = 10.0, deadline_s: float = 3600.0,
                 max_batch: int = 100, group_wait_s: float = 0.0, base_backoff_s: float = 0.5,
                 max_backoff_s: float = 60.0) -> None:
        self.url = url
        self.secret = secret
        self.session = session
        self.metrics = metrics
        self.on_give_up = on_give_up
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.deadline_s = deadline_s
        self.max_batch = max_batch
        self.group_wait_s = group_wait_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.delivered = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"webhook {self.url}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, alert: dict[str, Any]) -> None:
        """Queue an alert; returns at once."""
        self.queue.put_nowait(alert)
        self.metrics.webhook_queue.labels(self.url).set(self.queue.qsize())

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            if self.group_wait_s:
                await asyncio.sleep(self.group_wait_s)
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            self.metrics.webhook_queue.labels(self.url).set(self.queue.qsize())
            await self._deliver(batch)

    async def _deliver(self, batch: list[dict[str, Any]]) -> None:
        body = orjson.dumps({"version": "1", "alerts": batch})
        headers = {"Content-Type": "application/json", "X-Streamproc-Delivery": str(uuid.uuid4())}
        if self.secret:
            headers["X-Streamproc-Signature"] = sign(body, self.secret)
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.deadline_s
        attempt = 0
        status: int | None = None
        excerpt = ""
        while True:
            wait: float | None = None
            try:
                async with self.session.post(self.url, data=body, headers=headers, timeout=self.timeout) as resp:
                    status = resp.status
                    excerpt = (await resp.text())[:500]
                    if 200 <= status < 300:
                        self.delivered += len(batch)
                        self.metrics.webhook_deliveries.labels(self.url, "delivered").inc()
                        return
                    if status != 429 and status < 500:
                        self.metrics.webhook_deliveries.labels(self.url, "rejected").inc()
                        await self.on_give_up(self.url, batch, status, excerpt)
                        return
                    wait = _retry_after_s(resp.headers.get("Retry-After"))
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                status, excerpt = None, f"{type(exc).__name__}: {exc}"
            self.metrics.webhook_deliveries.labels(self.url, "retry").inc()
            attempt += 1
            backoff = min(self.max_backoff_s, self.base_backoff_s * 2 ** min(attempt, 20))
            delay = max(wait or 0.0, random.uniform(backoff / 2, backoff))
            if loop.time() + delay > give_up_at:
                self.metrics.webhook_deliveries.labels(self.url, "expired").inc()
                await self.on_give_up(self.url, batch, status, excerpt or "delivery deadline passed")
                return
            log.warning("webhook %s: %s, retrying in %.1fs", self.url, status or excerpt, delay)
            await asyncio.sleep(delay)


class WebhookFanout:
    """Every receiver gets every alert, each through its own queue."""

    def __init__(self, urls: Sequence[str], *, secret: str | None, metrics: Metrics, on_give_up: GiveUp,
                 timeout_s: float = 10.0, **kw: Any) -> None:
        self.urls = list(urls)
        self.secret = secret
        self.metrics = metrics
        self.on_give_up = on_give_up
        self.timeout_s = timeout_s
        self.kw = kw
        self.senders: list[WebhookSender] = []
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.session = aiohttp.ClientSession()
        for url in self.urls:
            s = WebhookSender(url, secret=self.secret, session=self.session, metrics=self.metrics,
                              on_give_up=self.on_give_up, timeout_s=self.timeout_s, **self.kw)
            s.start()
            self.senders.append(s)

    async def stop(self) -> None:
        for s in self.senders:
            await s.stop()
        if self.session:
            await self.session.close()

    def submit(self, alert: dict[str, Any]) -> None:
        for s in self.senders:
            s.submit(alert)
