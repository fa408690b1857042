"""Deploys end to end on the real engine: a signed push, the worker, git, compose, health.

Parametrized over Compose v2 (auto-detected: DEPLOYHOOK_COMPOSE unset) and Compose v1
(DEPLOYHOOK_COMPOSE=docker-compose).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient
from docker.errors import ImageNotFound

from deployhook.config import Settings
from deployhook.deploy import compose
from deployhook.deploy.worker import Worker
from deployhook.models import Job, Status, StepStatus, Trigger
from deployhook.service import Service
from deployhook.web import create_app
from tests import needs
from tests.conftest import write_registry
from tests.e2e.conftest import Stack, dangling_image, uid
from tests.helpers import SECRET, gitea_headers, gitea_push_body

COMPOSE_ENVIRON = {
    "v2-auto": {},
    "v1": {"DEPLOYHOOK_COMPOSE": "docker-compose"},
}


@dataclass
class Deployer:
    """deployhook as a user runs it: a registry, the web app for pushes, a burst worker."""

    service: Service
    client: Any

    def push(self, sha: str) -> int:
        body = gitea_push_body(sha=sha, full_name="jeff/site")
        resp = self.client.post("/deploy/site", data=body, headers=gitea_headers(body))
        assert resp.status_code == 202, resp.get_json()
        return int(resp.get_json()["job"])

    def deploy(self, sha: str) -> Job:
        """Push sha and run the worker until nothing is queued; return the push's job."""
        job_id = self.push(sha)
        Worker(self.service).work(burst=True)
        return self.service.store.job(job_id)

    def log(self, job: Job) -> str:
        return "\n".join(r.line for r in self.service.store.log_lines(job.id))


@pytest.fixture(params=sorted(COMPOSE_ENVIRON))
def deployer(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    stack: Stack,
    open_service: Callable[[Settings], Service],
) -> Iterator[Deployer]:
    if request.param == "v1":
        needs.compose_v1()
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {
                "path": str(stack.remote.checkout),
                "source": "jeff/site",
                "timeout": 300,
                "health_timeout": 60,
                "prune_images": True,
            }
        },
    )
    settings = Settings.load(
        COMPOSE_ENVIRON[request.param],
        registry=registry,
        data_dir=tmp_path / "data",
        secret=SECRET,
        admin_token="admin-token-for-tests",
        reconcile_interval=0,
        stop_grace=5,
    )
    stack.compose = compose.command(settings.compose)  # so teardown uses the same one
    assert compose.is_v1(stack.compose) == (request.param == "v1")
    service = open_service(settings)
    yield Deployer(
        service, create_app(settings, service_=service, configure_logging=False).test_client()
    )


def _image_exists(client: DockerClient, image_id: str) -> bool:
    try:
        client.images.get(image_id)
    except ImageNotFound:
        return False
    return True


def test_push_deploys_and_a_change_replaces_the_container(
    deployer: Deployer, stack: Stack, docker_client: DockerClient
) -> None:
    first = deployer.deploy(stack.remote.deployed())
    assert first.status == Status.SUCCEEDED, (first.error, deployer.log(first))
    assert [s.name for s in first.steps] == ["fetch", "checkout", "compose", "health", "prune"]
    old_id, served = stack.served()
    assert served == "v1"
    assert f"{stack.project}" in deployer.log(first)
    old_image = docker_client.containers.get(old_id).attrs["Image"]

    v1 = compose.is_v1(stack.compose)
    other = None if v1 else dangling_image(docker_client, project=f"other-{uid()}")
    try:
        second = deployer.deploy(stack.push_version("v2"))
        assert second.status == Status.SUCCEEDED, (second.error, deployer.log(second))
        new_id, served = stack.served()
        assert served == "v2"
        assert new_id != old_id
        assert stack.remote.deployed() == second.sha
        log = deployer.log(second)
        assert "healthy" in log
        if v1:
            assert "prune skipped: docker-compose v1 does not label" in log
            assert _image_exists(docker_client, old_image)
        else:
            assert other is not None
            assert f"removed 1 dangling image(s) of project {stack.project}" in log
            assert not _image_exists(docker_client, old_image)
            assert _image_exists(docker_client, other)  # another project's: kept
    finally:
        if other is not None:
            docker_client.images.remove(other, force=True)


def test_unhealthy_version_fails_at_health_and_rolls_back(deployer: Deployer, stack: Stack) -> None:
    good = deployer.deploy(stack.remote.deployed())
    assert good.status == Status.SUCCEEDED, (good.error, deployer.log(good))
    good_id, served = stack.served()
    assert served == "v1"

    bad = deployer.deploy(stack.push_version("v2-broken", healthy=False))
    assert bad.status == Status.FAILED
    assert [(s.name, s.status) for s in bad.steps][-1] == ("health", StepStatus.FAILED)
    assert bad.error is not None
    assert bad.error.startswith(f"{stack.project}") and "web" in bad.error
    assert "is unhealthy: " in bad.error and "404" in bad.error

    rollback = deployer.service.store.jobs("site")[0]
    assert (rollback.trigger, rollback.status, rollback.sha) == (
        Trigger.ROLLBACK,
        Status.SUCCEEDED,
        good.sha,
    )
    assert stack.remote.deployed() == good.sha
    back_id, served = stack.served()
    assert served == "v1"
    assert back_id != good_id  # the broken container was replaced by the old version


def test_a_repo_interpolating_deployhooks_secrets_deploys_as_compose_ran_it(
    deployer: Deployer, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trust finding 1 on the real engine: `.env` and labels interpolate every secret.

    Compose runs without them, so the project name it sets is the `.env`'s with those
    parts empty; deployhook resolves the same name (the health step finds the
    containers), the label holds nothing, and no answer or output shows a secret.
    """
    settings = deployer.service.settings
    secrets = {"the admin token": str(settings.admin_token), "the webhook secret": SECRET}
    # In deployhook's own environment, where a careless child would find them.
    monkeypatch.setenv("DEPLOYHOOK_ADMIN_TOKEN", str(settings.admin_token))
    monkeypatch.setenv("DEPLOYHOOK_SECRET", SECRET)
    every = "${DEPLOYHOOK_ADMIN_TOKEN}${DEPLOYHOOK_SECRET}"
    (stack.remote.checkout / ".env").write_text(f"COMPOSE_PROJECT_NAME={stack.project}{every}\n")
    compose_file = stack.remote.dev / "docker-compose.yml"
    compose_file.write_text(
        compose_file.read_text().replace(
            "    init: true\n", f'    init: true\n    labels:\n      leak: "x{every}"\n'
        )
    )
    job = deployer.deploy(stack.push_version("hostile"))
    assert job.status == Status.SUCCEEDED, (job.error, deployer.log(job))
    [container] = stack.containers()
    assert container.labels["leak"] == "x"
    assert container.labels["com.docker.compose.project"] == stack.project
    shown = deployer.log(job) + str(deployer.client.get(f"/jobs/{job.id}").get_json())
    shown += deployer.client.get("/api/overview").get_data(as_text=True)
    for name, value in secrets.items():
        assert value not in shown, name
        assert value not in str(container.attrs), name
