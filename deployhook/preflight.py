"""`repos check`: what would stop each repo from deploying, found before a push does.

Each check runs what a deploy will run (git, the compose command) the way the worker
runs it, so a problem shows here instead of in the first job.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from deployhook.config import Settings
from deployhook.deploy import compose, process
from deployhook.deploy.steps import git
from deployhook.errors import DeployhookError, StepFailed
from deployhook.models import Mode
from deployhook.registry import Repo, resolve_secrets

REMOTE_TIMEOUT_S = 20
COMPOSE_CONFIG_TIMEOUT_S = 60


def check_all(repos: list[Repo], settings: Settings) -> dict[str, list[str]]:
    """Each repo's problems (one short line each), checked in parallel."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(repos)))) as pool:
        found = list(pool.map(lambda r: check(r, settings), repos))
    return {repo.name: problems for repo, problems in zip(repos, found, strict=True)}


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
