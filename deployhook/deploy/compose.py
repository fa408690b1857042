"""The compose command: which one (v2 plugin or v1), and the argv of each call.

The Docker SDK has no Compose API, so compose runs as a child process, never through a
shell: every value from the registry is one argv element.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

from deployhook.errors import StepFailed
from deployhook.registry import Repo

# The labels Compose puts on what it creates.
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
WORKDIR_LABEL = "com.docker.compose.project.working_dir"


@functools.cache
def _detect() -> tuple[str, ...]:
    docker = shutil.which("docker")
    if docker:
        try:
            probe = subprocess.run(
                [docker, "compose", "version"], capture_output=True, timeout=20, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is not None and probe.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise StepFailed(
        "no compose command found: install the docker compose plugin or "
        "docker-compose, or set DEPLOYHOOK_COMPOSE"
    )


def command(configured: tuple[str, ...] | None) -> tuple[str, ...]:
    """The compose command: DEPLOYHOOK_COMPOSE, else `docker compose`, else `docker-compose`."""
    return configured if configured else _detect()


def is_v1(base: tuple[str, ...]) -> bool:
    """True for the standalone Python docker-compose (v1), which names projects differently.

    A binary named docker-compose may also be Compose v2 installed standalone, so it is
    asked for its version (once per process).
    """
    return len(base) == 1 and base[0].endswith("docker-compose") and _major(base) == 1


@functools.cache
def _major(base: tuple[str, ...]) -> int:
    try:
        probe = subprocess.run(
            [*base, "version", "--short"], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 1  # unknown: the name says v1
    version = probe.stdout.strip().removeprefix("v")
    return 2 if probe.returncode == 0 and version[:1].isdigit() and version[0] != "1" else 1


def base_args(base: tuple[str, ...], repo: Repo) -> list[str]:
    argv = list(base)
    for file in repo.compose_files:
        argv += ["-f", file]
    if repo.project_name:
        argv += ["-p", repo.project_name]
    return argv


def up_argv(base: tuple[str, ...], repo: Repo) -> list[str]:
    """`<compose> [-f F]... [-p P] up -d --build [--remove-orphans] [--] [services]`."""
    argv = [*base_args(base, repo), "up", "-d", "--build"]
    if repo.remove_orphans:
        argv.append("--remove-orphans")
    if repo.services:
        argv += ["--", *repo.services]
    return argv
