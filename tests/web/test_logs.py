"""The live log through a real gunicorn (gthread workers): lines arrive while the job
runs, the stream ends when the job ends, and a reader that leaves frees its thread."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.helpers import FakeDocker, Remote
from tests.server import Served, live_server

pytestmark = pytest.mark.slow

AUTH = {"Authorization": "Bearer admin-token-for-tests"}


@pytest.fixture
def server(settings: Settings, tmp_path: Path, service: Service) -> Iterator[Served]:
    with live_server(settings, tmp=tmp_path) as srv:
        yield srv


def running_job(service: Service) -> int:
    job, _ = service.store.enqueue(
        repo="site", sha="c" * 40, ref="refs/heads/main", trigger=Trigger.PUSH, node=""
    )
    claimed = service.store.claim(worker="test-worker", node="", lease_s=300)
    assert claimed is not None and claimed.id == job.id
    return job.id


class Follower:
    """One streamed GET, read line by line as the server sends it."""

    def __init__(self, server: Served, path: str, *, timeout: float = 10) -> None:
        parts = urlsplit(server.url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.conn.request("GET", path, headers=AUTH)
        self.response = self.conn.getresponse()

    def line(self) -> str:
        return self.response.readline().decode()

    def close(self) -> None:
        self.response.close()
        self.conn.close()


def test_follow_delivers_lines_while_the_job_runs_and_ends_with_it(
    server: Served, service: Service
) -> None:
    job_id = running_job(service)
    store = service.store
    store.append_log(job_id, [(time.time(), "first line")])
    follower = Follower(server, f"/jobs/{job_id}/log?follow=1")
    try:
        assert follower.response.status == 200
        assert follower.response.getheader("Content-Type").startswith("text/plain")
        assert follower.response.getheader("Transfer-Encoding") == "chunked"
        first = follower.line()
        stamp, _, text = first.rstrip("\n").partition(" ")
        assert text == "first line"
        assert stamp.endswith("Z") and stamp[10] == "T"
        for n in range(3):
            store.append_log(job_id, [(time.time(), f"live line {n}")])
            assert follower.line().endswith(f" live line {n}\n")
            assert store.job(job_id).status == Status.RUNNING  # still running: truly live
        store.append_log(job_id, [(time.time(), "last words")])
        store.finish(job_id, status=Status.SUCCEEDED, error=None)
        assert follower.line().endswith(" last words\n")
        assert follower.line() == ""  # the stream ended with the job
    finally:
        follower.close()


def test_follow_with_a_real_worker_and_a_slow_compose(
    server: Served, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    fake_docker.set(sleep=1.5)
    job, _ = service.run("site", sha=remote.commit_and_push({"index.html": "v2\n"}))
    worker = threading.Thread(target=Worker(service).work, kwargs={"burst": True})
    worker.start()
    follower = Follower(server, f"/jobs/{job.id}/log?follow=1")
    seen: list[str] = []
    try:
        while line := follower.line():
            seen.append(line)
            if line.endswith(" building...\n"):
                # Printed before compose sleeps: the deploy is still going.
                assert service.store.job(job.id).status == Status.RUNNING
    finally:
        follower.close()
        worker.join(timeout=30)
    text = "".join(seen)
    assert "building..." in text
    assert text.rstrip().endswith("==> job succeeded")
    assert service.store.job(job.id).status == Status.SUCCEEDED


def test_a_reader_that_leaves_is_noticed_before_the_job_ends(
    server: Served, service: Service
) -> None:
    job_id = running_job(service)
    follower = Follower(server, f"/jobs/{job_id}/log?follow=1")
    assert follower.response.status == 200
    follower.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        served = [e for e in server.events() if e.get("event") == "job_log_served"]
        if served:
            break
        time.sleep(0.1)
    assert served, "the server kept following for a reader that had gone"
    assert served[0]["job"] == job_id and served[0]["follow"] is True
    assert service.store.job(job_id).status == Status.RUNNING


def test_whole_output_and_auth_through_gunicorn(server: Served, service: Service) -> None:
    job_id = running_job(service)
    service.store.append_log(job_id, [(time.time(), f"line {n}") for n in range(6000)])
    service.store.finish(job_id, status=Status.FAILED, error="boom")
    follower = Follower(server, f"/jobs/{job_id}/log")
    try:
        body = follower.response.read().decode().splitlines()
    finally:
        follower.close()
    assert len(body) == 6000  # past one page of the store
    assert body[0].endswith(" line 0") and body[-1].endswith(" line 5999")
    parts = urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", f"/jobs/{job_id}/log")
        refused = conn.getresponse()
        assert refused.status == 401
        assert refused.getheader("WWW-Authenticate", "").startswith("Basic")
        refused.read()
    finally:
        conn.close()
