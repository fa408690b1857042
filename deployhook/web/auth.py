"""Admin authentication: a bearer token, or HTTP Basic with the token as password."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import request

from deployhook.errors import AdminDisabled, CrossSite, Unauthorized
from deployhook.web.context import service

F = TypeVar("F", bound=Callable[..., Any])


def offered_token(authorization: str | None) -> str | None:
    """Return the token an Authorization header carries, bearer or basic."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip() or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return decoded.partition(":")[2] or None
    return None


def token_is_admin(expected: str | None, authorization: str | None) -> bool:
    """True if an Authorization header carries the admin token `expected`."""
    token = offered_token(authorization)
    return bool(
        expected
        and token
        and hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8"))
    )


def is_admin() -> bool:
    """True if this request carries the admin token."""
    return token_is_admin(service().settings.admin_token, request.headers.get("Authorization"))


def check_admin() -> None:
    if not service().settings.admin_token:
        raise AdminDisabled("admin endpoints are disabled: set DEPLOYHOOK_ADMIN_TOKEN")
    if not is_admin():
        raise Unauthorized("a valid admin token is required (Bearer, or Basic as password)")
    refusal = _cross_site_refusal()
    if refusal:
        raise CrossSite(refusal)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _origin(url: str) -> str:
    """scheme://host[:port], lower case, the default port left out (as browsers send it)."""
    parts = urlsplit(url.strip())
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        number = parts.port
    except ValueError:  # a port that is not one: no origin of ours
        return url.strip().lower()
    default = {"http": 80, "https": 443}.get(scheme)
    port = f":{number}" if number and number != default else ""
    return f"{scheme}://{host}{port}"


def own_origin() -> str:
    """This server's origin: DEPLOYHOOK_PUBLIC_URL's (behind a TLS proxy the request
    itself says http), else the request's scheme and host."""
    public = service().settings.public_url
    return _origin(public if public else f"{request.scheme}://{request.host}")


def _cross_site_refusal() -> str | None:
    """Why a state-changing request authenticated by HTTP Basic came from another site.

    A browser resends Basic credentials by itself, to any page that posts here (CSRF).
    Fetch Metadata says where a request came from; Origin, on browsers without it.
    Bearer tokens are never sent by a browser on its own: scripts and the CLI pass.
    """
    if request.method in _SAFE_METHODS:
        return None
    scheme = (request.headers.get("Authorization") or "").strip().partition(" ")[0].lower()
    if scheme != "basic":
        return None
    site = (request.headers.get("Sec-Fetch-Site") or "").strip().lower()
    if site and site not in {"same-origin", "none"}:
        return f"a cross-site request ({site}) may not act with a browser's credentials"
    origin = request.headers.get("Origin")
    if origin is not None and _origin(origin) != own_origin():
        return "a request from another origin may not act with a browser's credentials"
    return None


def admin_required(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_admin()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def shows_detail() -> bool:
    """Whether answers to this request may name files, variables and keys: always, but in
    private mode to an admin only."""
    return not service().settings.private_status or is_admin()


def status_access(view: F) -> F:
    """Public status, unless DEPLOYHOOK_PRIVATE_STATUS puts it behind the admin token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if service().settings.private_status and not is_admin():
            raise Unauthorized("status is private: a valid admin token is required")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
