"""GET /api/workers: each node, the repos pinned to it, its workers and their heartbeats."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from deployhook.web.auth import status_access
from deployhook.web.context import service

bp = Blueprint("nodes", __name__)


@bp.get("/api/workers")
@status_access
def api_workers() -> Any:
    return jsonify(nodes=service().workers_by_node())
