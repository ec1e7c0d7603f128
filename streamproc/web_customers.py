"""HTTP views of customers: ``GET /customers/{id}``, ``GET /customers?ids=a,b``, ``DELETE /customers/{id}``.

They read and change state the processing loop owns, so they run there (web.py, ``ON_HOME``). ``DELETE``
is a write: with ``STREAMPROC_API_TOKEN`` set it needs the bearer token, like the silences API
(web_auth.py). User ids are never logged.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from .runtime import Runtime

__all__ = ["add_customer_routes", "CUSTOMERS_RUNTIME", "MAX_IDS"]

CUSTOMERS_RUNTIME = web.AppKey("customers_runtime", Runtime)
MAX_IDS = 1000


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _one(rt: Runtime, user_id: str) -> dict[str, Any]:
    f = rt.customer_features(user_id)
    return {"user_id": user_id, "status": "NOT_FOUND" if f is None else "OK", "features": f}


async def customer_one(request: web.Request) -> web.Response:
    """One customer's live features; 404 (status ``NOT_FOUND``) when unknown on this worker."""
    body = _one(request.app[CUSTOMERS_RUNTIME], request.match_info["user_id"])
    return _json(body, 404 if body["features"] is None else 200)


async def customer_many(request: web.Request) -> web.Response:
    ids = [i for i in request.query.get("ids", "").split(",") if i]
    if not ids:
        return _json({"error": "give user ids as ?ids=a,b,c"}, 400)
    if len(ids) > MAX_IDS:
        return _json({"error": f"at most {MAX_IDS} ids per request"}, 400)
    rt = request.app[CUSTOMERS_RUNTIME]
    return _json({"results": [_one(rt, i) for i in ids]})


async def customer_delete(request: web.Request) -> web.Response:
    """Erase a customer: state dropped, a features tombstone published, their records ignored for the
    retention period. 404 when the customer's unit belongs to another worker."""
    user_id = request.match_info["user_id"]
    known = await request.app[CUSTOMERS_RUNTIME].erase_customer(user_id)
    if known is None:
        return _json({"error": "this customer's partition is owned by another worker"}, 404)
    return _json({"user_id": user_id, "erased": True, "was_known": known})


def add_customer_routes(app: web.Application, runtime: Runtime) -> None:
    """Mount the customer API on ``app``."""
    app[CUSTOMERS_RUNTIME] = runtime
    app.router.add_get("/customers/{user_id}", customer_one)
    app.router.add_get("/customers", customer_many)
    app.router.add_delete("/customers/{user_id}", customer_delete)
