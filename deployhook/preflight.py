"""`repos check`: what would stop each repo from deploying, found before a push does.

Each check runs what a deploy will run (the Docker engine, the compose command, git)
the way the worker runs it, so a problem shows here instead of in the first job.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deployhook.config import Settings
from deployhook.deploy import compose, engine, process
from deployhook.deploy.steps import git
from deployhook.errors import DeployhookError, StepFailed
from deployhook.models import Mode
from deployhook.registry import Repo, resolve_secrets, unresolvable
from deployhook.text import one_line

REMOTE_TIMEOUT_S = 20
COMPOSE_CONFIG_TIMEOUT_S = 60
COMPOSE_VERSION_TIMEOUT_S = 20


@dataclass(frozen=True, slots=True)
class Report:
    """What `repos check` found: this host's problems, each repo's, and what answered."""

    host: list[str] = field(default_factory=list)
    repos: dict[str, list[str]] = field(default_factory=dict)
    engine: str | None = None  # "docker engine 28.2.2 (API 1.50)" when it answered
    compose: str | None = None  # "docker compose 2.26.1" when it answered

    @property
    def ok(self) -> bool:
        return not self.host and not any(self.repos.values())


def check_all(repos: list[Repo], settings: Settings) -> Report:
    """This host's tools, then each repo (in parallel); one short line per problem."""
    host: list[str] = []
    engine_answer, problem = check_engine()
    if problem:
        host.append(problem)
    compose_answer, problem = check_compose(settings)
    if problem:
        host.append(problem)
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(repos)))) as pool:
        found = list(pool.map(lambda r: check(r, settings), repos))
    return Report(
        host=host,
        repos={repo.name: problems for repo, problems in zip(repos, found, strict=True)},
        engine=engine_answer,
        compose=compose_answer,
    )


def check_engine() -> tuple[str | None, str | None]:
    """Whether the Docker engine answers (DOCKER_HOST, as deploys reach it)."""
    try:
        with engine.engine() as client:
            client.ping()
            version = client.version(api_version=False)
    except StepFailed as exc:
        return None, f"docker: {exc} (every deploy needs it)"
    return f"docker engine {version.get('Version')} (API {version.get('ApiVersion')})", None


def check_compose(settings: Settings) -> tuple[str | None, str | None]:
    """Whether the compose command deploys would run answers `version`."""
    try:
        base = compose.command(settings.compose)
    except StepFailed as exc:
        return None, f"compose: {exc}"
    argv = [*base, "version"]
    shown = " ".join(argv)
    try:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMPOSE_VERSION_TIMEOUT_S,
            env=process.child_environ(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None, f"compose: `{shown}` took over {COMPOSE_VERSION_TIMEOUT_S} s"
    except OSError as exc:
        return None, f"compose: cannot run `{shown}`: {exc.strerror or exc}"
    if result.returncode != 0:
        said = one_line(result.stderr or result.stdout, 200) or "no output"
        return None, f"compose: `{shown}` failed (exit {result.returncode}): {said}"
    first = (result.stdout.strip().splitlines() or [""])[0]
    return one_line(first, 80) or " ".join(base), None


def check(repo: Repo, settings: Settings) -> list[str]:
    """What stops this repo from deploying, one short line each."""
    found = []
    try:
        resolve_secrets(repo, default=settings.secret)
    except DeployhookError as exc:
        found.append(f"secret: {exc}")
    checkout_problem = git.checkout_problem(repo.path, timeout=REMOTE_TIMEOUT_S)
    if checkout_problem:
        return [f"path: {checkout_problem}", *found]
    unwritable = writable_problem(repo.path)
    if unwritable:
        found.append(f"path: {unwritable}")
    try:
        git.remote_head(repo, timeout=REMOTE_TIMEOUT_S)
    except StepFailed as exc:
        found.append(f"branch: {exc}")
    found.extend(_compose_problems(repo, settings))
    return found


def _compose_problems(repo: Repo, settings: Settings) -> list[str]:
    """The compose files are there and `compose config` accepts them (output discarded)."""
    if repo.mode != Mode.COMPOSE:
        return []
    if repo.compose_files:
        missing = [f for f in repo.compose_files if not (repo.path / f).is_file()]
        if missing:
            return [f"compose_files: {', '.join(missing)} not found in {repo.path}"]
    elif not compose.discovered_files(repo.path):
        return [f"compose: no {' / '.join(compose.FILES_V2)} in {repo.path}"]
    try:
        base = compose.command(settings.compose)
    except StepFailed as exc:
        return [f"compose: {exc}"]
    problem = compose.config_problem(
        base, repo, env=process.child_environ(), timeout=COMPOSE_CONFIG_TIMEOUT_S
    )
    return [f"compose: {problem}"] if problem else []


def unverifiable(repos: list[Repo], settings: Settings) -> dict[str, str]:
    """Repos whose webhook secret does not resolve, and why: their pushes are refused."""
    return unresolvable(repos, default=settings.secret)


def writable_problem(checkout: Path) -> str | None:
    """Why this user cannot update the checkout (git fetch and checkout write there)."""
    places = [checkout]
    dot_git = checkout / ".git"
    if dot_git.is_file():  # a linked worktree or a submodule: `gitdir: PATH`
        text = dot_git.read_text(errors="replace").strip()
        dot_git = (checkout / text.removeprefix("gitdir:").strip()).resolve()
    if dot_git.is_dir():
        places += [dot_git, dot_git / "objects", dot_git / "refs"]
    for place in places:
        if place.is_dir() and not os.access(place, os.W_OK | os.X_OK):
            return (
                f"{place} is not writable by {_whoami()}: git cannot fetch or check out "
                "there (run deployhook as the checkout's owner, see docs/install.md)"
            )
    return None


def _whoami() -> str:
    uid = os.geteuid()
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
