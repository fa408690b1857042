"""The Docker engine stops under a running `deployhook serve`, then comes back.

A private engine ("hardening", started with .ci/docker-engine.sh) so that stopping it
never touches the engine the other end-to-end tests use. Without root or dockerd the
test skips, unless DEPLOYHOOK_REQUIRE_DOCKER=1 (CI): then it fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from docker.client import DockerClient
from docker.errors import DockerException
from requests.exceptions import RequestException

from tests.conftest import write_registry
from tests.e2e.conftest import Stack, make_stack
from tests.hardening.support import call, get_json, push, serve_env, settled, wait_for
from tests.server import serve

pytestmark = [pytest.mark.docker, pytest.mark.slow]

ENGINE_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "docker-engine.sh"
ENGINE = "hardening"


def _engine(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENGINE_SCRIPT), command, ENGINE],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@dataclass
class Engine:
    host: str

    def stop(self) -> None:
        done = _engine("stop")
        assert done.returncode == 0, done.stderr[-2000:]

    def start(self) -> None:
        done = _engine("start")
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip().splitlines()[-1] == self.host


@pytest.fixture
def engine() -> Iterator[Engine]:
    required = os.environ.get("DEPLOYHOOK_REQUIRE_DOCKER") == "1"
    reason = None
    if os.geteuid() != 0 or not shutil.which("dockerd") or not ENGINE_SCRIPT.exists():
        reason = "a private engine needs root, dockerd and .ci/docker-engine.sh"
    else:
        started = _engine("start")
        if started.returncode != 0:
            reason = f"the private engine did not start: {started.stderr[-1000:]}"
    if reason:
        if required:
            pytest.fail(f"DEPLOYHOOK_REQUIRE_DOCKER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    try:
        yield Engine(started.stdout.strip().splitlines()[-1])
    finally:
        _engine("stop")  # whatever the test left: containers go with the engine


def test_engine_stopped_fails_compose_clearly_and_the_worker_survives(
    tmp_path: Path, engine: Engine
) -> None:
    client = DockerClient(base_url=engine.host, timeout=120)
    stack: Stack | None = None
    try:
        stack = make_stack(tmp_path, client)
        registry = write_registry(
            tmp_path / "repos.yml",
            {"site": {"path": str(stack.remote.checkout), "timeout": 120, "health_timeout": 60}},
        )
        env = serve_env(
            tmp_path,
            registry,
            None,
            DOCKER_HOST=engine.host,
            DEPLOYHOOK_ADMIN_TOKEN="hardening-admin-token",
        )
        db = tmp_path / "data" / "deployhook.sqlite3"
        with serve(env, cwd=tmp_path) as served:
            [worker] = wait_for(lambda: served.pids_of("worker"), what="the deploy worker")

            good = push(served.url, "site", stack.push_version("v2"))
            assert good.status == 202
            wait_for(lambda: settled(db), timeout=120, what="the first deploy")
            assert get_json(served.url, f"/jobs/{good.json()['job']}")["status"] == "succeeded"

            engine.stop()
            sent = time.monotonic()
            broken = push(served.url, "site", stack.push_version("v3"))
            assert broken.status == 202  # the intake does not need the engine
            wait_for(lambda: settled(db), timeout=90, what="the deploy without an engine")
            took = time.monotonic() - sent
            job = get_json(served.url, f"/jobs/{broken.json()['job']}")
            assert job["status"] == "failed", job
            failed = [s for s in job["steps"] if s["status"] == "failed"]
            assert [s["name"] for s in failed] == ["compose"], job["steps"]
            assert "compose up exited with" in job["error"], job["error"]
            output = call(
                served.url,
                f"/jobs/{job['id']}/log",
                headers={"Authorization": "Bearer hardening-admin-token"},
            ).body.decode()
            assert "Cannot connect to the Docker daemon" in output, output[-2000:]
            # Its rollback met the same stopped engine, failed, and was not rolled back.
            later = [
                j for j in get_json(served.url, "/deploy/site/jobs")["jobs"] if j["id"] > job["id"]
            ]
            assert [(j["trigger"], j["status"]) for j in later] == [("rollback", "failed")]
            assert served.pids_of("worker") == [worker], "the worker did not survive"
            assert get_json(served.url, "/healthz")["status"] == "ok"

            engine.start()
            healed = push(served.url, "site", stack.push_version("v4"))
            assert healed.status == 202
            wait_for(lambda: settled(db), timeout=120, what="the deploy after the restart")
            job_after = get_json(served.url, f"/jobs/{healed.json()['job']}")
            assert job_after["status"] == "succeeded", job_after
            assert stack.served()[1] == "v4"
            assert served.pids_of("worker") == [worker]
        print(f"\nengine stopped: compose failed in {took:.1f} s with {job['error']!r}")
    finally:
        try:
            if stack is not None:
                # A test that failed while the engine was stopped: down is for nothing
                # then, and the engine fixture takes the containers away with the engine.
                with contextlib.suppress(DockerException, AssertionError, RequestException):
                    stack.down()
        finally:
            client.close()
