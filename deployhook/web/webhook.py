"""POST /deploy/<repo>: the webhook; POST /deploy: one URL for an organisation's webhook."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from deployhook.intake.receive import Request
from deployhook.web import answers
from deployhook.web.auth import shows_detail
from deployhook.web.context import service

bp = Blueprint("webhook", __name__)


def _request(name: str) -> Request:
    return Request(
        name=name,
        headers=request.headers,
        body=request.stream,
        content_length=request.content_length,
        content_type=request.headers.get("Content-Type"),
    )


@bp.post("/deploy")
def deliver_routed() -> Any:
    routed = service().receive_routed(_request(""), status_of=answers.decision_status)
    response = jsonify(answers.routed_body(routed, detail=shows_detail()))
    response.status_code = answers.routed_status(routed)
    return response


@bp.post("/deploy/<path:repo>")
def deliver(repo: str) -> Any:
    decision = service().receive(_request(repo), status_of=answers.decision_status)
    response = jsonify(answers.decision_body(decision, detail=shows_detail()))
    response.status_code = answers.decision_status(decision)
    return response
