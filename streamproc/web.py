"""Thin HTTP views over the worker's state: features, trending, alerts, health, metrics, dashboard."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from .dashboard import add_dashboard_routes
from .features import not_found, with_status
from .features import trending as trending_rows
from .runtime import Runtime
from .settings import Settings
from .web_auth import install_token_auth

__all__ = ["make_web_app", "RUNTIME", "SETTINGS"]

RUNTIME = web.AppKey("runtime", Runtime)
SETTINGS = web.AppKey("settings", Settings)
MAX_IDS = 1000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _features(rt: Runtime, settings: Settings, pid: str) -> dict[str, Any]:
    p = rt.engine.index.get(pid)
    if p is None or p.features is None:
        return not_found(pid)
    updated = rt.engine.wall_updated.get(pid)
    age = rt.clock.now_ms() - updated if updated is not None else None
    return with_status(p.features, pid, age_ms=age, max_age_ms=settings.feature_max_age_ms)


async def feature_one(request: web.Request) -> web.Response:
    """One product's features; 404 (same body, status ``NOT_FOUND``) for a product with none yet."""
    rt, st = request.app[RUNTIME], request.app[SETTINGS]
    body = _features(rt, st, request.match_info["product_id"])
    return _json(body, 404 if body["status"] == "NOT_FOUND" else 200)


async def feature_many(request: web.Request) -> web.Response:
    rt, st = request.app[RUNTIME], request.app[SETTINGS]
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    if not ids:
        return _json({"error": "give product ids as ?ids=a,b,c"}, 400)
    if len(ids) > MAX_IDS:
        return _json({"error": f"at most {MAX_IDS} ids per request"}, 400)
    return _json({"results": [_features(rt, st, i) for i in ids]})


async def trending(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    signal = request.query.get("signal", "orders")
    if signal not in ("orders", "clicks"):
        return _json({"error": "signal must be orders or clicks"}, 400)
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "10"))))
    except ValueError:
        return _json({"error": "limit must be an integer"}, 400)
    items = [row for _p, row in trending_rows(rt.engine.index, signal, limit)]
    return _json({"signal": signal, "products": items})


async def alerts(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    status = request.query.get("status", "firing")
    if status == "firing":
        items = sorted(rt.engine.firing(), key=lambda a: a["starts_at"], reverse=True)
    elif status in ("resolved", "all"):
        items = [a for a in rt.recent_alerts if status == "all" or a["status"] == "resolved"]
    else:
        return _json({"error": "status must be firing, resolved or all"}, 400)
    return _json({"alerts": items})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return _json({"ready": rt.ready}, 200 if rt.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def index(request: web.Request) -> web.Response:
    html = resources.files("streamproc").joinpath("static", "index.html").read_bytes()
    return web.Response(body=html, content_type="text/html")


async def watermarks(request: web.Request) -> web.Response:
    """Event-time progress per unit: what holds each watermark back (operators and debugging)."""
    return _json(request.app[RUNTIME].watermark_report())


def make_web_app(runtime: Runtime, settings: Settings, silences: Any = None) -> web.Application:
    """The aiohttp application of a worker."""
    app = web.Application(client_max_size=1 << 20)
    install_token_auth(app, settings.api_token)  # STREAMPROC_API_TOKEN: writes need it, reads stay open
    app[RUNTIME] = runtime
    app[SETTINGS] = settings
    app.router.add_get("/features/{product_id}", feature_one)
    app.router.add_get("/features", feature_many)
    app.router.add_get("/trending", trending)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/watermarks", watermarks)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    add_dashboard_routes(app, runtime, silences)  # GET /dashboard/state, /events/stream (SSE), /static/*
    if silences is not None:  # a silences.SilenceService: POST/GET/DELETE /silences
        from .web_silences import add_silence_routes

        add_silence_routes(app, silences, runtime.clock)
    return app
