"""The webhook's hot route, `POST /deploy/<name>`, as plain WSGI in front of Flask.

A delivery is the one request a forge sends at rate; Flask's request context, URL map
and response object cost about as much as the rest of the delivery. This path answers
it with the same intake (Service.receive), the same rules of web/answers.py and the
same bytes as the Flask route in web/webhook.py (tests/web/test_fast.py compares them
for every row of docs/webhooks.md's table). Anything else, including a name that is not
a plain registry name, goes to Flask unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.datastructures import EnvironHeaders
from werkzeug.wsgi import get_content_length, get_input_stream

from deployhook import errors
from deployhook.intake.receive import Request
from deployhook.log import get_logger
from deployhook.service import Service
from deployhook.web import answers
from deployhook.web.auth import token_is_admin

log = get_logger()

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_PREFIX = "/deploy/"
# A registry name (registry/model.py NAME_RE): one path segment, ASCII, so the WSGI path
# (latin-1) is the name as Flask would decode it, and no other route can claim it.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


class FastDeliveries:
    """WSGI middleware: `POST /deploy/<name>` answered here, the rest by `app`."""

    def __init__(self, app: WSGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(_PREFIX) or not _PLAIN_NAME.match(path, len(_PREFIX)):
            return self.app(environ, start_response)
        return self.deliver(path[len(_PREFIX) :], environ, start_response)

    def deliver(
        self, name: str, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> list[bytes]:
        headers = EnvironHeaders(environ)
        settings = self.service.settings
        detail = not settings.private_status or token_is_admin(
            settings.admin_token, headers.get("Authorization")
        )
        extra: list[tuple[str, str]] = []
        try:
            decision = self.service.receive(
                Request(
                    name=name,
                    headers=headers,
                    body=get_input_stream(environ),
                    content_length=get_content_length(environ),
                    content_type=headers.get("Content-Type"),
                ),
                status_of=answers.decision_status,
            )
            status = answers.decision_status(decision)
            body = answers.decision_body(decision, detail=detail)
        except errors.DeployhookError as exc:  # as app.py's handler answers it
            status = answers.error_status(exc)
            body = answers.error_body(exc, detail=detail)
            extra = answers.error_headers(status)
        except Exception:
            log.exception("request_failed", method="POST", path=environ.get("PATH_INFO"))
            status, body = 500, answers.INTERNAL_ERROR
        data = answers.render(body)
        start_response(
            answers.status_line(status),
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(data))),
                *extra,
            ],
        )
        return [data]
