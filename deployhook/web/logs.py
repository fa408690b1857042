"""GET /jobs/<id>/log: a job's whole output for an admin, or followed live (?follow=1)."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from deployhook.log import get_logger
from deployhook.web.auth import admin_required
from deployhook.web.context import service

log = get_logger()

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


class _Followers:
    """How many followers this process serves at once: each holds a thread for minutes,
    and the threads are shared with the webhook, which must answer in milliseconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def enter(self, limit: int) -> bool:
        with self._lock:
            if self.count >= limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.count -= 1


def _followers() -> _Followers:
    """This app's (so this process's) count."""
    followers: _Followers = current_app.extensions.setdefault("deployhook.followers", _Followers())
    return followers


class _Stream:
    """The response body; close() runs even if the server never iterated it."""

    def __init__(self, lines: Iterator[str], *, job_id: int, follower: _Followers | None) -> None:
        self._lines = lines
        self._follower = follower
        self._job_id = job_id
        self._sent = 0
        self._closed = False

    def __iter__(self) -> Iterator[str]:
        # Nothing yet, but gunicorn sends the headers with the first write: a follower of
        # a queued job learns at once that it is connected.
        yield ""
        for line in self._lines:
            self._sent += 1
            yield line

    def close(self) -> None:
        """Called by the server at the end, and when the client went away."""
        if self._closed:
            return
        self._closed = True
        if self._follower is not None:
            self._follower.leave()
        log.info(
            "job_log_served", job=self._job_id, follow=self._follower is not None, lines=self._sent
        )


@bp.get("/jobs/<int:job_id>/log")
@admin_required
def job_log(job_id: int) -> Any:
    follow = request.args.get("follow", "0").lower() in {"1", "true", "yes"}
    svc = service()
    gone = _disconnected(request.environ.get("gunicorn.socket"))
    lines = svc.output(job_id, follow=follow, gone=gone)  # 404 before any body
    followers = _followers() if follow else None
    if followers is not None and not followers.enter(max(2, svc.settings.web_threads // 4)):
        response = jsonify(error="too many live logs followed at once: try again later")
        response.status_code = 429
        response.headers["Retry-After"] = "10"
        return response
    response = Response(_Stream(lines, job_id=job_id, follower=followers), mimetype="text/plain")
    # Proxies (nginx, Traefik) must pass lines on as they come, not buffer the stream.
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response
