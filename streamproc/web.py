"""Thin HTTP views over the worker's state: features, trending, alerts, health, metrics, dashboard.

Lists and totals come from the read model's snapshot (read_model.py), product lookups from the live state;
at most ``web_max_concurrent`` requests are handled at once, health checks aside."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from .dashboard import add_dashboard_routes
from .features import not_found, with_status
from .read_model import Limiter, ReadModel
from .runtime import Runtime
from .settings import Settings
from .web_auth import install_token_auth
from .web_customers import add_customer_routes

__all__ = ["make_web_app", "WebServer", "RUNTIME", "SETTINGS", "READ_MODEL"]

RUNTIME = web.AppKey("runtime", Runtime)
SETTINGS = web.AppKey("settings", Settings)
READ_MODEL = web.AppKey("read_model", ReadModel)
MAX_IDS = 1000
UNLIMITED = frozenset({"/healthz", "/readyz"})
"""Answered at once whatever the load: orchestrators restart a worker whose health check times out."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _features(rt: Runtime, settings: Settings, pid: str) -> dict[str, Any]:
    p = rt.engine.peek(pid)
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
    signal = request.query.get("signal", "orders")
    if signal not in ("orders", "clicks"):
        return _json({"error": "signal must be orders or clicks"}, 400)
    try:
        limit = max(1, min(1000, int(request.query.get("limit", "10"))))
    except ValueError:
        return _json({"error": "limit must be an integer"}, 400)
    snap = await request.app[READ_MODEL].current()
    return _json({"signal": signal, "products": [row for _p, row in snap.trending[signal][:limit]]})


async def alerts(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    status = request.query.get("status", "firing")
    if status == "firing":
        items = (await request.app[READ_MODEL].current()).firing
    elif status in ("resolved", "all"):
        items = [a for a in list(rt.recent_alerts) if status == "all" or a["status"] == "resolved"]
    else:
        return _json({"error": "status must be firing, resolved or all"}, 400)
    return _json({"alerts": items})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return _json({"ready": rt.ready}, 200 if rt.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    rm = request.app[READ_MODEL]
    body = await rm.derived(await rm.current(), "metrics", request.app[RUNTIME].metrics.render)
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def index(request: web.Request) -> web.Response:
    html = resources.files("streamproc").joinpath("static", "index.html").read_bytes()
    return web.Response(body=html, content_type="text/html")


async def watermarks(request: web.Request) -> web.Response:
    """Event-time progress per unit: what holds each watermark back (operators and debugging)."""
    return _json(request.app[RUNTIME].watermark_report())


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _limit_middleware(limiter: Limiter) -> Any:
    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in UNLIMITED or request.path == "/events/stream":  # streams have their own cap
            return await handler(request)
        async with limiter.turn() as ok:
            if not ok:
                return web.json_response({"error": "too many requests in progress; retry shortly"}, status=503,
                                         headers={"Retry-After": "1"})
            return await handler(request)

    return limit


ON_HOME = ("/silences", "/watermarks", "/customers")
"""Paths whose handlers read or change state the processing loop owns (silences are written through its
Kafka producer): run there, not on the web server's loop."""


def _home_middleware(read_model: ReadModel) -> Any:
    @web.middleware
    async def on_home(request: web.Request, handler: Handler) -> web.StreamResponse:
        if read_model.home is None or not request.path.startswith(ON_HOME):
            return await handler(request)
        await request.read()  # the body is read here; the handler gets it from the request's cache

        async def run() -> web.StreamResponse:
            return await handler(request)

        return await read_model.on_home(run)  # type: ignore[no-any-return]

    return on_home


def make_web_app(runtime: Runtime, settings: Settings, silences: Any = None, *,
                 home: asyncio.AbstractEventLoop | None = None) -> web.Application:
    """The aiohttp application of a worker. ``home``: the processing loop, when the app is served from
    another (:class:`WebServer`); the read model is then refreshed by the caller."""
    # The CPU budget needs a thread of its own to measure: on the processing loop (home None) it is off.
    share = settings.web_cpu_percent / 100 if home is not None else 1.0
    limiter = Limiter(settings.web_max_concurrent, settings.web_queue_wait_ms / 1000, share)
    read_model = ReadModel(runtime, max_age_s=settings.web_snapshot_max_age_ms / 1000, home=home)
    app = web.Application(client_max_size=1 << 20, middlewares=[_limit_middleware(limiter)])
    install_token_auth(app, settings.api_token)  # STREAMPROC_API_TOKEN: writes need it, reads stay open
    app.middlewares.append(_home_middleware(read_model))
    app[RUNTIME] = runtime
    app[SETTINGS] = settings
    app[READ_MODEL] = read_model
    if home is None:
        app.cleanup_ctx.append(_refresh(read_model))
    app.router.add_get("/features/{product_id}", feature_one)
    app.router.add_get("/features", feature_many)
    app.router.add_get("/trending", trending)
    app.router.add_get("/alerts", alerts)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/watermarks", watermarks)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    # GET /dashboard/state, /events/stream (SSE), /static/*
    add_dashboard_routes(app, runtime, silences, read_model=read_model, max_streams=settings.web_max_streams)
    add_customer_routes(app, runtime)  # GET /customers/{id}, /customers?ids=, DELETE /customers/{id}
    if silences is not None:  # a silences.SilenceService: POST/GET/DELETE /silences
        from .web_silences import add_silence_routes

        add_silence_routes(app, silences, runtime.clock)
    return app


def _refresh(read_model: ReadModel) -> Callable[[web.Application], AsyncIterator[None]]:
    async def refresh(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(read_model.run(), name="read-model refresh")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return refresh


SWITCH_INTERVAL_S = 0.0005
"""How long a thread holds the GIL while another waits for it. At Python's default (5 ms) each socket write
of the processing or the web thread waited up to 5 ms to get the GIL back from the other one, busy with
requests or records: 200 readers halved both. At 0.5 ms both ran faster (docs/performance.md)."""


class WebServer:
    """The worker's HTTP server on a thread and event loop of its own.

    Sharing the processing loop, a crowd of readers filled every loop iteration with request work: 100
    readers of cheap snapshot endpoints cut processing to a few hundred records/s. Here requests only read finished
    snapshots and single products; whatever needs the live state runs on the processing loop (``home``)."""

    def __init__(self, runtime: Runtime, settings: Settings, silences: Any = None) -> None:
        self.runtime = runtime
        self.settings = settings
        self.silences = silences
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._refresh: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen (raises what binding raised); call on the processing loop."""
        home = asyncio.get_running_loop()
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        app = make_web_app(self.runtime, self.settings, self.silences, home=home)
        self._refresh = home.create_task(app[READ_MODEL].run(), name="read-model refresh")
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._serve, args=(app, started), name="streamproc-web", daemon=True)
        self._thread.start()
        await asyncio.wrap_future(started)

    def _serve(self, app: web.Application, started: concurrent.futures.Future[None]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)

        async def listen() -> None:
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.settings.web_bind, self.settings.web_port).start()

        try:
            loop.run_until_complete(listen())
        except BaseException as exc:  # noqa: BLE001 - handed to start()
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None and not loop.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(runner.cleanup(), loop))
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
