"""A monorepo deployed as two entries on the real engine (issue 14).

One git repo holds two stacks, `api/` and `web/`; each entry has its own checkout, its own
compose file and `paths`. A push under `api/` deploys the api stack (its `post_deploy`
hook runs `docker compose exec -T` in the freshly started container, reaching the
entry's own project through COMPOSE_PROJECT_NAME and COMPOSE_FILE) and skips the web
stack, whose container is left as it was.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from docker.client import DockerClient

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.e2e.conftest import uid
from tests.helpers import SECRET, git, gitea_headers, gitea_push_body, make_remote

STACK = """\
services:
  {service}:
    image: {image}
    init: true
    command: ["sleep", "600"]
    environment:
      VERSION: "${{DEPLOYHOOK_SHA}}"
"""


@pytest.fixture
def monorepo(tmp_path: Path, busybox_image: str) -> Iterator[dict[str, Any]]:
    remote = make_remote(
        tmp_path,
        "mono",
        files={
            "api/docker-compose.yml": STACK.format(service="app", image=busybox_image),
            "web/docker-compose.yml": STACK.format(service="site", image=busybox_image),
            "README.md": "a monorepo\n",
        },
    )
    second = tmp_path / "deploy" / "mono-web"
    git(tmp_path, "clone", "-q", str(remote.origin), str(second))
    suffix = uid()
    projects = {"api": f"monoapi{suffix}", "web": f"monoweb{suffix}"}
    checkouts = {"api": remote.checkout, "web": second}
    yield {"remote": remote, "projects": projects, "checkouts": checkouts}
    for name, project in projects.items():
        subprocess.run(
            [
                "docker",
                "compose",
                "-p",
                project,
                "-f",
                f"{name}/docker-compose.yml",
                "down",
                "-t",
                "1",
            ],
            cwd=checkouts[name],
            capture_output=True,
            timeout=120,
            check=False,
        )


def test_a_push_under_api_deploys_the_api_stack_and_skips_the_web_stack(
    tmp_path: Path,
    monorepo: dict[str, Any],
    docker_client: DockerClient,
    open_service: Callable[[Settings], Service],
) -> None:
    remote, projects, checkouts = monorepo["remote"], monorepo["projects"], monorepo["checkouts"]
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "api": {
                "path": str(checkouts["api"]),
                "source": "jeff/mono",
                "compose_files": ["api/docker-compose.yml"],
                "project_name": projects["api"],
                "paths": ["api/**"],
                "health_timeout": 60,
                "hooks": {
                    "post_deploy": ["docker compose exec -T app /bin/sh -c 'echo version=$VERSION'"]
                },
            },
            "web": {
                "path": str(checkouts["web"]),
                "source": "jeff/mono",
                "compose_files": ["web/docker-compose.yml"],
                "project_name": projects["web"],
                "paths": ["web/**"],
                "health_timeout": 60,
            },
        },
    )
    settings = Settings.load(
        {}, registry=registry, data_dir=tmp_path / "data", secret=SECRET, reconcile_interval=0
    )
    svc = open_service(settings)
    client = create_app(settings, service_=svc, configure_logging=False).test_client()
    for name in ("api", "web"):
        svc.run(name)
    Worker(svc).work(burst=True)
    first = {name: svc.jobs(name, limit=1)[0] for name in ("api", "web")}
    for job in first.values():
        shown = "\n".join(line.line for line in svc.new_output(job.id))
        assert job.status == Status.SUCCEEDED, (job.error, shown)

    def container(name: str) -> Any:
        [found] = docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={projects[name]}"}
        )
        return found

    web_before = container("web").id
    sha = remote.commit_and_push({"api/VERSION": "2\n"})
    jobs = {}
    for name in ("api", "web"):  # each entry's own webhook gets the push
        body = gitea_push_body(sha=sha, full_name="jeff/mono")
        resp = client.post(f"/deploy/{name}", data=body, headers=gitea_headers(body))
        assert resp.status_code == 202, resp.get_json()
        jobs[name] = resp.get_json()["job"]
    Worker(svc).work(burst=True)
    api, web = svc.job(jobs["api"]), svc.job(jobs["web"])
    log = "\n".join(line.line for line in svc.new_output(api.id))
    assert api.status == Status.SUCCEEDED, (api.error, log)
    assert [s.name for s in api.steps][-1] == "post_deploy"
    assert f"version={sha}" in log.splitlines()  # echoed inside the new container
    code, out = container("api").exec_run(["/bin/sh", "-c", "echo $VERSION"])
    assert (code, out.decode().strip()) == (0, sha)
    assert web.status == Status.SKIPPED
    assert web.note is not None and web.note.startswith("no change under paths")
    assert container("web").id == web_before
