"""The JSON status endpoints and /healthz."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from deployhook.errors import InvalidRequest, StoreUnavailable
from deployhook.web import service
from deployhook.web.auth import status_access

bp = Blueprint("status", __name__)

MAX_LIMIT = 1000


def limit_arg(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"limit must be an integer, got {raw[:20]!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}")
    return value


@bp.get("/deploy/<repo>")
@status_access
def repo_status(repo: str) -> Any:
    svc = service()
    return jsonify(svc.repo_status(svc.registry.get(repo)))


@bp.get("/deploy/<repo>/jobs")
@status_access
def repo_jobs(repo: str) -> Any:
    svc = service()
    name = svc.registry.get(repo).name
    return jsonify(jobs=[j.to_dict() for j in svc.store.jobs(name, limit=limit_arg(20))])


@bp.get("/deploy/<repo>/deliveries")
@status_access
def repo_deliveries(repo: str) -> Any:
    svc = service()
    name = svc.registry.get(repo).name
    rows = svc.store.deliveries(name, limit=limit_arg(50))
    return jsonify(deliveries=[d.to_dict() for d in rows])


@bp.get("/jobs/<int:job_id>")
@status_access
def job(job_id: int) -> Any:
    return jsonify(service().store.job(job_id).to_dict())


@bp.get("/healthz")
def healthz() -> Any:
    svc = service()
    unwritable = svc.store.writable()
    if unwritable:
        response = jsonify(status="unavailable", problems=[unwritable])
        response.status_code = 503
        return response
    try:
        problems = svc.problems()
    except StoreUnavailable as exc:
        problems = [str(exc)]
    return jsonify(status="degraded" if problems else "ok", problems=problems)
