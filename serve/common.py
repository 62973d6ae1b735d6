"""What every Serve app shares at its HTTP edge: the key check, the bind check, same-origin checks, body caps.

Owns turning ``serve.auth`` into HTTP answers (401, 403, 413), reading a request body without ever holding
more than the configured cap, and the one ``route_prefix`` rule. Never decides what a route does, never logs
or returns a key.
"""

# No ``from __future__ import annotations``: the apps' FastAPI routes import from here at runtime.
import asyncio
import ipaddress
from urllib.parse import urlsplit

import ray
from fastapi import HTTPException, Request

from .auth import API_KEY_HEADER, ApiKeyAuth, AuthError, check_bind, is_loopback

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "KEY_COOKIE",
    "BindCheck",
    "authorize",
    "check_route_prefix",
    "check_same_origin",
    "login_form",
    "media_type",
    "proxy_host",
    "read_body",
]

#: Request bodies above this are refused with 413 unless an app's ``max_body_bytes`` says otherwise.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
#: A page opened in a browser cannot send a header: after ``POST <prefix>/login`` the key travels in this
#: cookie (HttpOnly, SameSite=Strict, so no other site's page or form ever sends it).
KEY_COOKIE = "rayscalp_api_key"


def check_route_prefix(value: str) -> str:
    """The one ``route_prefix`` rule of every app: it starts with ``/`` (pydantic validators call it)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"route_prefix must start with '/' (got {value!r})")
    return value


def media_type(header: str) -> str:
    """The media type of a ``Content-Type`` or ``Accept`` entry, lower-case, without its parameters."""
    return header.split(";", 1)[0].strip().lower()


def proxy_host() -> str:
    """The host Serve's HTTP proxies listen on, from the Serve controller."""
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    return str(ray.get(controller.get_http_config.remote(), timeout=30).host)


class BindCheck:
    """Refuse (once, on a replica's first configuration) to serve beyond loopback without a key.

    Parameters
    ----------
    auth : ApiKeyAuth
        The app's key (or none).
    """

    def __init__(self, auth: ApiKeyAuth) -> None:
        self.auth = auth
        self.checked = False

    async def ensure(self) -> None:
        """Check Serve's HTTP host against the key.

        Raises
        ------
        ConfigError
            Without an API key while Serve's HTTP proxy listens beyond loopback.
        """
        if self.checked:
            return
        if not self.auth.enabled:
            check_bind(await asyncio.to_thread(proxy_host), self.auth)
        self.checked = True


def authorize(auth: ApiKeyAuth, request: Request, *, cookie: bool = False) -> None:
    """Accept a request carrying the key (``X-API-Key``; the key cookie too when ``cookie``), else 401."""
    presented = request.headers.get(API_KEY_HEADER)
    if presented is None and cookie:
        presented = request.cookies.get(KEY_COOKIE)
    try:
        auth.check(presented)
    except AuthError as exc:
        raise HTTPException(401, detail=str(exc)) from None


def _host_name(netloc: str) -> str:
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def check_same_origin(auth: ApiKeyAuth, request: Request) -> None:
    """Refuse (403) a state-changing request from another site or through a foreign ``Host``.

    A browser sends ``Origin`` with every cross-origin POST (and ``Sec-Fetch-Site``): either naming another
    site than the ``Host`` asked is refused. Without a key (the app listens on loopback only), the
    ``Host`` itself must be a loopback name, which defeats DNS rebinding (a page on ``evil.example``
    whose name resolves to 127.0.0.1 still sends ``Host: evil.example``).
    """
    host = request.headers.get("host", "")
    if not host:
        raise HTTPException(403, detail="refused: the request has no Host header")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise HTTPException(403, detail=f"refused: a {fetch_site} request (Sec-Fetch-Site) cannot change state")
    origin = request.headers.get("origin")
    if origin is not None:
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host.lower():
            raise HTTPException(403, detail=f"refused: Origin {origin[:100]!r} is not this server ({host[:100]!r})")
    if not auth.enabled:
        name = _host_name(host)
        try:
            loopback = ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = is_loopback(name)
        if not loopback:
            raise HTTPException(
                403, detail=f"refused: Host {host[:100]!r} is not a loopback name and no API key is configured"
            )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 beyond ``max_bytes`` (by ``Content-Length`` first, then while reading).

    Raises
    ------
    HTTPException
        400 for a ``Content-Length`` that is not a non-negative integer; 413 for a body over the cap (the
        rest of it is never read).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise HTTPException(400, detail=f"Content-Length {declared[:40]!r} is not a non-negative integer")
        if int(declared) > max_bytes:
            raise HTTPException(413, detail=f"body of {int(declared)} bytes; at most {max_bytes} (max_body_bytes)")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise HTTPException(413, detail=f"body over {max_bytes} bytes (max_body_bytes); refused while reading")
        parts.append(chunk)
    return b"".join(parts)


def login_form(action: str, message: str) -> str:
    """A minimal page asking for the key (a browser cannot send ``X-API-Key`` when it opens a page)."""
    safe = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        "<!doctype html><meta charset=utf-8><title>rayscalp: API key</title>"
        f"<p>{safe}</p><form method=post action='{action}'>"
        "<input type=password name=key autocomplete=off placeholder='API key' autofocus> "
        "<button type=submit>open</button></form>"
    )
