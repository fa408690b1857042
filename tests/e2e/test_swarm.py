"""`mode: swarm` on a real single-node swarm: deploy a stack, update it, fail and roll back.

The swarm lives on a private engine of its own (`.ci/docker-engine.sh start swarmtest`),
never on the engine the other tests share: a node in a swarm behaves differently. The
teardown leaves the swarm and stops that engine even when a test fails.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests import needs
from tests.conftest import write_registry
from tests.e2e.conftest import ENGINE_SCRIPT, uid
from tests.helpers import SECRET, Remote, make_remote

ENGINE = "swarmtest"

DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
COPY version.txt /version.txt
"""

# A version whose file says "bad" never writes /ok, so its health check never passes.
COMPOSE = """\
version: "3.8"
services:
  web:
    build: .
    image: {image}:${{DEPLOYHOOK_IMAGE_TAG:-dev}}
    init: true
    command: ["sh", "-c", "grep -q bad /version.txt || touch /ok; exec sleep 3600"]
    healthcheck:
      test: ["CMD", "test", "-f", "/ok"]
      interval: 1s
      timeout: 2s
      retries: 2
"""


def _engine(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ENGINE_SCRIPT), command, ENGINE],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def swarm_host() -> Iterator[str]:
    """DOCKER_HOST of a private engine that is the manager of a one-node swarm."""
    started = _engine("start")
    host = (started.stdout.strip().splitlines() or [""])[-1]
    if started.returncode != 0 or not host:
        needs.missing(
            "docker", f"cannot start the private engine {ENGINE}: {started.stderr[-500:]}"
        )
    docker = ["docker", "-H", host]
    try:
        subprocess.run([*docker, "swarm", "leave", "--force"], capture_output=True, check=False)
        port = _free_port()
        init = subprocess.run(
            [
                *docker,
                "swarm",
                "init",
                "--advertise-addr",
                f"127.0.0.1:{port}",
                "--listen-addr",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert init.returncode == 0, init.stderr
        yield host
    finally:
        subprocess.run(
            [*docker, "swarm", "leave", "--force"], capture_output=True, check=False, timeout=60
        )
        _engine("stop")


@pytest.fixture
def swarm_client(swarm_host: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[DockerClient]:
    monkeypatch.setenv("DOCKER_HOST", swarm_host)
    client = DockerClient(base_url=swarm_host, timeout=60)
    yield client
    client.close()


def _stack_repo(root: Path) -> tuple[Remote, str]:
    image = f"deployhook-swarm-{uid()}/web"
    remote = make_remote(
        root,
        "stack",
        files={
            "Dockerfile": DOCKERFILE,
            "version.txt": "v1\n",
            "docker-compose.yml": COMPOSE.format(image=image),
        },
    )
    shutil.copy("/bin/busybox", remote.dev / "busybox")
    return remote, image


def _running_images(client: DockerClient, service: str) -> list[str]:
    tasks = client.api.tasks(filters={"service": service, "desired-state": "running"})
    return [t["Spec"]["ContainerSpec"]["Image"] for t in tasks if t["Status"]["State"] == "running"]


def test_stack_deploys_updates_and_rolls_back_a_failed_version(
    tmp_path: Path, swarm_client: DockerClient
) -> None:
    remote, image = _stack_repo(tmp_path)
    stack = f"dhs{uid()}"
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "stack": {
                "path": str(remote.checkout),
                "mode": "swarm",
                "project_name": stack,
                "health_timeout": 60,
                "timeout": 240,
            }
        },
    )
    settings = Settings.load(
        {}, registry=registry, data_dir=tmp_path / "data", secret=SECRET, reconcile_interval=0
    )
    service = Service.open(settings)
    repo = service.registry.get("stack")

    def deploy(files: dict[str, str]) -> tuple[str, int]:
        sha = remote.commit_and_push(files)
        job, _ = service.run(repo.name, sha=sha)
        Worker(service).work(burst=True)
        return sha, job.id

    try:
        remote.commit_and_push({}, "add busybox")  # copied into the dev clone above
        first, first_job = deploy({"version.txt": "v1, with busybox\n"})
        job = service.store.job(first_job)
        assert job.status == Status.SUCCEEDED, job.error
        assert [s.name for s in job.steps] == [
            "fetch",
            "checkout",
            "build",
            "stack_deploy",
            "health",
        ]
        assert _running_images(swarm_client, f"{stack}_web") == [f"{image}:{first[:12]}"]

        second, second_job = deploy({"version.txt": "v2\n"})
        assert service.store.job(second_job).status == Status.SUCCEEDED
        assert _running_images(swarm_client, f"{stack}_web") == [f"{image}:{second[:12]}"]

        bad, bad_job = deploy({"version.txt": "bad\n"})
        failed = service.store.job(bad_job)
        assert failed.status == Status.FAILED
        assert failed.steps[-1].name == "health"
        assert "paused" in (failed.error or "") or "not converged" in (failed.error or "")
        rollback: Any = service.store.jobs("stack")[0]
        assert (rollback.trigger, rollback.sha, rollback.status) == (
            Trigger.ROLLBACK,
            second,
            Status.SUCCEEDED,
        )
        assert _running_images(swarm_client, f"{stack}_web") == [f"{image}:{second[:12]}"]
        assert bad != second
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)
        service.close()
