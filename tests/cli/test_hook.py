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


# -- an organisation's webhook: POST /deploy --------------------------------------------


def org_registry(tmp_path: Path) -> Path:
    return write_registry(
        tmp_path / "repos.yml",
        {
            "website": {"path": str(tmp_path / "w"), "source": "jeff/website"},
            "shop": {"path": str(tmp_path / "s"), "source": "jeff/shop"},
            "own": {"path": str(tmp_path / "o"), "source": "jeff/own", "secret_env": "OWN"},
            "nosource": {"path": str(tmp_path / "n")},
        },
        defaults={"secret_env": "JEFF_ORG_SECRET"},
    )


def org_run(tmp_path: Path, env: dict[str, str], gitea_url: str, *extra: str) -> Any:
    return run(
        tmp_path,
        env,
        "--org",
        "jeff",
        "--gitea-url",
        gitea_url + "/",
        "--token-env",
        "GITEA_TOKEN",
        "--secret-env",
        "JEFF_ORG_SECRET",
        *extra,
    )


def test_org_hook_create_then_update_in_place(
    tmp_path: Path, server: FakeGitea, env: dict[str, str], token: str, secret: str
) -> None:
    org_registry(tmp_path)
    env = {**env, "JEFF_ORG_SECRET": secret, "OWN": "own-secret-of-this-one-repo"}
    first = org_run(tmp_path, env, server.url)
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [
        f"created hook 1 on organisation jeff ({server.url}) delivering pushes to {PUBLIC}/deploy",
        "its secret deploys: website (jeff/website); shop (jeff/shop)",
    ]
    [post] = server.calls("POST", "/hooks")
    assert post.path == "/api/v1/orgs/jeff/hooks"
    assert post.headers["Authorization"] == f"token {token}"
    assert post.body == {
        "type": "gitea",
        "active": True,
        "events": ["push"],
        "branch_filter": "*",
        "config": {"url": f"{PUBLIC}/deploy", "content_type": "json", "secret": secret},
    }
    second = org_run(tmp_path, env, server.url)
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("updated hook 1 on organisation jeff")
    [patch] = server.calls("PATCH")
    assert patch.path == "/api/v1/orgs/jeff/hooks/1"
    assert len(server.org_hooks["jeff"]) == 1
    assert server.hooks == {}  # no repository hook was touched
    for result in (first, second):
        assert secret not in result.output and token not in result.output


def test_org_hook_warns_when_no_entry_has_its_secret(
    tmp_path: Path, server: FakeGitea, env: dict[str, str]
) -> None:
    org_registry(tmp_path)
    env = {**env, "JEFF_ORG_SECRET": "a-secret-nobody-else-has-000", "OWN": "o" * 20}
    result = run(
        tmp_path,
        {**env, "DEPLOYHOOK_SECRET": "the-default-secret-0123456"},
        "--org",
        "jeff",
        "--gitea-url",
        server.url,
        "--token-env",
        "GITEA_TOKEN",
    )  # no --secret-env: DEPLOYHOOK_SECRET, which no sourced entry uses
    assert result.exit_code == 0, result.output
    assert "warning: no entry with a source has this secret" in result.stderr
    [post] = server.calls("POST", "/hooks")
    assert post.body["config"]["secret"] == "the-default-secret-0123456"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give NAME, or --org ORG"),
        (("site", "--org", "jeff"), "not both"),
        (("site", "--gitea-url", "https://g"), "--gitea-url goes with --org"),
        (("--org", "jeff", "--token-env", "GITEA_TOKEN"), "--org needs --gitea-url"),
    ],
)
def test_org_usage_errors_exit_2(
    tmp_path: Path, server: FakeGitea, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    org_registry(tmp_path)
    result = run(tmp_path, env, *args)
    assert result.exit_code == 2
    assert message in result.output
    assert server.requests == []


@pytest.mark.parametrize(
    ("env_change", "message"),
    [
        ({"GITEA_TOKEN": ""}, "--token-env: environment variable GITEA_TOKEN is unset or empty"),
        ({"JEFF_ORG_SECRET": "short"}, "JEFF_ORG_SECRET: 5 characters"),
        ({"JEFF_ORG_SECRET": ""}, "JEFF_ORG_SECRET is unset or empty"),
        ({"DEPLOYHOOK_PUBLIC_URL": ""}, "DEPLOYHOOK_PUBLIC_URL"),
    ],
)
def test_org_configuration_errors_exit_2_in_one_line(
    tmp_path: Path,
    server: FakeGitea,
    env: dict[str, str],
    secret: str,
    env_change: dict[str, str],
    message: str,
) -> None:
    org_registry(tmp_path)
    result = org_run(tmp_path, {**env, "JEFF_ORG_SECRET": secret, **env_change}, server.url)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert server.requests == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"token": "not-the-token"}, "refused the token in GITEA_TOKEN (401"),
        ({"orgs": ("acme",)}, "has no organisation jeff"),
        ({"owner_of": ()}, "may not manage webhooks of organisation jeff (403"),
    ],
)
def test_org_refusal_exits_1_and_says_why(
    tmp_path: Path,
    env: dict[str, str],
    token: str,
    secret: str,
    change: dict[str, Any],
    message: str,
) -> None:
    fake = FakeGitea(**{"token": token, **change})
    try:
        org_registry(tmp_path)
        result = org_run(tmp_path, {**env, "JEFF_ORG_SECRET": secret}, fake.url)
    finally:
        fake.close()
    assert result.exit_code == 1
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
