"""HTTP views for silences: ``POST /silences``, ``GET /silences``, ``GET``/``DELETE /silences/{id}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .clock import Clock
from .silences import InvalidSilence, SilenceService

__all__ = ["add_silence_routes", "SILENCES", "CLOCK"]

SILENCES = web.AppKey("silences", SilenceService)
CLOCK = web.AppKey("silences_clock", Clock)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def create(request: web.Request) -> web.Response:
    svc, now = request.app[SILENCES], request.app[CLOCK].now_ms()
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return _json({"error": "body must be JSON"}, 400)
    try:
        s = await svc.create(body, now)
    except InvalidSilence as exc:
        return _json({"error": str(exc)}, 400)
    return _json({"silenceID": s.id, "silence": s.to_json(now)}, 200)


async def list_all(request: web.Request) -> web.Response:
    svc, now = request.app[SILENCES], request.app[CLOCK].now_ms()
    state = request.query.get("state")
    items = [s.to_json(now) for s in svc.store.ordered(now) if state is None or s.state(now) == state]
    return _json({"silences": items})


async def get_one(request: web.Request) -> web.Response:
    svc, now = request.app[SILENCES], request.app[CLOCK].now_ms()
    s = svc.store.get(request.match_info["id"])
    return _json(s.to_json(now)) if s else _json({"error": "no such silence"}, 404)


async def delete(request: web.Request) -> web.Response:
    svc, now = request.app[SILENCES], request.app[CLOCK].now_ms()
    s = await svc.expire(request.match_info["id"], now)
    return _json(s.to_json(now)) if s else _json({"error": "no such silence"}, 404)


def add_silence_routes(app: web.Application, service: SilenceService, clock: Clock) -> None:
    """Mount the silence API on ``app``."""
    app[SILENCES] = service
    app[CLOCK] = clock
    app.router.add_post("/silences", create)
    app.router.add_get("/silences", list_all)
    app.router.add_get("/silences/{id}", get_one)
    app.router.add_delete("/silences/{id}", delete)
