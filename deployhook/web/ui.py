"""The HTML pages: `/` (every repo, refreshing itself), `/ui/repos/<name>`, `/ui/jobs/<id>`;
`/login`.

Server-rendered with Jinja; the scripts in static/ only refresh what the server already
rendered, from the JSON endpoints. No build step, no CDN: it works offline.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, redirect, render_template, request

from deployhook import summary
from deployhook.models import Job, iso
from deployhook.web.auth import admin_required, is_admin, status_access
from deployhook.web.context import service

bp = Blueprint("ui", __name__)

# The pages load only their own scripts and styles: no inline script, nothing remote.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@bp.after_request
def _headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.app_template_filter("ago")
def _ago(ts: float | None) -> str:
    return summary.ago(ts)


@bp.app_template_filter("took")
def _took(seconds: float | None) -> str:
    return summary.duration(seconds)


@bp.app_template_filter("iso")
def _iso(ts: float | None) -> str:
    return iso(ts) or ""


@bp.app_template_filter("clock")
def _clock(ts: float | None) -> str:
    text = iso(ts)
    return text[11:19] + " UTC" if text else "—"


def _page_context() -> dict[str, Any]:
    svc = service()
    return {
        "admin": is_admin(),
        "admin_enabled": bool(svc.settings.admin_token),
        "private": svc.settings.private_status,
    }


@bp.get("/")
@status_access
def index() -> Any:
    svc = service()
    repos = svc.summaries()
    first: dict[str, Any] = {}
    if not repos:  # a newcomer: say how to add the first repo, exactly
        base = svc.settings.public_url or request.url_root.rstrip("/")
        first = {
            "command": svc.add_repo_command(),
            "registry": svc.settings.registry.absolute(),
            "example": svc.registry_is_example,
            "hook_url": f"{base}/deploy/NAME",
        }
    return render_template(
        "index.html",
        repos=repos,
        first=first,
        nodes=svc.workers_by_node(),
        registry_error=svc.registry_error,
        **_page_context(),
    )


@bp.get("/ui/repos/<name>")
@status_access
def repo_page(name: str) -> Any:
    """One repo: its state, its jobs and its delivery ledger (public like `/`)."""
    line, jobs, deliveries = service().repo_history(name)
    # What the page shows, in short: the script re-reads the page when this changes.
    key = json.dumps(
        [
            line.to_dict(),
            [(j.id, str(j.status), len(j.steps), j.rolled_back_by) for j in jobs],
            [d.id for d in deliveries],
        ],
        default=str,
    )
    return render_template(
        "repo.html",
        r=line,
        jobs=jobs,
        deliveries=deliveries,
        key=hashlib.sha256(key.encode()).hexdigest()[:16],
        **_page_context(),
    )


@bp.get("/ui/jobs/<int:job_id>")
@status_access
def job_page(job_id: int) -> Any:
    svc = service()
    job: Job = svc.job(job_id)
    repo = svc.registry.find(job.repo)
    held = bool(repo and svc.summaries([repo.name])[0].held)
    return render_template(
        "job.html",
        job=job,
        branch=repo.branch if repo else None,
        known=repo is not None,
        held=held,
        **_page_context(),
    )


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a login link must not become an open redirect."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
    ):
        return "/"
    return target


@bp.get("/login")
@admin_required
def login() -> Any:
    """Ask the browser for HTTP Basic credentials (the 401 makes it prompt), then go back.

    At the site's root, so the browser then sends them with every page and fetch.
    """
    return redirect(_safe_next(request.args.get("next")), code=303)
