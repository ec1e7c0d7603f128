"""Webhook delivery that survives a crash: the ``alerts`` topic is the queue.

Each receiver gets a :class:`ReceiverLoop` with its own aiokafka consumer group
(``<app_id>-webhook-<hash of the URL>``) on ``alerts``. The loop takes what arrived within the group wait
of the oldest undelivered alert (at most ``max_alerts``), POSTs it in the receiver's format, retries on
network errors, 5xx and 429 (honouring ``Retry-After``) with exponential backoff and jitter until the
deadline (counted from the alert's publication), dead-letters on any other 4xx or at the deadline, and
only then commits the offsets. A worker killed mid-way re-reads from the last commit: at-least-once,
receivers dedupe on ``alert_id``. Redirects are not followed: a 3xx is a failure of its own (``redirected``,
dead-lettered with the ``Location``). A POST that may have reached the receiver without an answer (a
timeout, a dropped connection) is a possible copy: after ``max_copies`` of those the batch is dead-lettered
(``timeout``) instead of retried until the deadline. Both the timeout and ``max_copies`` can be set per
receiver (``#timeout_ms=N&max_copies=N`` after its URL). Nothing is held in memory beyond one batch per receiver, and a slow
receiver holds only its own loop. Alerts marked ``silenced`` (or ``inhibited_by``, unless configured
otherwise) are skipped, and counted.

This module holds the pure parts (formats, signature headers, retry decisions, the retry loop with time
injected); :mod:`streamproc.delivery_service` holds the Kafka/HTTP loop the worker runs as a task, and
``python -m streamproc.delivery_service`` runs that same loop alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import email.utils
import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from .settings import WEBHOOK_FORMAT_PREFIXES, Settings
from .webhooks import receiver_options, sign

__all__ = ["Receiver", "DeliveryConfig", "Result", "parse_receivers", "skip_reason", "encode_body",
           "alertmanager_payload", "request_headers", "classify", "maybe_received", "retry_after_s", "backoff_s", "deliver",
           "dead_letter_record", "NETWORK_ERRORS"]

log = logging.getLogger(__name__)

EXCERPT_CHARS = 500
AM_ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class Receiver:
    """One webhook endpoint."""

    url: str
    """Where to POST (without the format prefix)."""
    format: str = "native"
    """``native`` (the contract's body) or ``alertmanager`` (Alertmanager webhook, version 4)."""
    timeout_s: float | None = None
    """This receiver's per-request timeout (``#timeout_ms=``); None: the configured default."""
    max_copies: int | None = None
    """This receiver's bound on unanswered POSTs of one batch (``#max_copies=``); None: the default."""

    @property
    def group_suffix(self) -> str:
        """Stable part of the consumer group id: the same URL keeps its delivery progress across restarts."""
        return hashlib.sha1(self.url.encode()).hexdigest()[:12]


def parse_receivers(specs: Sequence[str]) -> tuple[Receiver, ...]:
    """``STREAMPROC_WEBHOOK_URLS`` entries (``[am+|native+]http(s)://...``) as receivers."""
    out = []
    for spec in specs:
        fmt = "native"
        for prefix in WEBHOOK_FORMAT_PREFIXES:
            if spec.startswith(prefix):
                fmt = "native" if prefix == "native+" else "alertmanager"
                spec = spec[len(prefix):]
                break
        url, _, fragment = spec.partition("#")
        opts = receiver_options(fragment)
        timeout = opts.get("timeout_ms")
        out.append(Receiver(url, fmt, None if timeout is None else timeout / 1000, opts.get("max_copies")))
    return tuple(out)


@dataclass(frozen=True)
class DeliveryConfig:
    """How deliveries are made; see docs/alert-delivery.md for the environment variables."""

    secret: str | None = None
    timeout_s: float = 10.0
    """Per-request timeout."""
    max_copies: int = 3
    """POSTs of one batch that may have reached the receiver unanswered before it is dead-lettered."""
    group_wait_s: float = 5.0
    """Alerts published within this long of the first undelivered one share a POST."""
    max_alerts: int = 100
    """Largest POST, in alerts."""
    deadline_s: float = 3600.0
    """Give up this long after an alert was published."""
    backoff_s: float = 0.5
    """First retry delay; doubles per attempt up to ``max_backoff_s``, with jitter."""
    max_backoff_s: float = 60.0
    send_inhibited: bool = False
    """Also deliver alerts inhibited by a category alert."""
    external_url: str = "http://127.0.0.1:6066"
    """Alertmanager payloads' ``externalURL``; ``generatorURL`` points below it."""

    def for_receiver(self, receiver: Receiver) -> DeliveryConfig:
        """This config with the receiver's own timeout and bound on copies, where it sets them."""
        return dataclasses.replace(
            self, timeout_s=receiver.timeout_s if receiver.timeout_s is not None else self.timeout_s,
            max_copies=receiver.max_copies if receiver.max_copies is not None else self.max_copies)

    @classmethod
    def from_settings(cls, s: Settings) -> DeliveryConfig:
        return cls(secret=s.webhook_secret, timeout_s=s.webhook_timeout_ms / 1000, max_copies=s.webhook_max_copies,
                   group_wait_s=s.webhook_group_wait_ms / 1000, max_alerts=s.webhook_max_alerts,
                   deadline_s=s.webhook_deadline_ms / 1000, backoff_s=s.webhook_backoff_ms / 1000,
                   max_backoff_s=s.webhook_max_backoff_ms / 1000, send_inhibited=bool(s.webhook_send_inhibited),
                   external_url=s.webhook_external_url or f"http://{s.web_host}:{s.web_port}")


# -- pure parts -------------------------------------------------------------------------------------


def skip_reason(alert: dict[str, Any], cfg: DeliveryConfig) -> str | None:
    """Why an alert on the topic is not sent to webhooks (``silenced``, ``inhibited``), or None."""
    if alert.get("silenced"):
        return "silenced"
    if alert.get("inhibited_by") and not cfg.send_inhibited:
        return "inhibited"
    return None


def _common(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def _am_labels(alert: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in alert.get("labels", {}).items() if v is not None}


def alertmanager_payload(receiver: str, alerts: list[dict[str, Any]], external_url: str,
                         truncated: int = 0) -> dict[str, Any]:
    """The Alertmanager webhook body (``version: "4"``) for a batch of alerts."""
    items = []
    for a in alerts:
        labels = _am_labels(a)
        pid = labels.get("product_id")
        annotations = {k: str(v) for k, v in a.get("annotations", {}).items() if v is not None}
        for extra in ("inhibited_by", "alert_id", "dedup_key"):
            if a.get(extra):
                annotations[extra] = str(a[extra])
        items.append({
            "status": a["status"],
            "labels": labels,
            "annotations": annotations,
            "startsAt": a.get("starts_at") or AM_ZERO_TIME,
            "endsAt": a.get("ends_at") or AM_ZERO_TIME,
            "generatorURL": f"{external_url}/features/{pid}" if pid else f"{external_url}/alerts?status=firing",
            "fingerprint": a.get("fingerprint", ""),
        })
    common_labels = _common([i["labels"] for i in items])
    return {
        "version": "4",
        "groupKey": f'{{}}:{{receiver="{receiver}"}}',
        "truncatedAlerts": truncated,
        "status": "firing" if any(i["status"] == "firing" for i in items) else "resolved",
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": common_labels,
        "commonAnnotations": _common([i["annotations"] for i in items]),
        "externalURL": external_url,
        "alerts": items,
    }


def encode_body(receiver: Receiver, alerts: list[dict[str, Any]], cfg: DeliveryConfig) -> bytes:
    """The POST body in the receiver's format."""
    if receiver.format == "alertmanager":
        return orjson.dumps(alertmanager_payload(receiver.url, alerts, cfg.external_url))
    return orjson.dumps({"version": "1", "alerts": alerts})


def request_headers(body: bytes, secret: str | None, delivery_id: str) -> dict[str, str]:
    """Content type, delivery id and (with a secret) the HMAC-SHA256 signature, as the contract says."""
    headers = {"Content-Type": "application/json", "X-Streamproc-Delivery": delivery_id}
    if secret:
        headers["X-Streamproc-Signature"] = sign(body, secret)
    return headers


def classify(status: int) -> str:
    """``delivered`` (2xx), ``retry`` (429, 5xx), ``redirected`` (3xx: not followed) or ``rejected`` (any
    other status)."""
    if 200 <= status < 300:
        return "delivered"
    if status == 429 or status >= 500:
        return "retry"
    if 300 <= status < 400:
        return "redirected"
    return "rejected"


def maybe_received(exc: BaseException) -> bool:
    """Whether a POST that failed with ``exc`` may still have reached the receiver (a copy if retried):
    a timeout or a connection lost after sending; not a refused or failed connection."""
    if isinstance(exc, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return False
    return isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                            ConnectionResetError))


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """A ``Retry-After`` header (delta seconds or an HTTP date) as seconds from ``now_s``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now_s)
    return None


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[float, float], float]) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, with jitter in [half, full]."""
    full = min(cap_s, base_s * 2 ** min(attempt - 1, 30))
    return rand(full / 2, full)


@dataclass(frozen=True, slots=True)
class Result:
    """How a batch's delivery ended."""

    outcome: str
    """``delivered``, ``rejected`` (a 4xx other than 429), ``redirected`` (a 3xx), ``timeout`` (``max_copies``
    POSTs unanswered) or ``expired`` (deadline passed)."""
    status: int | None
    """The receiver's last HTTP status (None: network error or never tried)."""
    excerpt: str
    """Start of the receiver's last answer, or the network error."""
    attempts: int


#: The HTTP call ``deliver`` makes: ``(url, body, headers) -> (status, response headers, text)``; raises one
#: of ``NETWORK_ERRORS`` when no answer came.
PostFn = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, Any, str]]]
NETWORK_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


async def deliver(url: str, body: bytes, headers: dict[str, str], *, post: PostFn, give_up_at_s: float,
                  cfg: DeliveryConfig, now_s: Callable[[], float], sleep: Callable[[float], Awaitable[None]],
                  rand: Callable[[float, float], float] = random.uniform,
                  on_retry: Callable[[str, float], None] | None = None) -> Result:
    """POST ``body`` until it is accepted, rejected, or retrying would pass ``give_up_at_s`` (wall clock)."""
    attempts = copies = 0
    status: int | None = None
    excerpt = ""
    while True:
        if now_s() >= give_up_at_s:
            return Result("expired", status, excerpt or "delivery deadline passed before the first attempt", attempts)
        attempts += 1
        wait: float | None = None
        try:
            status, resp_headers, text = await post(url, body, headers)
            excerpt = text[:EXCERPT_CHARS]
            verdict = classify(status)
            if verdict == "redirected":
                excerpt = f"redirect to {resp_headers.get('Location', '?')} not followed; {excerpt}"[:EXCERPT_CHARS]
            if verdict != "retry":
                return Result(verdict, status, excerpt, attempts)
            wait = retry_after_s(resp_headers.get("Retry-After"), now_s())
            cause = str(status)
        except NETWORK_ERRORS as exc:
            status, excerpt = None, f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS]
            cause = "network"
            if maybe_received(exc):
                copies += 1
                if copies >= cfg.max_copies:
                    return Result("timeout", None, f"{copies} POSTs unanswered; last: {excerpt}"[:EXCERPT_CHARS],
                                  attempts)
        delay = max(wait or 0.0, backoff_s(attempts, cfg.backoff_s, cfg.max_backoff_s, rand))
        if now_s() + delay > give_up_at_s:
            return Result("expired", status, excerpt, attempts)
        if on_retry is not None:
            on_retry(cause, delay)
        log.warning("webhook %s: %s, retry %d in %.1fs", url, status or excerpt, attempts, delay)
        await sleep(delay)


def dead_letter_record(*, topic: str, partition: int, offset: int, value: bytes, receiver: Receiver,
                       result: Result, now_ms: int) -> bytes:
    """The dead-letter record of an alert a receiver did not take (contract shape, plus ``delivery``)."""
    if result.outcome == "rejected":
        message = f"webhook {receiver.url} rejected the alert: HTTP {result.status}: {result.excerpt}"
    elif result.outcome == "redirected":
        message = f"webhook {receiver.url} answered HTTP {result.status} (redirects are not followed): {result.excerpt}"
    elif result.outcome == "timeout":
        message = f"webhook {receiver.url}: no answer; not sent again to avoid copies: {result.excerpt}"
    else:
        message = f"webhook {receiver.url}: delivery deadline passed; last answer {result.status}: {result.excerpt}"
    return orjson.dumps({
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "error": {"kind": "delivery", "message": message[:1000]},
        "payload_b64": base64.b64encode(value).decode(),
        "dead_lettered_at_ms": now_ms,
        "delivery": {"receiver": receiver.url, "outcome": result.outcome, "status": result.status,
                     "body_excerpt": result.excerpt, "attempts": result.attempts},
    })
