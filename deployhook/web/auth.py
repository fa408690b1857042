"""Admin authentication: a bearer token, or HTTP Basic with the token as password."""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request

from deployhook.errors import AdminDisabled, Unauthorized
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


def is_admin() -> bool:
    """True if this request carries the admin token."""
    expected = service().settings.admin_token
    token = offered_token(request.headers.get("Authorization"))
    return bool(
        expected
        and token
        and hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode("utf-8"))
    )


def check_admin() -> None:
    if not service().settings.admin_token:
        raise AdminDisabled("admin endpoints are disabled: set DEPLOYHOOK_ADMIN_TOKEN")
    if not is_admin():
        raise Unauthorized("a valid admin token is required (Bearer, or Basic as password)")


def admin_required(view: F) -> F:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_admin()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def status_access(view: F) -> F:
    """Public status, unless DEPLOYHOOK_PRIVATE_STATUS puts it behind the admin token."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if service().settings.private_status and not is_admin():
            raise Unauthorized("status is private: a valid admin token is required")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
