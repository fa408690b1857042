"""GitHub commit statuses against a local server that answers as GitHub's REST API does:
201, 401, 422, and a GitHub that is down never changes a deploy."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.forges import github as forge
from deployhook.forges import http
from deployhook.models import Job, Status
from deployhook.service import Service
from tests.conftest import write_registry
from tests.forge_server import FakeGitea, FakeGitHub, closed_port_url, servers
from tests.helpers import FakeDocker, Remote

PUBLIC = "https://deploy.example.com"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "ghp_" + secrets.token_hex(18)
    monkeypatch.setenv("GITHUB_TOKEN", value)
    return value


@pytest.fixture
def github(token: str) -> Iterator[Callable[..., FakeGitHub]]:
    yield from servers(FakeGitHub, token)


def deploy(
    settings: Settings,
    open_service: Any,
    remote: Remote,
    *,
    github: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> tuple[Service, Job]:
    """Deploy the checkout's head once, with this github block."""
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "source": "jeff/site",
                "health_timeout": 0,
                "rollback": False,
                "github": github,
                **(extra or {}),
            }
        },
    )
    fields = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    service: Service = open_service(Settings.load({}, **{**fields, "public_url": PUBLIC}))
    job, _ = service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    return service, service.store.job(job.id)


def output(service: Service, job: Job) -> str:
    return "\n".join(r.line for r in service.store.log_lines(job.id))


def outcome(job: Job) -> tuple[Status, list[tuple[str, str]]]:
    return job.status, [(s.name, str(s.status)) for s in job.steps]


GOOD = (
    Status.SUCCEEDED,
    [("fetch", "succeeded"), ("checkout", "succeeded"), ("compose", "succeeded")],
)


def test_201_pending_then_success_with_a_link_to_the_job(
    settings: Settings, remote: Remote, *, open_service: Any, github: Any, token: str
) -> None:
    server = github()
    service, job = deploy(
        settings,
        open_service,
        remote,
        github={"token_env": "GITHUB_TOKEN", "api_url": server.api_url},
    )
    assert outcome(job) == GOOD
    calls = server.statuses()
    assert [c.path for c in calls] == [f"/repos/jeff/site/statuses/{job.sha}"] * 2
    assert [c.body["state"] for c in calls] == ["pending", "success"]
    for call in calls:
        assert call.headers["Authorization"] == f"Bearer {token}"
        assert call.headers["Accept"] == "application/vnd.github+json"
        assert call.headers["X-GitHub-Api-Version"] == "2022-11-28"
        assert call.body["context"] == "deployhook/site"
        assert call.body["target_url"] == f"{PUBLIC}/ui/jobs/{job.id}"
    assert calls[0].body["description"] == "deploying (manual)"
    assert calls[1].body["description"].startswith("deployed in ")
    log = output(service, job)
    assert f"github: commit status success set on {job.sha[:12]} (deployhook/site)" in log
    assert token not in log


def test_failed_deploy_reports_failure_and_stays_failed(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    github: Any,
    fake_docker: FakeDocker,
) -> None:
    fake_docker.set(fail=True)
    server = github()
    _service, job = deploy(
        settings, open_service, remote, github={"token_env": "GITHUB_TOKEN", "api_url": server.url}
    )
    assert job.status == Status.FAILED
    assert [(c.body["state"], c.body["description"]) for c in server.statuses()] == [
        ("pending", "deploying (manual)"),
        ("failure", "compose up exited with 1"),
    ]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("401", "answered 401 Unauthorized to POST /repos/jeff/site/statuses/"),
        ("422", "answered 422 Unprocessable Entity to POST /repos/jeff/site/statuses/"),
        ("404", "answered 404 Not Found"),
        ("down", "connection refused"),
    ],
)
def test_github_trouble_never_changes_the_deploy(
    settings: Settings,
    remote: Remote,
    case: str,
    expect: str,
    *,
    open_service: Any,
    github: Any,
    token: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(forge, "BUDGET_S", 1.5)
    monkeypatch.setattr(forge, "TIMEOUT_S", 0.3)
    if case == "down":
        url = closed_port_url()
        server = None
    else:
        server = github(
            **{
                "401": {"token": "ghp_another_token_entirely_0000"},
                "422": {"shas": {"0" * 40}},  # GitHub knows no such commit
                "404": {"repos": ("jeff/other",)},
            }[case]
        )
        url = server.url
    service, job = deploy(
        settings, open_service, remote, github={"token_env": "GITHUB_TOKEN", "api_url": url}
    )
    assert outcome(job) == GOOD
    log = output(service, job)
    assert f"github: commit status pending not set on {job.sha[:12]}" in log
    assert f"github: commit status success not set on {job.sha[:12]}" in log
    assert expect in log
    assert token not in log
    if server is not None:  # a 4xx is final: one call per state, no retry
        assert [c.body["state"] for c in server.statuses()] == ["pending", "success"]
    if case == "422":
        assert "No commit found for SHA" in log


def test_5xx_is_retried_within_the_same_budget(github: Any, token: str) -> None:
    server = github(errors=(502, 503))
    client = forge.GitHub(server.url, token)
    client.set_status("jeff", "site", "a" * 40, state="success", context="c", description="d")
    assert len(server.requests) == 3
    assert http.ATTEMPTS == 3


def test_enterprise_api_url_and_github_repo_override(
    settings: Settings, remote: Remote, *, open_service: Any, github: Any
) -> None:
    server = github(enterprise=True, repos=("acme/website",))
    _service, job = deploy(
        settings,
        open_service,
        remote,
        github={
            "token_env": "GITHUB_TOKEN",
            "api_url": server.api_url + "/",
            "repo": "acme/website",
        },
    )
    assert job.status == Status.SUCCEEDED
    assert [c.path for c in server.statuses()] == [
        f"/api/v3/repos/acme/website/statuses/{job.sha}"
    ] * 2


def test_token_file_and_commit_status_off(
    settings: Settings, remote: Remote, *, open_service: Any, github: Any, token: str
) -> None:
    server = github()
    (settings.registry.parent / "gh-token").write_text(token + "\n")
    github_block = {"token_file": "gh-token", "api_url": server.url}
    _service, job = deploy(settings, open_service, remote, github=github_block)
    assert [c.body["state"] for c in server.statuses()] == ["pending", "success"]
    _service, job = deploy(
        settings, open_service, remote, github={**github_block, "commit_status": False}
    )
    assert job.status == Status.SUCCEEDED
    assert len(server.statuses()) == 2  # nothing more


def test_unset_token_says_so_and_deploys(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    github: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = github()
    monkeypatch.delenv("GITHUB_TOKEN")
    service, job = deploy(
        settings, open_service, remote, github={"token_env": "GITHUB_TOKEN", "api_url": server.url}
    )
    assert outcome(job) == GOOD
    assert server.requests == []
    assert (
        "github: no commit status: repo 'site': github token: environment variable "
        "GITHUB_TOKEN (github.token_env) is unset or empty"
    ) in output(service, job)


def test_gitea_and_github_both_get_the_same_context(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    github: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gitea_token = "gitea_" + secrets.token_hex(20)
    monkeypatch.setenv("GITEA_TOKEN", gitea_token)
    hub = github()
    tea = FakeGitea(token=gitea_token)
    try:
        _service, job = deploy(
            settings,
            open_service,
            remote,
            github={"token_env": "GITHUB_TOKEN", "api_url": hub.url},
            extra={"gitea": {"url": tea.url, "token_env": "GITEA_TOKEN"}},
        )
        tea_calls = tea.calls("POST", f"/statuses/{job.sha}")
    finally:
        tea.close()
    assert job.status == Status.SUCCEEDED
    for calls in (hub.statuses(), tea_calls):
        assert [(c.body["state"], c.body["context"]) for c in calls] == [
            ("pending", "deployhook/site"),
            ("success", "deployhook/site"),
        ]
