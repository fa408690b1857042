"""project_name against the real compose binaries: the label they put on containers.

Each case builds a checkout, runs `<compose> up --no-start` in it the way deployhook runs
compose (same argv, same environment, cwd the checkout), reads the
`com.docker.compose.project` label of the container it created, and compares.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from docker.client import DockerClient

from deployhook.deploy import compose
from deployhook.deploy.project import project_name
from deployhook.registry import Repo
from tests import needs
from tests.e2e.conftest import uid

V1 = ("docker-compose",)
V2 = ("docker", "compose")


@dataclass
class Case:
    """A checkout layout; `{u}` in any text becomes the case's unique suffix."""

    directory: str
    files: dict[str, str]
    compose_files: tuple[str, ...] = ()
    project_flag: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    symlink: bool = False
    v2_only: bool = False  # v1 refuses a top-level `name:`
    v2_refuses: bool = False  # v2 takes -p and COMPOSE_PROJECT_NAME as given, or refuses


SVC = 'services:\n  s{u}:\n    image: {image}\n    command: ["true"]\n'
CASES = {
    "dots-uppercase-underscore": Case("Dh.E2E_x{u}", {"docker-compose.yml": SVC}),
    "leading-underscore": Case("_dhe2e-{u}", {"docker-compose.yml": SVC}),
    "dotenv-uppercase": Case(
        "dir{u}",
        {"docker-compose.yml": SVC, ".env": "COMPOSE_PROJECT_NAME=Dh.Env-{u}\n"},
        v2_refuses=True,
    ),
    "env-beats-dotenv": Case(
        "dir{u}",
        {"docker-compose.yml": SVC, ".env": "COMPOSE_PROJECT_NAME=dotenv-{u}\n"},
        env={"COMPOSE_PROJECT_NAME": "env-{u}"},
    ),
    "empty-env-masks-dotenv": Case(
        "dir{u}",
        {"docker-compose.yml": SVC, ".env": "COMPOSE_PROJECT_NAME=dotenv-{u}\n"},
        env={"COMPOSE_PROJECT_NAME": ""},
    ),
    "project-flag": Case(
        "dir{u}", {"docker-compose.yml": SVC}, project_flag="Dh.P-{u}", v2_refuses=True
    ),
    "subdir-compose-file-and-its-dotenv": Case(
        "dir{u}",
        {"Sub.Dir_{u}/app.yml": SVC, ".env": "COMPOSE_PROJECT_NAME=root-{u}\n"},
        compose_files=("Sub.Dir_{u}/app.yml",),
    ),
    "compose-file-from-dotenv": Case(
        "dir{u}",
        {
            "sub{u}/app.yml": SVC,
            ".env": "COMPOSE_FILE=sub{u}/app.yml\n",
            "sub{u}/.env": "COMPOSE_PROJECT_NAME=subname-{u}\n",
        },
    ),
    "symlinked-checkout": Case("Real.Dir-{u}", {"docker-compose.yml": SVC}, symlink=True),
    "top-level-name": Case("dir{u}", {"compose.yaml": "name: Dh.Name-{u}\n" + SVC}, v2_only=True),
    "dotenv-beats-name": Case(
        "dir{u}",
        {"compose.yaml": "name: fromname-{u}\n" + SVC, ".env": "COMPOSE_PROJECT_NAME=dotenv-{u}\n"},
        v2_only=True,
    ),
    "interpolated-name-in-override": Case(
        "dir{u}",
        {
            "compose.yaml": "name: main-{u}\n" + SVC,
            ".env": "DH_APP=App.X\n",
            "compose.override.yaml": "name: ${{DH_APP:-dflt}}-{u}\n",
        },
        v2_only=True,
    ),
}


def _build(case: Case, root: Path, image: str) -> tuple[Repo, dict[str, str], str]:
    u = uid()

    def fill(text: str) -> str:
        return text.format(u=u, image=image)

    path = root / fill(case.directory)
    for rel, text in case.files.items():
        file = path / fill(rel)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(fill(text))
    if case.symlink:
        link = root / f"link{u}"
        link.symlink_to(path)
        path = link
    repo = Repo(
        name="site",
        path=path,
        compose_files=tuple(fill(f) for f in case.compose_files),
        project_name=fill(case.project_flag) if case.project_flag else None,
    )
    return repo, {k: fill(v) for k, v in case.env.items()}, f"s{u}"


def _label(
    base: tuple[str, ...], repo: Repo, env: dict[str, str], service: str, client: DockerClient
) -> tuple[str | None, str]:
    """Run compose as deployhook does; return the project label it set (or its error)."""
    done = subprocess.run(
        [*compose.base_args(base, repo), "up", "--no-start"],
        cwd=repo.path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    found = client.containers.list(
        all=True, filters={"label": f"com.docker.compose.service={service}"}
    )
    labels = {c.labels.get("com.docker.compose.project") for c in found}
    for container in found:  # the SDK cleans up faster than `compose down`
        container.remove(force=True)
    for project in labels:
        for network in client.networks.list(
            filters={"label": f"com.docker.compose.project={project}"}
        ):
            network.remove()
    if done.returncode != 0:
        return None, done.stderr
    assert len(labels) == 1, labels
    return labels.pop(), ""


PARAMS = [
    pytest.param(name, base, id=f"{name}-{version}")
    for name in sorted(CASES)
    for version, base in (("v2", V2), ("v1", V1))
    if not (CASES[name].v2_only and base == V1)
]


@pytest.mark.parametrize(("case", "base"), PARAMS)
def test_project_name_matches_the_label_compose_sets(
    case: str,
    base: tuple[str, ...],
    tmp_path: Path,
    busybox_image: str,
    docker_client: DockerClient,
) -> None:
    if base == V1:
        needs.compose_v1()
    else:
        needs.compose_v2()
    spec = CASES[case]
    repo, env, service = _build(spec, tmp_path, busybox_image)
    ours = project_name(repo, base, environ={**os.environ, **env})
    label, error = _label(base, repo, env, service, docker_client)
    if spec.v2_refuses and not compose.is_v1(base):
        # The deploy then fails at compose; the name is never looked up.
        assert label is None
        assert "invalid project name" in error
    else:
        assert label is not None, error
        assert ours == label


PLUGIN_DIRS = (
    "~/.docker/cli-plugins",
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def test_v2_installed_as_docker_compose_gets_v2_rules(
    tmp_path: Path, busybox_image: str, docker_client: DockerClient
) -> None:
    needs.compose_v1()
    plugins = [p for d in PLUGIN_DIRS if (p := Path(d).expanduser() / "docker-compose").is_file()]
    if not plugins:
        needs.missing("compose-v2", f"no Compose v2 plugin in {', '.join(PLUGIN_DIRS)}")
    plugin = plugins[0]
    standalone = tmp_path / "bin" / "docker-compose"  # how Docker's docs install v2 alone
    standalone.parent.mkdir()
    standalone.symlink_to(plugin)
    base = (str(standalone),)
    assert not compose.is_v1(base)
    assert compose.is_v1(V1)  # the Python 1.29 on PATH
    repo, env, service = _build(CASES["leading-underscore"], tmp_path, busybox_image)
    label, error = _label(base, repo, env, service, docker_client)
    assert label == project_name(repo, base) == repo.path.name.lstrip("_"), error
