"""wait_healthy on real containers: each state a stack can be in after `compose up -d`.

The stacks use a busybox image built once per session, so nothing is built here.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from docker.client import DockerClient

from deployhook.deploy import process
from deployhook.deploy.steps.health import wait_healthy
from deployhook.errors import JobCancelled, JobTimedOut, StepFailed
from deployhook.registry import Repo
from tests.e2e.conftest import uid

V2 = ("docker", "compose")

SERVICES = {
    "healthy": """
  healthy:
    image: {image}
    init: true
    command: ["sleep", "600"]
    healthcheck: {{test: ["CMD", "true"], interval: 1s, retries: 2}}""",
    "once": """
  once:
    image: {image}
    command: ["true"]""",
    "plain": """
  plain:
    image: {image}
    init: true
    command: ["sleep", "600"]""",
    "crash": """
  crash:
    image: {image}
    command: ["sh", "-c", "echo boom; exit 3"]""",
    "slow": """
  slow:
    image: {image}
    init: true
    command: ["sleep", "600"]
    healthcheck: {{test: ["CMD", "true"], interval: 60s}}""",
}


@dataclass
class Project:
    """A compose project in a directory of its own, brought up with Compose v2."""

    repo: Repo
    image: str
    client: DockerClient

    def up(self, *services: str) -> None:
        text = "services:" + "".join(SERVICES[s] for s in services) + "\n"
        (self.repo.path / "compose.yaml").write_text(text.format(image=self.image))
        subprocess.run(
            [*V2, "up", "-d"], cwd=self.repo.path, check=True, capture_output=True, timeout=120
        )

    def wait(
        self,
        *,
        health_timeout: int = 60,
        job_timeout: float = 300,
        cancel: threading.Event | None = None,
        repo: Repo | None = None,
    ) -> list[str]:
        lines: list[str] = []
        wait_healthy(
            replace(repo or self.repo, health_timeout=health_timeout),
            compose_base=V2,
            deadline=process.Deadline(job_timeout),
            cancel=cancel or threading.Event(),
            output=lines.append,
        )
        return lines

    def down(self) -> None:
        subprocess.run(
            [*V2, "down", "-t", "0", "--remove-orphans"],
            cwd=self.repo.path,
            capture_output=True,
            timeout=120,
            check=False,
        )
        for container in self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.repo.path.name}"}
        ):
            container.remove(force=True)


@pytest.fixture
def project(tmp_path: Path, busybox_image: str, docker_client: DockerClient) -> Iterator[Project]:
    path = tmp_path / f"dhhealth-{uid()}"
    path.mkdir()
    made = Project(Repo(name="site", path=path), busybox_image, docker_client)
    try:
        yield made
    finally:
        made.down()


def test_running_healthy_and_finished_one_shot_are_ready(project: Project) -> None:
    project.up("healthy", "once", "plain")
    lines = project.wait()
    name = project.repo.path.name
    assert lines[-1].startswith(f"3 container(s) of project {name} ready: ")
    assert f"{name}-healthy-1 healthy" in lines[-1]
    assert f"{name}-once-1 exited 0" in lines[-1]
    assert f"{name}-plain-1 running" in lines[-1]


def test_crash_fails_at_once_and_orphans_are_not_this_deploy(project: Project) -> None:
    project.up("plain", "crash")
    started = time.monotonic()
    with pytest.raises(StepFailed) as failed:
        project.wait(health_timeout=60)
    assert str(failed.value) == f"{project.repo.path.name}-crash-1 exited with code 3"
    assert time.monotonic() - started < 30  # not the whole health_timeout
    # With `crash` gone from the file, its exited container is an orphan `up` leaves.
    project.up("plain")
    assert "ready" in project.wait()[-1]
    # The same with a `services` subset that leaves crash out.
    project.up("plain", "crash")
    assert "ready" in project.wait(repo=replace(project.repo, services=("plain",)))[-1]


def test_still_starting_fails_after_health_timeout_naming_it(project: Project) -> None:
    project.up("slow", "plain")
    with pytest.raises(StepFailed) as failed:
        project.wait(health_timeout=2)
    assert not isinstance(failed.value, JobTimedOut)
    assert (
        str(failed.value) == f"still waiting after 2 s: {project.repo.path.name}-slow-1 is starting"
    )
    with pytest.raises(JobTimedOut, match="timed out after 1 s"):
        project.wait(health_timeout=60, job_timeout=1)  # the job's deadline comes first
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    try:
        with pytest.raises(JobCancelled):
            project.wait(health_timeout=60, cancel=cancel)
    finally:
        timer.cancel()


def test_no_containers_fails_clearly(project: Project) -> None:
    (project.repo.path / "compose.yaml").write_text("services:\n  web:\n    image: x\n")
    with pytest.raises(
        StepFailed,
        match=r"no containers of compose project 'dhhealth-\w+' "
        r"\(services web\) found",
    ):
        project.wait()
