"""The compose command: which one (v2 plugin or v1), and the argv of each call.

The Docker SDK has no Compose API, so compose runs as a child process, never through a
shell: every value from the registry is one argv element.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from deployhook.errors import StepFailed
from deployhook.registry import Repo

# Where Compose looks for its files when none is named, first found wins, plus one
# override file: v2's order (compose-go's DefaultFileNames), and v1's (1.29).
FILES_V2 = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDES_V2 = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
FILES_V1 = ("docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml")
OVERRIDES_V1 = (
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
    "compose.override.yml",
    "compose.override.yaml",
)


def discovered_files(directory: Path, *, v1: bool = False) -> list[Path]:
    """The files Compose reads in directory when none is named: the first, its override."""
    found = []
    for names in (FILES_V1, OVERRIDES_V1) if v1 else (FILES_V2, OVERRIDES_V2):
        first = next((directory / n for n in names if (directory / n).is_file()), None)
        if first is not None:
            found.append(first)
        elif not found:
            return []  # no main file: an override alone is not a project
    return found


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


def down_argv(base: tuple[str, ...], repo: Repo) -> list[str]:
    """`<compose> [-f F]... [-p P] down [--remove-orphans]`: containers and networks go,
    volumes stay (no `-v`), images stay."""
    argv = [*base_args(base, repo), "down"]
    if repo.remove_orphans:
        argv.append("--remove-orphans")
    return argv


def config(
    base: tuple[str, ...], repo: Repo, *args: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run `compose config ARGS` in the checkout, its output captured, never shown.

    Its output holds the interpolated environment (secrets): callers read it, and never
    show or keep it. Raises OSError or subprocess.TimeoutExpired.
    """
    return subprocess.run(
        [*base_args(base, repo), "config", *args],
        cwd=repo.path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
        start_new_session=True,
    )


def config_problem(
    base: tuple[str, ...], repo: Repo, *, env: dict[str, str], timeout: float
) -> str | None:
    """Why `compose config` refuses the checkout's project, or None if it accepts it."""
    argv = [*base_args(base, repo), "config", "-q"]
    try:
        result = config(base, repo, "-q", env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(argv)}` took over {timeout:g} s"
    except OSError as exc:
        return f"cannot run {argv[0]}: {exc.strerror}"
    if result.returncode != 0:
        return (
            f"`{' '.join(argv)}` rejects the project (exit {result.returncode}); "
            f"its output is not shown because it may hold secrets: run it in {repo.path} "
            "to see why"
        )
    return None
