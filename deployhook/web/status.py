"""The JSON status endpoints, the badge and /healthz (docs/status.md)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from deployhook import summary
from deployhook.errors import InvalidRequest, StoreUnavailable, UnknownRepo
from deployhook.web import answers, badge
from deployhook.web.auth import is_admin, shows_detail, status_access
from deployhook.web.context import service

bp = Blueprint("status", __name__)

MAX_LIMIT = 1000
BADGE_MAX_AGE_S = 5
MAX_LABEL = 40


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
    return jsonify(service().repo_status(repo))


@bp.get("/deploy/<repo>/jobs")
@status_access
def repo_jobs(repo: str) -> Any:
    return jsonify(jobs=[j.to_dict() for j in service().jobs(repo, limit=limit_arg(20))])


def before_arg() -> int | None:
    raw = request.args.get("before")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise InvalidRequest(f"before must be a seq (a positive integer), got {raw[:20]!r}")
    return int(raw)


@bp.get("/deploy/<repo>/deliveries")
@status_access
def repo_deliveries(repo: str) -> Any:
    rows, following = service().deliveries(repo, limit=limit_arg(50), before=before_arg())
    return jsonify(deliveries=[d.to_dict() for d in rows], next=following)


@bp.get("/jobs/<int:job_id>")
@status_access
def job(job_id: int) -> Any:
    return jsonify(service().job(job_id).to_dict())


@bp.get("/api/overview")
@status_access
def overview() -> Any:
    """Every repo at a glance: what the status page shows and refreshes from."""
    return jsonify(service().overview())


@bp.get("/deploy/<repo>/badge.svg")
def repo_badge(repo: str) -> Any:
    """Public, for a README; in private mode only for repos with `public_badge: true` (any
    other name, known or not, answers the same 404)."""
    svc = service()
    found = svc.registry.find(repo)
    if found is None or (svc.settings.private_status and not found.public_badge and not is_admin()):
        raise UnknownRepo(f"no repo named {repo!r} in the registry")
    [line] = svc.summaries([found.name])
    message = summary.label(line.state)
    label = request.args.get("label", "deploy")[:MAX_LABEL] or "deploy"
    response = Response(badge.render(message, label=label), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = f"public, max-age={BADGE_MAX_AGE_S}"
    return response


@bp.get("/healthz")
def healthz() -> Any:
    svc = service()
    shown = (lambda p: p) if shows_detail() else answers.outline
    unwritable = svc.unwritable()
    if unwritable:
        response = jsonify(status="unavailable", problems=[shown(unwritable)])
        response.status_code = 503
        return response
    try:
        problems = svc.problems()
    except StoreUnavailable as exc:
        problems = [str(exc)]
    return jsonify(status="degraded" if problems else "ok", problems=[shown(p) for p in problems])
