"""Which requests `kinema serve` takes: none that a web page from another site makes, none through DNS rebinding.

A browser lets any page send requests to 127.0.0.1 (a form POST, a `text/plain` fetch, a WebSocket) without asking
the server first; only the headers tell them apart. The rule, ComfyUI's origin middleware plus two checks it lacks:

1. A request that carries an `Origin` must come from this server: the Origin's host (and port, when both give
   one) equals the `Host` header, compared the way ComfyUI compares them. `Origin: null` (sandboxed frames, files,
   data: URLs) is refused. ComfyUI checks only when the Host is a loopback name; Kinema checks always.
2. `Sec-Fetch-Site: cross-site` is refused (as in newer ComfyUI): the browser says another site made it.
3. Bound to a loopback address (the default), the `Host` header must name a loopback host (localhost,
   127.0.0.0/8, ::1). A page on evil.example whose DNS name is switched to 127.0.0.1 (DNS rebinding) sends
   `Host: evil.example` and is refused; ComfyUI resolves the name, sees loopback and lets it through.

Requests without an Origin (curl, scripts, same-origin GETs) pass checks 1 and 2. Refusals are 403 with a JSON
{"error"} naming the header; they apply to every route, the WebSocket included.
"""
from __future__ import annotations

import ipaddress
import logging
from urllib.parse import urlsplit

from aiohttp import web

__all__ = ["is_loopback_name", "is_loopback_bind", "refusal", "origin_guard"]

log = logging.getLogger("kinema.server")


def is_loopback_name(hostname: str | None) -> bool:
    """localhost (and names under it), 127.0.0.0/8 and ::1 — by the name alone, never resolving it."""
    if not hostname:
        return False
    name = hostname.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def is_loopback_bind(host: str) -> bool:
    """Whether `kinema serve --host` keeps the server on this machine."""
    return is_loopback_name(host)


def _split(authority: str) -> tuple[str | None, int | None]:
    parts = urlsplit("//" + authority)
    try:
        return parts.hostname, parts.port
    except ValueError:                  # a port that is not a number
        return parts.hostname, -1


def refusal(headers, loopback_only: bool) -> str | None:
    """Why a request with these headers is refused, or None when it may go on."""
    host = headers.get("Host")
    if loopback_only and host is not None:
        hostname, _ = _split(host.lower())
        if not is_loopback_name(hostname):
            return (f"the Host header {host[:100]!r} is not this machine (the server listens on loopback only; "
                    f"a web page whose address now points at 127.0.0.1 cannot use it). Open the editor at "
                    f"http://127.0.0.1:<port>/")
    if headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "the browser says another site made this request (Sec-Fetch-Site: cross-site)"
    origin = headers.get("Origin")
    if origin is None:
        return None
    parsed = urlsplit(origin.strip().lower())
    if origin.strip().lower() == "null" or not parsed.netloc:
        return f"the request comes from a page with no origin (Origin: {origin[:100]!r})"
    if host is None:
        return "the request has an Origin but no Host header"
    host_domain, origin_domain = host.lower(), parsed.netloc
    host_name, host_port = _split(host_domain)
    origin_name, origin_port = _split(origin_domain)
    if origin_port is None:             # as ComfyUI: a side without a port compares host names only
        host_domain = host_name
    if host_port is None:
        origin_domain = origin_name
    if host_domain != origin_domain:
        return (f"the request comes from another site (Origin {origin[:100]!r}, this server {host[:100]!r}); pages "
                f"from other sites may not drive Kinema's server")
    return None


def origin_guard(loopback_only: bool):
    """aiohttp middleware refusing (403) what `refusal` refuses."""
    @web.middleware
    async def guard(request: web.Request, handler):
        problem = refusal(request.headers, loopback_only)
        if problem is not None:
            log.warning("refused %s %s: %s", request.method, request.path[:200], problem)
            return web.json_response({"error": f"Forbidden: {problem}."}, status=403)
        return await handler(request)
    return guard
