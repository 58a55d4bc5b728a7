"""Bearer tokens for ``/admin``: a full-access token and an optional read-only one.

* No token configured: access is open (the runtime refuses a non-loopback admin address then),
  to callers on this machine only. A web page open in the operator's browser is on this machine
  too, so an open API also refuses a ``Host`` that does not name this machine (DNS rebinding)
  and a request whose ``Origin`` is another site (a cross-site form or fetch): 403.
* Otherwise every ``/admin`` request needs ``Authorization: Bearer <token>``: a missing or wrong
  token is 401, the read-only token on a write (anything but GET/HEAD) is 403. If only the
  read-only token is set, nobody can write over HTTP (fail closed); the CLI still can.

``/healthz``, ``/readyz`` and ``/metrics`` stay open for probes and scrapers: they carry no event
data. Tokens are compared with :func:`hmac.compare_digest`, against both tokens every time.
"""

from __future__ import annotations

__all__ = [
    "ADMIN_ACCESS",
    "ADMIN_TOKENS",
    "Access",
    "AdminTokens",
    "admin_auth_middleware",
    "is_admin_path",
    "is_loopback",
]

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from receiver.server.responses import error_json
from receiver.settings import AdminSettings

_READ_METHODS = frozenset({"GET", "HEAD"})


class Access(StrEnum):
    OPEN = "open"  # no token configured
    FULL = "full"
    READ = "read"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminTokens:
    full: str | None = None
    read: str | None = None

    @classmethod
    def from_env(cls, settings: AdminSettings, environ: Mapping[str, str]) -> AdminTokens:
        """The tokens the variables hold, without surrounding whitespace (a secret mounted from
        a file often ends in a newline, which no ``Authorization`` header can carry)."""

        def token(name: str | None) -> str | None:
            value = environ.get(name, "").strip() if name else ""
            return value or None

        return cls(full=token(settings.token_env), read=token(settings.read_token_env))

    @property
    def is_open(self) -> bool:
        return self.full is None and self.read is None

    def access_for(self, authorization: str | None) -> Access | None:
        """The access a request's ``Authorization`` header grants, or None."""
        if self.is_open:
            return Access.OPEN
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return None
        given = presented.strip().encode("utf-8", "surrogateescape")
        is_full = _matches(given, self.full)
        is_read = _matches(given, self.read)
        if is_full:
            return Access.FULL
        return Access.READ if is_read else None


def _matches(given: bytes, token: str | None) -> bool:
    if token is None:
        return False
    return hmac.compare_digest(given, token.encode("utf-8"))


ADMIN_TOKENS = web.AppKey("admin_tokens", AdminTokens)
# The access a request's token gave (for its log line).
ADMIN_ACCESS = web.RequestKey("admin_access", Access)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_admin_path(path: str) -> bool:
    return path == "/admin" or path.startswith("/admin/")


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (v4 or v6)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _authority_host(authority: str) -> str:
    """The host of ``host[:port]``, ``[v6]:port`` or a URL's ``scheme://host[:port]``."""
    authority = authority.partition("://")[2] or authority
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    name, sep, port = authority.rpartition(":")
    return name if sep and port.isdigit() else authority


def _cross_site_problem(request: web.Request) -> str | None:
    """Why an open (tokenless) API must refuse this request, if it must."""
    if not is_loopback(_authority_host(request.headers.get("Host", ""))):
        return "the admin API is open (no token): it answers only requests to this machine's name"
    # A browser names the page that sent a request: only a page of the admin's own origin may.
    # Another port of this machine is another origin (a dev server, a notebook showing someone
    # else's HTML): a text/plain POST from it needs no CORS preflight, and replayed for real.
    origin = request.headers.get("Origin")
    if origin is not None and not _is_same_origin(origin, request.headers.get("Host", "")):
        return (
            "the admin API is open (no token): it refuses requests from web pages of other"
            " origins (other sites, or other ports of this machine)"
        )
    return None


def _is_same_origin(origin: str, host: str) -> bool:
    scheme, sep, authority = origin.lower().partition("://")
    return bool(sep) and scheme in ("http", "https") and authority == host.lower()


@web.middleware
async def admin_auth_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    if not is_admin_path(request.path):
        return await handler(request)
    tokens = request.app.get(ADMIN_TOKENS) or AdminTokens()
    if tokens.is_open and (problem := _cross_site_problem(request)) is not None:
        return error_json(403, "forbidden", problem)
    access = tokens.access_for(request.headers.get("Authorization"))
    if access is None:
        return error_json(
            401,
            "unauthorized",
            "send the admin token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="receiver-admin"'},
        )
    request[ADMIN_ACCESS] = access
    if access is Access.READ and request.method not in _READ_METHODS:
        return error_json(403, "forbidden", "the read-only admin token cannot change anything")
    return await handler(request)
