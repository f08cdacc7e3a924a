"""Who may use a route: one rule for every route (token, ``Origin``, client address).

Every route needs the access token (when one is configured) and a same-origin (or allowed)
``Origin`` header, except the few in :data:`PUBLIC_ROUTES` that neither compute nor reveal
session data: the page and its files, the page's config, and the health check. The rule is a
middleware, so a route added later is protected unless it is added to the public list.
"""

from __future__ import annotations

import hmac

from aiohttp import web

from server.state import CONFIG

#: Canonical paths of the routes that need no token.
PUBLIC_ROUTES = frozenset({"/", "/config", "/healthz", "/static/{path}"})


def client_ip(request: web.Request) -> str:
    """The client's address; behind the ngrok agent (a loopback peer), the last
    ``X-Forwarded-For`` entry, which ngrok appends."""
    ip = request.remote or "unknown"
    if request.app[CONFIG].ngrok and ip in ("127.0.0.1", "::1"):
        forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return ip


def _deny(cls: type[web.HTTPException], text: str) -> web.HTTPException:
    return cls(text=f'{{"error": "{text}"}}', content_type="application/json")


def check_access(request: web.Request) -> None:
    """Same-origin (or allowed origin) and, when configured, the access token
    (``?token=`` or the ``X-Access-Token`` header); raises 403/401 otherwise."""
    cfg = request.app[CONFIG]
    origin = request.headers.get("Origin")
    if origin is not None:
        host = request.headers.get("Host", "")
        own = {f"http://{host}", f"https://{host}"}
        if origin not in own and origin not in cfg.allowed_origins:
            raise _deny(web.HTTPForbidden, "origin not allowed")
    token = cfg.access_token
    if token:
        given = request.query.get("token") or request.headers.get("X-Access-Token") or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise _deny(web.HTTPUnauthorized,
                        "access token not valid" if given else "access token required")


def is_public(request: web.Request) -> bool:
    """Whether the matched route is one of :data:`PUBLIC_ROUTES` (unmatched paths are 404s)."""
    route = request.match_info.route
    resource = route.resource
    if resource is None:  # no route matched: the 404/405 handler
        return True
    canonical = resource.canonical
    return canonical in PUBLIC_ROUTES


@web.middleware
async def access_middleware(request: web.Request, handler):
    """Apply :func:`check_access` to every route that is not public."""
    if not is_public(request):
        check_access(request)
    return await handler(request)
