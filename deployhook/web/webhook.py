"""POST /deploy/<repo>: the webhook."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from deployhook.intake import receive as intake
from deployhook.web import service

bp = Blueprint("intake", __name__)


@bp.post("/deploy/<path:repo>")
def deliver(repo: str) -> Any:
    svc = service()
    status, body = intake.receive(
        intake.Request(
            name=repo,
            headers=request.headers,
            body=request.stream,
            content_length=request.content_length,
            content_type=request.headers.get("Content-Type"),
        ),
        registry=svc.registry,
        store=svc.store,
        max_body=svc.settings.max_body,
        default_secret=svc.settings.secret,
    )
    response = jsonify(body)
    response.status_code = status
    return response
