"""What a request handler sees: the Service of the app handling the request."""

from __future__ import annotations

from flask import current_app

from deployhook.service import Service


def service() -> Service:
    """The Service of the app handling this request."""
    svc: Service = current_app.extensions["deployhook"]
    return svc
