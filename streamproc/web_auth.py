"""Bearer-token protection of the HTTP API's write endpoints (``STREAMPROC_API_TOKEN``).

With a token set, every request that changes state (``POST``, ``PUT``, ``PATCH``, ``DELETE`` — today
``POST /silences``, ``DELETE /silences/{id}`` and ``DELETE /customers/{id}``) needs ``Authorization: Bearer <token>``; reads stay
open, so dashboards, Prometheus and the feature API need no secret. Without a token nothing changes.
The token is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

__all__ = ["install_token_auth", "token_middleware", "WRITE_METHODS"]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _unauthorized(error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": description}, status=401,
        headers={"WWW-Authenticate": f'Bearer realm="streamproc", error="{error}"'})


def token_middleware(token: str) -> Middleware:
    """An aiohttp middleware requiring ``Authorization: Bearer <token>`` on write requests."""
    expected = token.encode()

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in WRITE_METHODS:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given:
                return _unauthorized("invalid_request", "this endpoint needs Authorization: Bearer <STREAMPROC_API_TOKEN>")
            if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected):
                return _unauthorized("invalid_token", "wrong API token")
        return await handler(request)

    return require_token


def install_token_auth(app: web.Application, token: str | None) -> None:
    """Protect ``app``'s write endpoints with ``token``; no-op when ``token`` is None or empty."""
    if token:
        app.middlewares.append(token_middleware(token))
