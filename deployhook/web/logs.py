"""GET /jobs/<id>/log: a job's whole output for an admin, or followed live (?follow=1)."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from flask import Blueprint, Response, request

from deployhook import tail
from deployhook.web import service
from deployhook.web.auth import admin_required

log = structlog.get_logger()

bp = Blueprint("logs", __name__)


def _disconnected(sock: socket.socket | None) -> Callable[[], bool]:
    """A check that the client closed its end (gunicorn hands the socket to the app).

    A follower may wait minutes between lines (a queued job): without this, a reader
    that left would hold a thread until the job ends.
    """
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return gone


@bp.get("/jobs/<int:job_id>/log")
@admin_required
def job_log(job_id: int) -> Any:
    follow = request.args.get("follow", "0").lower() in {"1", "true", "yes"}
    svc = service()
    tail.redact_secrets(svc.registry, default_secret=svc.settings.secret)
    gone = _disconnected(request.environ.get("gunicorn.socket"))
    lines = tail.lines(svc.store, job_id, follow=follow, gone=gone)

    def stream() -> Iterator[str]:
        sent = 0
        try:
            # Nothing yet, but gunicorn sends the headers with the first write: a follower
            # of a queued job learns at once that it is connected.
            yield ""
            for line in lines:
                sent += 1
                yield line
        finally:
            # Runs on the end, and on a client that went away (the server closes us).
            log.info("job_log_served", job=job_id, follow=follow, lines=sent)

    response = Response(stream(), mimetype="text/plain")
    # Proxies (nginx, Traefik) must pass lines on as they come, not buffer the stream.
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response
