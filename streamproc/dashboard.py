"""The live dashboard's data: ``GET /dashboard/state`` (one JSON snapshot) and ``GET /events/stream``
(the same snapshot pushed as server-sent events every second), plus the page's packaged assets under
``/static/``. The page itself (``GET /``, ``static/index.html``) needs no network beyond this worker.

A snapshot holds the wall clock (``now_ms``) and the event time reached (``watermark_ms``, the most
advanced unit's watermark), the firing alerts (with the silences muting them), trending products by
orders and by clicks with the last hour of bucket counts (``series``, oldest first, one value per
bucket; only products with activity on that signal in the last 5 minutes), sentiment over 24 h per
reviewed product (ranked by the negative share shrunk towards the shop-wide one, so that one bad review
out of one does not top the table), marketing triggers (``triggers``: this worker's counts by kind and the
latest few, trigger_feed.py), and processor
health: records per second per input topic, watermark delay, consumer lag, dead letters per second,
webhook delivery. In a worker the snapshot is made once per read-model snapshot (read_model.py) and shared
by every reader.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from .demand import CARTS, HOUR_MS, ORDERS, VIEWS, ProductState
from .features import trending
from .observability import RateTracker, sample_values
from .settings import INPUT_TOPICS
from .trigger_feed import TriggerFeed

__all__ = ["add_dashboard_routes", "dashboard_state", "product_series", "STREAM_INTERVAL_S"]

STREAM_INTERVAL_S = 1.0
TRENDING_LIMIT = 10
SENTIMENT_LIMIT = 10
SENTIMENT_PRIOR_REVIEWS = 10
"""Weight, in reviews, of the shop-wide negative share in the sentiment table's ranking."""
ASSETS = {"dashboard.js": "application/javascript", "dashboard.css": "text/css", "favicon.svg": "image/svg+xml"}

_DASH = web.AppKey("dashboard", dict)


def product_series(p: ProductState, signal: str, bucket_ms: int) -> list[float]:
    """The product's counts of ``signal`` per closed bucket over the last hour, oldest first (zeros where
    nothing happened), ending with the newest closed bucket."""
    n = max(1, HOUR_MS // bucket_ms)
    end = p.next_close_ms  # start of the next bucket to close = end of the newest closed one
    out = []
    for i in range(n, 0, -1):
        c = p.minutes.get(end - i * bucket_ms)
        out.append(0.0 if c is None else (c[ORDERS] if signal == "orders" else c[VIEWS] + c[CARTS]))
    return out


def _trending(ranked: Iterable[tuple[Any, dict[str, Any]]], signal: str, bucket_ms: int,
              limit: int) -> list[dict[str, Any]]:
    """Of ``ranked`` (product, row) pairs, the products with ``signal`` activity in the last 5 minutes (or an
    open incident on it), by surge score, then by that activity: a product with no orders is not trending
    by orders."""
    col = f"{signal}_5m"
    rows = [(p, row) for p, row in ranked if (row.get(col) or 0) > 0 or row["firing"]]
    rows.sort(key=lambda t: (-t[1]["surge_score"], -(t[1].get(col) or 0), t[1]["product_id"]))
    return [{**row, "series": product_series(p, signal, bucket_ms)} for p, row in rows[:limit]]


def rank_sentiment(products: Iterable[ProductState], limit: int) -> tuple[list[dict[str, Any]], float | None]:
    """Reviewed products, those with an open negative-review incident first, then by their negative share
    shrunk towards the shop-wide share by ``SENTIMENT_PRIOR_REVIEWS`` reviews' worth of it: one bad review
    out of one barely moves a product above the shop's usual share, many bad ones do. Also returns the
    shop-wide share (``None`` without scored reviews)."""
    rows = []
    for p in products:
        pid = p.product_id
        f = (p.features or {}).get("features", {})
        if f.get("reviews_24h"):
            n, share = f["reviews_24h"], f.get("negative_share_24h")
            rows.append({"product_id": pid, "category": p.category, "reviews_24h": n,
                         "sentiment_mean_24h": f.get("sentiment_mean_24h"),
                         "negative_share_24h": share, "negative_24h": None if share is None else round(share * n),
                         "firing": any(a["labels"]["alertname"] == "negative_review_spike"
                                       for a in p.incidents.values())})
    scored = [r for r in rows if r["negative_24h"] is not None]
    total = sum(r["reviews_24h"] for r in scored)
    prior = sum(r["negative_24h"] for r in scored) / total if total else None
    for r in rows:
        r["negative_share_adjusted_24h"] = None if prior is None or r["negative_24h"] is None else round(
            (r["negative_24h"] + SENTIMENT_PRIOR_REVIEWS * prior) / (r["reviews_24h"] + SENTIMENT_PRIOR_REVIEWS), 4)
    rows.sort(key=lambda r: (not r["firing"], -(r["negative_share_adjusted_24h"] or 0.0), -r["reviews_24h"],
                             r["product_id"]))
    return rows[:limit], prior


def _sum_by(samples: Iterable[tuple[dict[str, str], float]], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples:
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def _health(rt: Any, rates: RateTracker, now_ms: int) -> dict[str, Any]:
    s = sample_values(rt.metrics.registry)
    records_in = _sum_by(s.get("streamproc_records_in_total", []), "topic")
    processed = _sum_by(s.get("streamproc_records_processed_total", []), "topic")
    dead = [(lab, v) for lab, v in s.get("streamproc_dead_letters_total", [])]
    lag = _sum_by(s.get("streamproc_consumer_lag_records", []), "topic")
    totals = {f"in:{t}": records_in.get(t, 0.0) for t in INPUT_TOPICS}
    totals["dead"] = sum(v for _, v in dead)
    r = rates.rates(totals)
    topics = {t: {"records_total": records_in.get(t, 0.0), "processed_total": processed.get(t, 0.0),
                  "dead_letters_total": sum(v for lab, v in dead if lab.get("topic") == t),
                  "records_per_s": r.get(f"in:{t}")}
              for t in INPUT_TOPICS}
    watermarks = {}
    for unit, wm in sorted(rt.engine.watermarks().items()):
        watermarks[str(unit)] = None if wm is None else max(0.0, (now_ms - wm) / 1000)
    delays = [d for d in watermarks.values() if d is not None]
    receivers: dict[str, dict[str, Any]] = {}
    for name, key in (("streamproc_webhook_deliveries_total", "posts"), ("streamproc_webhook_alerts_total", "alerts")):
        for lab, v in s.get(name, []):
            rec = receivers.setdefault(lab.get("receiver", ""), {"queue": 0.0, "posts": {}, "alerts": {}})
            rec[key][lab.get("outcome", "")] = rec[key].get(lab.get("outcome", ""), 0.0) + v
    for lab, v in s.get("streamproc_webhook_queue_depth", []):
        receivers.setdefault(lab.get("receiver", ""), {"queue": 0.0, "posts": {}, "alerts": {}})["queue"] = v
    return {
        "ready": bool(rt.ready),
        "topics": topics,
        "watermark_delay_s": watermarks,
        "watermark_delay_max_s": max(delays) if delays else None,
        "consumer_lag_records": {t: lag[t] for t in sorted(lag)},
        "dead_letters_per_s": r.get("dead"),
        "dead_letters_total": totals["dead"],
        "dead_letters_by_reason": _sum_by(dead, "reason"),
        "webhooks": [{"receiver": k, **v} for k, v in sorted(receivers.items())],
        "webhooks_configured": bool(rt.settings.webhook_urls),
        "products_tracked": rt.engine.product_count(),
    }


def dashboard_state(rt: Any, *, silences: Any = None, rates: RateTracker | None = None,
                    limit: int = TRENDING_LIMIT, snapshot: Any = None) -> dict[str, Any]:
    """One snapshot of everything the dashboard shows; from a read-model ``snapshot`` when given (else
    computed over every product)."""
    now = rt.clock.now_ms()
    bucket_ms = rt.settings.window.bucket_ms
    store = getattr(silences, "store", None)
    alerts = []
    firing = snapshot.firing if snapshot is not None else sorted(rt.engine.firing(), key=lambda a: a["starts_at"],
                                                                 reverse=True)
    for a in firing:
        muted = store.muting(a["labels"], now) if store is not None else []
        alerts.append({**a, "silenced_by": muted})
    if snapshot is not None:
        sentiment, negative_prior = snapshot.sentiment[:SENTIMENT_LIMIT], snapshot.negative_prior
        ranked = snapshot.trending
    else:
        sentiment, negative_prior = rank_sentiment(rt.engine.index.values(), SENTIMENT_LIMIT)
        ranked = {sig: trending(rt.engine.index, sig, len(rt.engine.index)) for sig in ("orders", "clicks")}
    if snapshot is not None:
        triggers = snapshot.triggers
    else:
        feed = getattr(rt, "triggers", None)
        triggers = None if feed is None else feed.view()
    active = [s for s in store.silences.values() if s.state(now) == "active"] if store is not None else []
    marks = [wm for wm in rt.engine.watermarks().values() if wm is not None]
    return {
        "now_ms": now,
        "watermark_ms": max(marks) if marks else None,
        "bucket_ms": bucket_ms,
        "alerts": alerts,
        "trending": {sig: _trending(ranked[sig], sig, bucket_ms, limit) for sig in ("orders", "clicks")},
        "sentiment": sentiment,
        "triggers": triggers if triggers is not None else TriggerFeed().view(),
        "triggers_enabled": bool(rt.settings.customers),
        "sentiment_model": any(r["sentiment_mean_24h"] is not None for r in sentiment),
        "negative_share_shop_24h": negative_prior,
        "silences_active": len(active),
        "silences_enabled": silences is not None,
        "health": _health(rt, rates or RateTracker(), now),
    }


async def _state_of(request: web.Request) -> bytes:
    """The dashboard state as JSON: made once per read-model snapshot and shared by every reader."""
    d = request.app[_DASH]
    rm = d["read_model"]
    if rm is None:
        return orjson.dumps(dashboard_state(d["runtime"], silences=d["silences"], rates=d["rates"]))
    snap = await rm.current()
    return await rm.derived(snap, "dashboard", lambda: orjson.dumps(dashboard_state(  # type: ignore[no-any-return]
        d["runtime"], silences=d["silences"], rates=d["rates"], snapshot=snap)))


async def state_view(request: web.Request) -> web.Response:
    return web.Response(body=await _state_of(request), content_type="application/json",
                        headers={"Cache-Control": "no-store"})


async def stream_view(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``event: state`` with a snapshot every second until the client goes away or
    the worker stops."""
    d = request.app[_DASH]
    stopping: asyncio.Event = d["stopping"]
    if d["streams"] >= d["max_streams"]:
        return web.json_response({"error": "too many open event streams; poll /dashboard/state"}, status=503,
                                 headers={"Retry-After": "5"})
    d["streams"] += 1
    try:
        return await _stream(request, stopping)
    finally:
        d["streams"] -= 1


async def _stream(request: web.Request, stopping: asyncio.Event) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        await resp.write(b"retry: 2000\n\n")
        while not stopping.is_set():
            await resp.write(b"event: state\ndata: " + await _state_of(request) + b"\n\n")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), STREAM_INTERVAL_S)
    return resp


async def asset_view(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    body = resources.files("streamproc").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


async def favicon_view(request: web.Request) -> web.Response:
    """``/favicon.ico``, which browsers ask for whatever the page says: the packaged SVG icon."""
    body = resources.files("streamproc").joinpath("static", "favicon.svg").read_bytes()
    return web.Response(body=body, content_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


async def _on_shutdown(app: web.Application) -> None:
    app[_DASH]["stopping"].set()  # end open event streams so the server can close their connections


def add_dashboard_routes(app: web.Application, runtime: Any, silences: Any = None, *, read_model: Any = None,
                         max_streams: int = 100) -> None:
    """Mount ``/dashboard/state``, ``/events/stream``, ``/static/{name}`` and ``/favicon.ico`` on ``app``."""
    app[_DASH] = {"runtime": runtime, "silences": silences, "rates": RateTracker(), "stopping": asyncio.Event(),
                  "read_model": read_model, "streams": 0, "max_streams": max_streams}
    app.on_shutdown.append(_on_shutdown)
    app.router.add_get("/dashboard/state", state_view)
    app.router.add_get("/events/stream", stream_view)
    app.router.add_get("/static/{name}", asset_view)
    app.router.add_get("/favicon.ico", favicon_view)
