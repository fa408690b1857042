"""GET /api/workers: each node, the repos pinned to it, its workers and their heartbeats."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, jsonify

from deployhook.models import iso
from deployhook.service import WORKER_STALE_S, Service
from deployhook.web import service
from deployhook.web.auth import status_access

bp = Blueprint("nodes", __name__)

# Workers silent for longer than this (and never stopped) are left out: a host that was
# retired long ago should not clutter the page forever.
SHOWN_FOR_S = 24 * 3600.0


def workers_by_node(svc: Service, *, now: float | None = None) -> list[dict[str, Any]]:
    """Every node that has repos or workers: its repos, workers, and whether one is alive.

    The default node (repos without `node:`, workers without DEPLOYHOOK_NODE) is `None`.
    """
    now = time.time() if now is None else now
    pinned: dict[str, list[str]] = {}
    for repo in svc.registry:
        pinned.setdefault(repo.node, []).append(repo.name)
    workers: dict[str, list[dict[str, Any]]] = {}
    for worker in svc.store.workers(since=now - SHOWN_FOR_S):
        age = max(now - worker.heartbeat_at, 0.0)
        workers.setdefault(worker.node, []).append(
            {
                "id": worker.id,
                "host": worker.host,
                "pid": worker.pid,
                "slots": worker.slots,
                "started_at": iso(worker.started_at),
                "heartbeat_at": iso(worker.heartbeat_at),
                "heartbeat_age_s": round(age, 1),
                "alive": age <= WORKER_STALE_S,
            }
        )
    return [
        {
            "node": node or None,
            "repos": sorted(pinned.get(node, [])),
            "workers": workers.get(node, []),
            "alive": any(w["alive"] for w in workers.get(node, [])),
        }
        for node in sorted(set(pinned) | set(workers))
    ]


@bp.get("/api/workers")
@status_access
def api_workers() -> Any:
    return jsonify(nodes=workers_by_node(service()))
