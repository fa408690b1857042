"""A deployed repo's own files try to publish deployhook's secrets (trust finding 1).

Its `.env` puts every secret and token of deployhook's into COMPOSE_PROJECT_NAME, its
compose file into `name:`, image names and labels. Compose expands them from the
environment it runs in; the health step then names the project in its error, which
used to reach the public status page, the store, the commit status and the
notifications. Now the children's environment holds none of them and every way out
masks them: after a real deploy through the worker, a grep of every answer, page,
metric, log line, the store's bytes, the commit statuses and the notification bodies
finds none.
"""

from __future__ import annotations

import dataclasses
import io
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployhook import log
from deployhook.config import Settings
from deployhook.deploy import project
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from deployhook.web import create_app
from tests.cli_logging import restore_logging  # noqa: F401 - the autouse fixture
from tests.conftest import write_registry
from tests.forge_server import FakeGitea, Receiver
from tests.helpers import FakeDocker, Remote, make_remote

ADMIN = "adm-" + secrets.token_hex(12)
DEFAULT_SECRET = "whsec-" + secrets.token_hex(12)
GITEA_TOKEN = "gtea-" + secrets.token_hex(16)
MIRROR_TOKEN = "ghp_" + secrets.token_hex(18)
VARIABLES = ("DEPLOYHOOK_SECRET", "DEPLOYHOOK_ADMIN_TOKEN", "GITEA_TOKEN", "GITHUB_MIRROR_TOKEN")
EVERY = "-".join(
    f"${{{name}}}" for name in (*VARIABLES, "DEPLOY_NOTIFY", "DEPLOYHOOK_DATABASE_URL")
)

HOSTILE_DOTENV = f"COMPOSE_PROJECT_NAME=p-{EVERY}\nLEAK={EVERY}\n"
HOSTILE_COMPOSE = f"""\
name: x-{EVERY}
services:
  web:
    image: "busybox:{EVERY}"
    labels:
      leak: "{EVERY}"
"""


@pytest.fixture
def forge() -> Iterator[tuple[FakeGitea, Receiver]]:
    gitea, receiver = FakeGitea(token=GITEA_TOKEN), Receiver()
    yield gitea, receiver
    gitea.close()
    receiver.close()


@pytest.fixture
def hostile(
    tmp_path: Path,
    fake_docker: FakeDocker,
    forge: tuple[FakeGitea, Receiver],
    store_url: str | None,
    monkeypatch: pytest.MonkeyPatch,
    open_service: Callable[[Settings], Service],
) -> tuple[Service, dict[str, str], Remote]:
    gitea, receiver = forge
    notify_url = f"json://{receiver.url.removeprefix('http://')}/{secrets.token_hex(8)}"
    remote = make_remote(
        tmp_path, files={"docker-compose.yml": HOSTILE_COMPOSE, "index.html": "v1\n"}
    )
    (remote.checkout / ".env").write_text(HOSTILE_DOTENV)  # untracked, as on a server
    mirror = tmp_path / "mirror.git"
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {
                "path": str(remote.checkout),
                "source": "jeff/site",
                "health_timeout": 5,
                "rollback": False,
                "gitea": {"url": gitea.url, "token_env": "GITEA_TOKEN", "commit_status": True},
                "mirror": {"url": str(mirror), "token_env": "GITHUB_MIRROR_TOKEN"},
                "notify_env": "DEPLOY_NOTIFY",
            }
        },
    )
    values = {
        "DEPLOYHOOK_SECRET": DEFAULT_SECRET,
        "DEPLOYHOOK_ADMIN_TOKEN": ADMIN,
        "GITEA_TOKEN": GITEA_TOKEN,
        "GITHUB_MIRROR_TOKEN": MIRROR_TOKEN,
        "DEPLOY_NOTIFY": notify_url,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    if store_url:
        values["DEPLOYHOOK_DATABASE_URL"] = store_url
        monkeypatch.setenv("DEPLOYHOOK_DATABASE_URL", store_url)
    settings = Settings.load(
        registry=registry,
        data_dir=tmp_path / "data",
        reconcile_interval=0,
        compose=(str(fake_docker.path), "compose"),
        public_url="http://deploy.test",
        stop_grace=5,
    )
    assert settings.database_url == store_url
    return open_service(dataclasses.replace(settings)), values, remote


def test_a_repo_interpolating_every_secret_publishes_none(
    hostile: tuple[Service, dict[str, str], Remote],
    forge: tuple[FakeGitea, Receiver],
    tmp_path: Path,
) -> None:
    svc, values, remote = hostile
    gitea, receiver = forge
    logged = io.StringIO()
    log.configure(fmt="json", level="debug", stream=logged)
    sha = remote.commit_and_push({"index.html": "v2\n"})
    job, _ = svc.run("site", sha=sha)
    Worker(svc).work(burst=True)
    ended = svc.job(job.id)
    assert ended.status == Status.FAILED  # no container of the project: the health step
    assert [s.name for s in ended.steps] == ["fetch", "checkout", "compose", "health"]

    client = create_app(svc.settings, service_=svc, configure_logging=False).test_client()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    outputs: dict[str, str] = {}
    for path in (
        "/",
        "/api/overview",
        "/deploy/site",
        "/deploy/site/jobs",
        "/deploy/site/deliveries",
        "/deploy/site/badge.svg",
        f"/jobs/{job.id}",
        f"/ui/jobs/{job.id}",
        "/metrics",
        "/healthz",
    ):
        for who, headers in (("stranger", {}), ("admin", admin)):
            outputs[f"GET {path} as {who}"] = client.get(path, headers=headers).get_data(
                as_text=True
            )
    log_page = client.get(f"/jobs/{job.id}/log", headers=admin).get_data(as_text=True)
    assert "==> health" in log_page
    outputs["the job's log"] = log_page
    outputs["the job's error"] = str(ended.error)
    outputs["the server's log lines"] = logged.getvalue()
    outputs["the commit statuses"] = json.dumps([r.body for r in gitea.requests])
    outputs["the notifications"] = json.dumps(receiver.messages())
    assert any((r.body or {}).get("state") == "failure" for r in gitea.requests)
    assert receiver.messages(), "the failure was notified"
    for where, text in outputs.items():
        for name, value in values.items():
            assert value not in text, f"{name} appears in {where}"
    for path in (p for p in (tmp_path / "data").rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, value in values.items():
            assert value.encode() not in data, f"{name} is stored in {path}"


def test_the_project_resolves_as_compose_ran_it_without_the_secrets(
    hostile: tuple[Service, dict[str, str], Remote],
) -> None:
    svc, values, _remote = hostile
    repo = svc.repo("site")
    resolved = project.resolve(repo, ("docker-compose",))  # v1 rules: read from the files
    assert resolved.name.strip("-") == "p"  # every ${...} was empty, as in compose's child
    for value in values.values():
        assert value not in resolved.name
    leaked: dict[str, Any] = project.process.child_environ()
    for name, value in values.items():
        assert name not in leaked
        assert all(value not in v for v in leaked.values()), name
