"""Gitea talk-back against a local server that answers as Gitea does: commit statuses,
mirror-sync, and a forge that is down, slow or refusing never changes a deploy."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.forges import gitea as forge
from deployhook.models import Job, Status, StepStatus
from deployhook.registry import Gitea as GiteaConfig
from deployhook.registry import Repo
from deployhook.service import Service
from tests.conftest import write_registry
from tests.forge_server import FakeGitea, closed_port_url, servers, wait_for
from tests.helpers import FakeDocker, Remote

PUBLIC = "https://deploy.example.com"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "gitea_" + secrets.token_hex(20)
    monkeypatch.setenv("GITEA_TOKEN", value)
    return value


@pytest.fixture
def gitea(token: str) -> Iterator[Callable[..., FakeGitea]]:
    yield from servers(FakeGitea, token)


@pytest.fixture
def fast_forge(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timeouts short enough for a test to wait them out."""
    monkeypatch.setattr(forge, "TIMEOUT_S", 0.3)
    monkeypatch.setattr(forge, "BUDGET_S", 1.5)


def deploy(
    settings: Settings,
    open_service: Any,
    remote: Remote,
    *,
    gitea_url: str,
    public_url: str | None = PUBLIC,
    **gitea_keys: Any,
) -> tuple[Service, Job]:
    """Deploy the checkout's head once, with a gitea block pointing at gitea_url."""
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "source": "jeff/site",
                "health_timeout": 0,
                "rollback": False,
                "gitea": {"url": gitea_url, "token_env": "GITEA_TOKEN", **gitea_keys},
            }
        },
    )
    if public_url:
        settings = Settings.load({}, **{**_fields(settings), "public_url": public_url})
    service: Service = open_service(settings)
    job, _ = service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    return service, service.store.job(job.id)


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


def output(service: Service, job: Job) -> str:
    return "\n".join(r.line for r in service.store.log_lines(job.id))


def test_commit_status_pending_then_success(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any, token: str
) -> None:
    server = gitea()
    service, job = deploy(settings, open_service, remote, gitea_url=server.url)
    assert job.status == Status.SUCCEEDED
    calls = server.calls("POST", f"/statuses/{job.sha}")
    assert [c.path for c in calls] == [f"/api/v1/repos/jeff/site/statuses/{job.sha}"] * 2
    assert [c.body["state"] for c in calls] == ["pending", "success"]
    for call in calls:
        assert call.headers["Authorization"] == f"token {token}"
        assert call.body["context"] == "deployhook/site"
        assert call.body["target_url"] == f"{PUBLIC}/ui/jobs/{job.id}"
        assert "\n" not in call.body["description"] and len(call.body["description"]) <= 140
    assert call.body["description"].startswith("deployed in ")
    assert "gitea: commit status success set on" in output(service, job)


def test_failed_deploy_reports_failure_with_its_error(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any, fake_docker: FakeDocker
) -> None:
    fake_docker.set(fail=True)
    server = gitea()
    _service, job = deploy(settings, open_service, remote, gitea_url=server.url)
    assert job.status == Status.FAILED
    states = [(c.body["state"], c.body["description"]) for c in server.calls("POST")]
    assert states == [("pending", "deploying (manual)"), ("failure", job.error)]


def test_no_public_url_omits_target_url(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any
) -> None:
    server = gitea()
    deploy(settings, open_service, remote, gitea_url=server.url, public_url=None)
    calls = server.calls("POST")
    assert len(calls) == 2
    assert all("target_url" not in c.body for c in calls)


def test_commit_status_off_sends_nothing(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any
) -> None:
    server = gitea()
    _service, job = deploy(
        settings, open_service, remote, gitea_url=server.url, commit_status=False
    )
    assert job.status == Status.SUCCEEDED
    assert server.requests == []


def test_unset_token_skips_status_and_says_so(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    gitea: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = gitea()
    monkeypatch.delenv("GITEA_TOKEN")
    service, job = deploy(settings, open_service, remote, gitea_url=server.url)
    assert job.status == Status.SUCCEEDED
    assert server.requests == []
    assert "GITEA_TOKEN (gitea.token_env) is unset" in output(service, job)


def test_mirror_sync_after_a_good_deploy(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any, token: str
) -> None:
    server = gitea()
    _service, job = deploy(
        settings, open_service, remote, gitea_url=server.url, mirror_sync=True, commit_status=False
    )
    [call] = server.requests
    assert (call.method, call.path) == ("POST", "/api/v1/repos/jeff/site/mirror-sync")
    assert call.headers["Authorization"] == f"token {token}"
    assert {s.name: s.status for s in job.steps}["mirror_sync"] == StepStatus.SUCCEEDED


def test_no_mirror_sync_after_a_failed_deploy(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any, fake_docker: FakeDocker
) -> None:
    fake_docker.set(fail=True)
    server = gitea()
    _service, job = deploy(
        settings, open_service, remote, gitea_url=server.url, mirror_sync=True, commit_status=False
    )
    assert job.status == Status.FAILED
    assert server.requests == []
    assert "mirror_sync" not in [s.name for s in job.steps]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("bad_token", "401 Unauthorized"),
        ("missing_repo", "404 Not Found"),
        ("down", "connection refused"),
        ("slow", "timed out"),
    ],
)
def test_forge_trouble_fails_only_the_step(
    settings: Settings,
    remote: Remote,
    case: str,
    expect: str,
    *,
    open_service: Any,
    gitea: Any,
    fast_forge: None,
) -> None:
    if case == "down":
        url = closed_port_url()
    else:
        server = gitea(
            **{
                "bad_token": {"token": "another-token"},
                "missing_repo": {"repos": ("jeff/other",)},
                "slow": {"delay": 2.0},
            }[case]
        )
        url = server.url
    service, job = deploy(settings, open_service, remote, gitea_url=url, mirror_sync=True)
    assert job.status == Status.SUCCEEDED, job.error
    step = {s.name: s for s in job.steps}["mirror_sync"]
    assert step.status == StepStatus.FAILED
    assert step.error and expect in step.error
    log = output(service, job)
    assert "gitea: commit status pending not set" in log
    assert "gitea: commit status success not set" in log


# -- the client on its own ----------------------------------------------------------------


def client(server: FakeGitea, token: str, **kwargs: Any) -> forge.Gitea:
    return forge.Gitea(server.url, token, **kwargs)


def test_client_retries_5xx_then_succeeds(gitea: Any, token: str) -> None:
    server = gitea(errors=(503, 502))
    client(server, token).mirror_sync("jeff", "site")
    assert len(server.requests) == 3


def test_client_gives_up_after_three_5xx(gitea: Any, token: str) -> None:
    server = gitea(errors=(500, 500, 500, 500))
    with pytest.raises(forge.ForgeError, match="500") as caught:
        client(server, token).mirror_sync("jeff", "site")
    assert caught.value.status == 500
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    ("kwargs", "status"), [({"token": "wrong"}, 401), ({"repos": ("jeff/other",)}, 404)]
)
def test_client_does_not_retry_4xx(
    gitea: Any, token: str, kwargs: dict[str, Any], status: int
) -> None:
    server = gitea(**{"token": token, **kwargs})
    with pytest.raises(forge.ForgeError) as caught:
        client(server, token).mirror_sync("jeff", "site")
    assert caught.value.status == status
    assert len(server.requests) == 1
    assert token not in str(caught.value)


def test_client_slow_server_is_retried_within_the_budget(gitea: Any, token: str) -> None:
    server = gitea(delay=1.0)
    with pytest.raises(forge.ForgeError, match="timed out"):
        client(server, token, timeout=0.2, budget=1.0).mirror_sync("jeff", "site")
    assert 1 < len(server.requests) <= forge.ATTEMPTS


def test_creating_is_not_retried_after_a_timeout(gitea: Any, token: str) -> None:
    server = gitea(delay=1.0)
    with pytest.raises(forge.ForgeError, match="not retried"):
        client(server, token, timeout=0.2, budget=2.0).create_hook(
            "jeff", "site", {"type": "gitea", "config": {"url": "x", "content_type": "json"}}
        )
    assert len(server.requests) == 1


def test_down_server_names_the_cause() -> None:
    with pytest.raises(forge.ForgeError, match="connection refused"):
        forge.Gitea(closed_port_url(), "t0k3n-value", budget=1.0).mirror_sync("jeff", "site")


def test_owner_and_name_are_quoted_in_paths(gitea: Any, token: str) -> None:
    server = gitea(repos=("je ff/si?te",))
    client(server, token).mirror_sync("je ff", "si?te")
    assert server.requests[0].path == "/api/v1/repos/je%20ff/si%3Fte/mirror-sync"


@pytest.mark.parametrize(
    ("repo", "problem"),
    [
        (Repo(name="site", path=Path("/x")), "no gitea block"),
        (
            Repo(
                name="site",
                path=Path("/x"),
                gitea=GiteaConfig(url="http://g", token_env="GITEA_TOKEN"),
            ),
            "source",
        ),
        (
            Repo(
                name="site",
                path=Path("/x"),
                source=("jeff/site",),
                gitea=GiteaConfig(url="http://g"),
            ),
            "token_env or token_file is not set",
        ),
        (
            Repo(
                name="site",
                path=Path("/x"),
                source=("jeff",),
                gitea=GiteaConfig(url="http://g", token_env="GITEA_TOKEN"),
            ),
            "not owner/name",
        ),
    ],
)
def test_connect_names_what_is_missing(repo: Repo, problem: str) -> None:
    with pytest.raises(forge.ForgeNotConfigured, match=problem):
        forge.connect(repo, environ={"GITEA_TOKEN": "t0k3n-value"})


def test_cancelled_job_reports_error(
    settings: Settings, remote: Remote, *, open_service: Any, gitea: Any, fake_docker: FakeDocker
) -> None:
    server = gitea()
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "source": "jeff/site",
                "health_timeout": 0,
                "gitea": {"url": server.url, "token_env": "GITEA_TOKEN"},
            }
        },
    )
    service: Service = open_service(settings)
    fake_docker.set(sleep=30)
    job, _ = service.run("site", sha=remote.deployed())
    worker = Worker(service)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: "compose" in [s.name for s in service.store.job(job.id).steps])
        service.store.cancel(job.id)
        assert wait_for(lambda: service.store.job(job.id).status.ended, timeout=20)
        assert wait_for(lambda: len(server.calls("POST")) == 2)
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert service.store.job(job.id).status == Status.CANCELLED
    assert [(c.body["state"], c.body["description"]) for c in server.calls("POST")] == [
        ("pending", "deploying (manual)"),
        ("error", "cancelled by an admin"),
    ]


def test_token_from_a_file_relative_to_the_registry(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    gitea: Any,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITEA_TOKEN")
    (settings.registry.parent / "gitea_token").write_text(token + "\n")
    server = gitea()
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "source": "jeff/site",
                "health_timeout": 0,
                "gitea": {"url": server.url, "token_file": "gitea_token"},
            }
        },
    )
    service = open_service(settings)
    job, _ = service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    assert service.store.job(job.id).status == Status.SUCCEEDED
    calls = server.calls("POST", f"/statuses/{job.sha}")
    assert [c.body["state"] for c in calls] == ["pending", "success"]
    assert {c.headers["Authorization"] for c in calls} == {f"token {token}"}
    assert token not in output(service, job)
