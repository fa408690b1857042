"""The HTTP edge: blueprints that turn requests into Service calls, and answers back."""

from deployhook.web.app import create_app

__all__ = ["create_app"]
