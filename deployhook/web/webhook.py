"""POST /deploy/<repo>: the webhook."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from deployhook.intake.receive import Request
from deployhook.web import answers
from deployhook.web.auth import shows_detail
from deployhook.web.context import service

bp = Blueprint("webhook", __name__)


@bp.post("/deploy/<path:repo>")
def deliver(repo: str) -> Any:
    decision = service().receive(
        Request(
            name=repo,
            headers=request.headers,
            body=request.stream,
            content_length=request.content_length,
            content_type=request.headers.get("Content-Type"),
        ),
        status_of=answers.decision_status,
    )
    response = jsonify(answers.decision_body(decision, detail=shows_detail()))
    response.status_code = answers.decision_status(decision)
    return response
