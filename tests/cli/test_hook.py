"""`deployhook hook create NAME` against a recording fake Gitea."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from deployhook.cli import main
from tests.conftest import write_registry
from tests.forge_server import FakeGitea, closed_port_url

PUBLIC = "https://deploy.example.com"


@pytest.fixture
def token() -> str:
    return "gitea_" + secrets.token_hex(20)


@pytest.fixture
def secret() -> str:
    return "whsec-" + secrets.token_hex(16)


@pytest.fixture
def server(token: str) -> Iterator[FakeGitea]:
    fake = FakeGitea(token=token)
    yield fake
    fake.close()


def registry(tmp_path: Path, gitea_url: str, **overrides: Any) -> Path:
    entry: dict[str, Any] = {
        "path": str(tmp_path / "site"),
        "branch": "live",
        "source": "jeff/site",
        "secret_env": "SITE_SECRET",
        "gitea": {"url": gitea_url, "token_env": "GITEA_TOKEN"},
    }
    entry.update(overrides)
    return write_registry(
        tmp_path / "repos.yml", {"site": {k: v for k, v in entry.items() if v is not None}}
    )


def run(tmp_path: Path, env: dict[str, str], *args: str) -> Any:
    base = {
        "DEPLOYHOOK_REGISTRY": str(tmp_path / "repos.yml"),
        "DEPLOYHOOK_DATA_DIR": str(tmp_path / "data"),
    }
    return CliRunner().invoke(main, ["hook", "create", *args], env={**base, **env})


@pytest.fixture
def env(token: str, secret: str) -> dict[str, str]:
    return {
        "GITEA_TOKEN": token,
        "SITE_SECRET": f"{secret},older-secret-0123456789",
        "DEPLOYHOOK_PUBLIC_URL": PUBLIC + "/",
    }


def test_create_then_update_in_place(
    tmp_path: Path, server: FakeGitea, env: dict[str, str], token: str, secret: str
) -> None:
    registry(tmp_path, server.url)
    first = run(tmp_path, env, "site")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("created hook 1 on jeff/site")
    [post] = server.calls("POST", "/hooks")
    assert post.path == "/api/v1/repos/jeff/site/hooks"
    assert post.headers["Authorization"] == f"token {token}"
    assert post.body == {
        "type": "gitea",
        "active": True,
        "events": ["push"],
        "branch_filter": "live",
        "config": {"url": f"{PUBLIC}/deploy/site", "content_type": "json", "secret": secret},
    }

    second = run(tmp_path, env, "site")
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("updated hook 1 on jeff/site")
    [patch] = server.calls("PATCH")
    assert patch.path == "/api/v1/repos/jeff/site/hooks/1"
    assert patch.body["config"]["secret"] == secret and patch.body["active"] is True
    assert len(server.hooks) == 1
    for result in (first, second):
        assert secret not in result.output and token not in result.output


def test_other_hooks_are_left_alone(tmp_path: Path, server: FakeGitea, env: dict[str, str]) -> None:
    server.hooks[7] = {
        "id": 7,
        "type": "slack",
        "active": True,
        "events": ["push"],
        "config": {"url": "https://hooks.slack.example/x"},
    }
    server._next_hook = 8
    registry(tmp_path, server.url)
    result = run(tmp_path, env, "site")
    assert result.exit_code == 0, result.output
    assert "created hook 8" in result.output
    assert server.hooks[7]["config"]["url"] == "https://hooks.slack.example/x"


@pytest.mark.parametrize(
    ("overrides", "env_change", "message"),
    [
        ({"source": None}, {}, "source"),
        ({"gitea": None}, {}, "no gitea block"),
        ({}, {"GITEA_TOKEN": ""}, "GITEA_TOKEN"),
        ({}, {"DEPLOYHOOK_PUBLIC_URL": ""}, "DEPLOYHOOK_PUBLIC_URL"),
        ({}, {"SITE_SECRET": ""}, "SITE_SECRET"),
    ],
)
def test_missing_configuration_is_a_usage_error(
    tmp_path: Path,
    server: FakeGitea,
    *,
    env: dict[str, str],
    overrides: dict[str, Any],
    env_change: dict[str, str],
    message: str,
) -> None:
    registry(tmp_path, server.url, **overrides)
    result = run(tmp_path, {**env, **env_change}, "site")
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert server.requests == []


def test_unknown_repo_is_a_usage_error(
    tmp_path: Path, server: FakeGitea, env: dict[str, str]
) -> None:
    registry(tmp_path, server.url)
    result = run(tmp_path, env, "nope")
    assert result.exit_code == 2
    assert "nope" in result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": "not-the-token"}, "refused the token in GITEA_TOKEN (401"),
        ({"repos": ("jeff/other",)}, "has no repository jeff/site"),
    ],
)
def test_gitea_refusal_exits_1_and_says_why(
    tmp_path: Path, env: dict[str, str], token: str, change: dict[str, Any], message: str
) -> None:
    fake = FakeGitea(**{"token": token, **change})
    try:
        registry(tmp_path, fake.url)
        result = run(tmp_path, env, "site")
    finally:
        fake.close()
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_gitea_down_exits_1(tmp_path: Path, env: dict[str, str]) -> None:
    registry(tmp_path, closed_port_url())
    result = run(tmp_path, env, "site")
    assert result.exit_code == 1
    assert "connection refused" in result.output
