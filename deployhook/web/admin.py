"""Admin endpoints: run, rollback, cancel, hold, release (token required)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from deployhook.errors import InvalidRequest
from deployhook.web.auth import admin_required
from deployhook.web.context import service

bp = Blueprint("admin", __name__)


def _body_field(name: str) -> str | None:
    if not request.content_length:
        return None
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise InvalidRequest("body must be a JSON object")
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def _job_response(job: Any, *, coalesced: bool = False, code: int = 202) -> Any:
    body = job.to_dict()
    if coalesced:
        body["coalesced"] = True
    response = jsonify(body)
    response.status_code = code
    return response


@bp.post("/deploy/<repo>/run")
@admin_required
def run(repo: str) -> Any:
    job, coalesced = service().run(repo, sha=_body_field("sha"))
    return _job_response(job, coalesced=coalesced)


@bp.post("/deploy/<repo>/rollback")
@admin_required
def rollback(repo: str) -> Any:
    job, coalesced = service().rollback(repo, to=_body_field("to"))
    return _job_response(job, coalesced=coalesced)


@bp.post("/jobs/<int:job_id>/cancel")
@admin_required
def cancel(job_id: int) -> Any:
    return _job_response(service().cancel(job_id), code=200)


@bp.post("/deploy/<repo>/hold")
@admin_required
def hold(repo: str) -> Any:
    state = service().hold(repo)
    return jsonify(repo=repo, held=state.held)


@bp.post("/deploy/<repo>/release")
@admin_required
def release(repo: str) -> Any:
    job = service().release(repo)
    if job is None:
        return jsonify(repo=repo, held=False)
    return _job_response(job)
