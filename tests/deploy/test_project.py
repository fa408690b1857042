"""Compose project naming and service discovery, on real files (no engine needed).

Each rule here was checked against the real compose binaries; tests/e2e/test_project_e2e.py
repeats the interesting cases against them on a Docker engine.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployhook.deploy import compose
from deployhook.deploy.project import current_services, project_name
from deployhook.deploy.steps.health import ContainerState
from deployhook.registry import Repo

V1 = ("docker-compose",)
V2 = ("docker", "compose")
SERVICE = "services:\n  web:\n    image: x\n"


def fake_compose(directory: Path, version: str) -> Path:
    """A `docker-compose` that only answers `version --short`."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "docker-compose"
    script.write_text(f"#!/bin/sh\necho {version}\n")
    script.chmod(0o755)
    return script


@pytest.fixture(autouse=True)
def compose_v1_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`docker-compose` is v1 here whatever the host has (v2 may be installed under it)."""
    fake = fake_compose(tmp_path / "bin-v1", "1.29.2")
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    compose._major.cache_clear()
    yield
    compose._major.cache_clear()


def checkout(root: Path, name: str, files: dict[str, str] | None = None) -> Repo:
    path = root / name
    path.mkdir(parents=True)
    for rel, text in (files if files is not None else {"docker-compose.yml": SERVICE}).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return Repo(name="site", path=path)


@pytest.mark.parametrize(
    ("directory", "v1", "v2"),
    [
        ("My.App", "myapp", "myapp"),
        ("Foo_Bar-2", "foo_bar-2", "foo_bar-2"),
        ("UPPER", "upper", "upper"),
        ("_lead", "_lead", "lead"),  # v2 trims leading _ and -, v1 keeps them
        ("-lead", "-lead", "lead"),
        ("a b.c", "abc", "abc"),
        ("Café-Ü", "caf-", "caf-"),  # non-ASCII letters are dropped, not transliterated
    ],
)
def test_directory_name_is_normalized_per_version(
    tmp_path: Path, directory: str, v1: str, v2: str
) -> None:
    repo = checkout(tmp_path, directory)
    assert project_name(repo, V1, environ={}) == v1
    assert project_name(repo, V2, environ={}) == v2


def test_project_flag_wins_and_only_v1_normalizes_it(tmp_path: Path) -> None:
    repo = dataclasses.replace(
        checkout(
            tmp_path,
            "dir",
            {
                "docker-compose.yml": "name: fromfile\n" + SERVICE,
                ".env": "COMPOSE_PROJECT_NAME=e\n",
            },
        ),
        project_name="My.App",
    )
    assert project_name(repo, V1, environ={"COMPOSE_PROJECT_NAME": "env"}) == "myapp"
    # v2 refuses an invalid -p outright; the name is passed on as given
    assert project_name(repo, V2, environ={"COMPOSE_PROJECT_NAME": "env"}) == "My.App"


def test_environment_beats_dotenv_beats_directory(tmp_path: Path) -> None:
    repo = checkout(
        tmp_path,
        "dir",
        {"docker-compose.yml": SERVICE, ".env": "COMPOSE_PROJECT_NAME=From.DotEnv\n"},
    )
    for base in (V1, V2):
        assert project_name(repo, base, environ={"COMPOSE_PROJECT_NAME": "fromenv"}) == "fromenv"
    assert project_name(repo, V1, environ={}) == "fromdotenv"
    assert project_name(repo, V2, environ={}) == "From.DotEnv"  # refused by v2 itself


def test_empty_environment_value_masks_dotenv(tmp_path: Path) -> None:
    repo = checkout(
        tmp_path,
        "dir",
        {"docker-compose.yml": SERVICE, ".env": "COMPOSE_PROJECT_NAME=fromdotenv\n"},
    )
    for base in (V1, V2):
        assert project_name(repo, base, environ={"COMPOSE_PROJECT_NAME": ""}) == "dir"


@pytest.mark.parametrize(
    "line",
    [
        'COMPOSE_PROJECT_NAME="quoted" # comment',
        "export COMPOSE_PROJECT_NAME=quoted",
        "# c\n\nCOMPOSE_PROJECT_NAME='quoted'",
    ],
)
def test_dotenv_syntax(tmp_path: Path, line: str) -> None:
    repo = checkout(tmp_path, "dir", {"docker-compose.yml": SERVICE, ".env": line + "\n"})
    for base in (V1, V2):
        assert project_name(repo, base, environ={}) == "quoted"


def test_top_level_name_counts_for_v2_only(tmp_path: Path) -> None:
    repo = checkout(tmp_path, "dir", {"docker-compose.yml": "name: From.Name_x\n" + SERVICE})
    assert project_name(repo, V2, environ={}) == "fromname_x"
    assert project_name(repo, V1, environ={}) == "dir"


def test_dotenv_beats_top_level_name(tmp_path: Path) -> None:
    repo = checkout(
        tmp_path,
        "dir",
        {
            "docker-compose.yml": "name: fromname\n" + SERVICE,
            ".env": "COMPOSE_PROJECT_NAME=fromdotenv\n",
        },
    )
    assert project_name(repo, V2, environ={}) == "fromdotenv"


@pytest.mark.parametrize(
    ("dotenv", "environ", "expected"),
    [
        ("APP=interp\n", {}, "interp-x"),
        ("", {}, "dflt-x"),
        ("", {"APP": "FromEnv"}, "fromenv-x"),
        ("APP=\n", {}, "dflt-x"),
    ],
)
def test_top_level_name_is_interpolated(
    tmp_path: Path, dotenv: str, environ: dict[str, str], expected: str
) -> None:
    repo = checkout(
        tmp_path, "dir", {"docker-compose.yml": "name: ${APP:-dflt}-x\n" + SERVICE, ".env": dotenv}
    )
    assert project_name(repo, V2, environ=environ) == expected


def test_v2_discovery_order_and_override(tmp_path: Path) -> None:
    files = {
        f: f"name: n-{f.replace('.', '-')}\n" + SERVICE
        for f in ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
    }
    repo = checkout(tmp_path, "dir", files)
    assert project_name(repo, V2, environ={}) == "n-compose-yaml"
    (repo.path / "compose.yaml").unlink()
    (repo.path / "compose.yml").unlink()
    assert project_name(repo, V2, environ={}) == "n-docker-compose-yml"
    (repo.path / "docker-compose.override.yml").write_text("name: from-override\n")
    assert project_name(repo, V2, environ={}) == "from-override"


def test_compose_files_in_a_subdirectory_name_the_project_after_it(tmp_path: Path) -> None:
    repo = dataclasses.replace(
        checkout(
            tmp_path, "dir", {"deploy/app.yml": SERVICE, ".env": "COMPOSE_PROJECT_NAME=rootenv\n"}
        ),
        compose_files=("deploy/app.yml",),
    )
    for base in (V1, V2):  # the .env beside the first file counts, the checkout's doesn't
        assert project_name(repo, base, environ={}) == "deploy"
    (repo.path / "deploy" / ".env").write_text("COMPOSE_PROJECT_NAME=subenv\n")
    for base in (V1, V2):
        assert project_name(repo, base, environ={}) == "subenv"


def test_later_compose_file_name_wins(tmp_path: Path) -> None:
    repo = dataclasses.replace(
        checkout(
            tmp_path, "dir", {"a.yml": "name: first\n" + SERVICE, "b.yml": "name: Sec.Ond_x\n"}
        ),
        compose_files=("a.yml", "b.yml"),
    )
    assert project_name(repo, V2, environ={}) == "second_x"


def test_compose_file_from_dotenv(tmp_path: Path) -> None:
    repo = checkout(
        tmp_path,
        "dir",
        {
            "sub/app.yml": SERVICE,
            ".env": "COMPOSE_FILE=sub/app.yml\n",
            "sub/.env": "COMPOSE_PROJECT_NAME=subname\n",
        },
    )
    assert project_name(repo, V1, environ={}) == "sub"  # v1 keeps the checkout's .env
    assert project_name(repo, V2, environ={}) == "subname"  # v2 reads sub/.env as well


def test_compose_file_from_environment(tmp_path: Path) -> None:
    repo = checkout(
        tmp_path, "dir", {"sub/app.yml": SERVICE, "sub/.env": "COMPOSE_PROJECT_NAME=subname\n"}
    )
    for base in (V1, V2):
        assert project_name(repo, base, environ={"COMPOSE_FILE": "sub/app.yml"}) == "subname"


def test_symlinked_checkout_is_named_after_its_target(tmp_path: Path) -> None:
    real = checkout(tmp_path, "Real.Dir")
    link = tmp_path / "link"
    link.symlink_to(real.path)
    for base in (V1, V2):
        assert project_name(dataclasses.replace(real, path=link), base, environ={}) == "realdir"


def test_current_services_merge_files_and_respect_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COMPOSE_PROFILES", raising=False)
    monkeypatch.delenv("COMPOSE_FILE", raising=False)
    repo = checkout(
        tmp_path,
        "dir",
        {
            "compose.yaml": "services:\n  web: {image: x}\n  debug: {image: x, profiles: [dbg]}\n",
            "compose.override.yaml": "services:\n  worker: {image: x}\n  web: {ports: !reset []}\n",
        },
    )
    assert current_services(repo, V2) == {"web", "worker"}
    (repo.path / ".env").write_text("COMPOSE_PROFILES=dbg\n")
    assert current_services(repo, V2) == {"web", "worker", "debug"}
    assert current_services(dataclasses.replace(repo, services=("web",)), V2) == {"web"}


def test_current_services_unknown_with_include(tmp_path: Path) -> None:
    repo = checkout(tmp_path, "dir", {"compose.yaml": "include: [other.yaml]\n" + SERVICE})
    assert current_services(repo, V2) is None


@pytest.mark.parametrize(
    ("state", "health", "code", "verdict", "text"),
    [
        ("running", None, 0, "ready", "c-1 is running"),
        ("running", "healthy", 0, "ready", "c-1 is healthy: ok"),
        ("running", "starting", 0, "waiting", "c-1 is starting: ok"),
        ("running", "unhealthy", 0, "failed", "c-1 is unhealthy: ok"),
        ("exited", None, 0, "ready", "c-1 exited with code 0"),
        ("exited", "unhealthy", 3, "failed", "c-1 exited with code 3"),
        ("restarting", None, 1, "failed", "c-1 is restarting (last exit code 1)"),
        ("created", None, 0, "waiting", "c-1 is created"),
        ("dead", None, 0, "failed", "c-1 is dead"),
        ("paused", None, 0, "failed", "c-1 is paused"),
    ],
)
def test_container_verdicts(
    state: str, health: str | None, code: int, verdict: str, text: str
) -> None:
    attrs = {
        "Name": "/c-1",
        "Config": {"Labels": {"com.docker.compose.service": "c"}},
        "State": {
            "Status": state,
            "ExitCode": code,
            "Health": {"Status": health, "Log": [{"Output": "\nok\n"}]} if health else None,
        },
    }
    container = ContainerState.from_inspect(attrs)
    assert container.verdict.value == verdict
    assert container.describe() == text


def test_unreachable_engine_is_one_line_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from deployhook.deploy import process
    from deployhook.deploy.steps.health import wait_healthy
    from deployhook.deploy.steps.prune import prune_images
    from deployhook.errors import StepFailed

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    repo = dataclasses.replace(checkout(tmp_path, "dir"), health_timeout=5)
    with pytest.raises(
        StepFailed,
        match=r"^docker engine unreachable: .*no-engine\.sock|"
        r"^docker engine unreachable: .*No such file",
    ):
        wait_healthy(
            repo,
            compose_base=V2,
            deadline=process.Deadline(60),
            cancel=threading.Event(),
            output=lambda line: None,
        )
    with pytest.raises(StepFailed, match=r"^docker engine unreachable: "):
        prune_images(repo, compose_base=V2, output=lambda line: None)
    lines: list[str] = []
    prune_images(repo, compose_base=V1, output=lines.append)  # v1: skipped, no engine asked
    assert lines == [
        "prune skipped: docker-compose v1 does not label the images it builds, "
        "so a dangling image of project dir cannot be told from another "
        "project's"
    ]


def test_a_docker_compose_binary_is_asked_which_version_it_is(tmp_path: Path) -> None:
    v2_standalone = fake_compose(tmp_path / "v2", "2.26.1")
    v1 = fake_compose(tmp_path / "v1", "1.29.2")
    assert not compose.is_v1((str(v2_standalone),))
    assert compose.is_v1((str(v1),))
    assert compose.is_v1((str(tmp_path / "missing" / "docker-compose"),))  # the name says v1
    assert not compose.is_v1(("docker", "compose"))
    repo = checkout(tmp_path, "_Dir")
    assert project_name(repo, (str(v2_standalone),), environ={}) == "dir"
    assert project_name(repo, (str(v1),), environ={}) == "_dir"
