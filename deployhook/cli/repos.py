"""`deployhook repos list | add | remove | check`: the registry from the command line."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click

from deployhook.cli import fail, handle_errors, load_settings, main, quiet_logs
from deployhook.config import Settings
from deployhook.errors import DeployhookError, StepFailed
from deployhook.registry import Repo

COMPOSE_DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
REMOTE_TIMEOUT_S = 20
COMPOSE_CONFIG_TIMEOUT_S = 60


@main.group()
def repos() -> None:
    """List, add, remove and check the repos of the registry (repos.yml)."""


@repos.command(name="list")
@handle_errors
def list_repos() -> None:
    """Print one line a repo: name, branch, path, last status."""
    from deployhook import registry
    from deployhook.store import open_store

    settings = load_settings()
    quiet_logs(settings)
    entries = registry.load(settings.registry)
    if not entries:
        click.echo(f"no repos in {settings.registry}", err=True)
        return
    store = open_store(settings)
    try:
        rows = [
            (repo.name, repo.branch, str(repo.path), _last_status(store, repo))
            for repo in entries.values()
        ]
    finally:
        store.close()
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3]
        )


def _last_status(store: Any, repo: Repo) -> str:
    view = store.overview(repo.name)
    last = view.last_job
    parts = [f"{last.status} {last.sha[:12]} (job {last.id})" if last else "never deployed"]
    if view.queued and (last is None or str(last.status) != "queued"):
        parts.append("a job queued")
    if view.state.held:
        parts.append("held")
    if view.state.problem:
        parts.append(view.state.problem)
    return ", ".join(parts)


@repos.command(name="add")
@click.argument("name")
@click.option(
    "--path",
    "path",
    required=True,
    type=click.Path(path_type=Path),
    help="the git checkout on this host (relative: to the current directory)",
)
@click.option("--branch", help="the branch whose pushes deploy [main]")
@click.option("--remote", help="the git remote to fetch from [origin]")
@click.option("--source", help="owner/name the payload's repository must have")
@click.option("--secret-env", help="environment variable holding the webhook secret")
@click.option(
    "--secret-file", type=click.Path(path_type=Path), help="file holding the webhook secret"
)
@click.option(
    "--compose-file",
    "compose_files",
    multiple=True,
    help="a compose file, relative to the checkout (repeatable)",
)
@click.option("--project-name", help="the compose project name")
@click.option(
    "--service",
    "services",
    multiple=True,
    help="deploy and health-check only this service (repeatable)",
)
@click.option("--timeout", type=click.IntRange(min=1), help="seconds for a whole deploy [900]")
@click.option(
    "--health-timeout",
    type=click.IntRange(min=0),
    help="seconds to wait for healthy containers, 0: don't wait [120]",
)
@click.option(
    "--no-rollback", is_flag=True, help="don't redeploy the last good commit after a failure"
)
@click.option(
    "--on-local-changes",
    type=click.Choice(["fail", "reset"]),
    help="tracked files modified on the server: fail the deploy, or discard them",
)
@handle_errors
def add(name: str, path: Path, **options: Any) -> None:
    """Add a repo to repos.yml, keeping its comments and layout.

    The running server picks it up without a restart. Other keys: edit the file.
    """
    from deployhook import registry
    from deployhook.registry import edit as registry_edit

    secret_file: Path | None = options["secret_file"]
    if options["secret_env"] and secret_file:
        raise click.UsageError("give --secret-env or --secret-file, not both")
    settings = load_settings()
    checkout = Path(os.path.abspath(path))
    problem = _checkout_problem(checkout)
    if problem:
        fail(f"{settings.registry}: repos.{name}.path: {problem}", code=2)
    entry: dict[str, Any] = {
        **options,
        "path": str(checkout),
        "secret_file": str(Path(os.path.abspath(secret_file))) if secret_file else None,
        "compose_files": list(options["compose_files"]) or None,
        "services": list(options["services"]) or None,
        "rollback": False if options["no_rollback"] else None,
    }
    repo = registry_edit.add_repo(settings.registry, name, entry)
    click.echo(
        f"added {name} to {settings.registry}: deploys {repo.branch} of {repo.path}; "
        "a running deployhook picks it up without a restart"
    )
    try:
        registry.resolve_secrets(repo, default=settings.secret)
    except DeployhookError as exc:
        click.echo(
            f"deployhook: warning: {exc} in this environment; where the server runs "
            "without it too, its pushes are refused (503)",
            err=True,
        )


@repos.command(name="remove")
@click.argument("name")
@handle_errors
def remove(name: str) -> None:
    """Remove a repo from repos.yml, keeping the other entries and comments."""
    from deployhook.registry import edit as registry_edit

    settings = load_settings()
    registry_edit.remove_repo(settings.registry, name)
    click.echo(f"removed {name} from {settings.registry} (its checkout and history are kept)")


@repos.command(name="check")
@handle_errors
def check() -> None:
    """Check the registry and every repo; one line per problem, exit 2 if any."""
    from deployhook import registry

    settings = load_settings()
    entries = registry.load(settings.registry)
    repo_list = list(entries.values())
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(repo_list)))) as pool:
        found = list(pool.map(lambda r: _problems(r, settings), repo_list))
    problems = [
        f"{settings.registry}: repos.{repo.name}: {problem}"
        for repo, repo_problems in zip(repo_list, found, strict=True)
        for problem in repo_problems
    ]
    for line in problems:
        click.echo(line, err=True)
    if problems:
        raise SystemExit(2)
    click.echo(f"{len(repo_list)} repo{'' if len(repo_list) == 1 else 's'} OK")


def _problems(repo: Repo, settings: Settings) -> list[str]:
    """What stops this repo from deploying, one short line each."""
    from deployhook import registry
    from deployhook.deploy.steps import git as gitsync

    found = []
    try:
        registry.resolve_secrets(repo, default=settings.secret)
    except DeployhookError as exc:
        found.append(f"secret: {exc}")
    checkout_problem = _checkout_problem(repo.path)
    if checkout_problem:
        return [f"path: {checkout_problem}", *found]
    try:
        gitsync.remote_head(repo, timeout=REMOTE_TIMEOUT_S)
    except StepFailed as exc:
        found.append(f"branch: {exc}")
    found.extend(_compose_problems(repo, settings))
    return found


def _checkout_problem(path: Path) -> str | None:
    """Why path is not a usable git checkout, or None."""
    from deployhook.deploy.steps import git as gitsync

    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is not a directory"
    try:
        probe = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"],
            cwd=path,
            env=gitsync.git_env(path),
            capture_output=True,
            text=True,
            timeout=REMOTE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run git in {path}: {exc}"
    if probe.returncode != 0 or probe.stdout.strip() != "true":
        return f"{path} is not a git checkout (clone the repo there first)"
    return None


def _compose_problems(repo: Repo, settings: Settings) -> list[str]:
    """The compose files are there and `compose config` accepts them (output discarded)."""
    if repo.mode != "compose":
        return []
    if repo.compose_files:
        missing = [f for f in repo.compose_files if not (repo.path / f).is_file()]
        if missing:
            return [f"compose_files: {', '.join(missing)} not found in {repo.path}"]
    elif not any((repo.path / f).is_file() for f in COMPOSE_DEFAULT_FILES):
        return [f"compose: no {' / '.join(COMPOSE_DEFAULT_FILES)} in {repo.path}"]
    problem = _compose_config_problem(repo, settings)
    return [problem] if problem else []


def _compose_config_problem(repo: Repo, settings: Settings) -> str | None:
    from deployhook.deploy import compose

    try:
        argv = [*compose.base_args(compose.command(settings.compose), repo), "config", "-q"]
    except StepFailed as exc:
        return f"compose: {exc}"
    try:
        # Its output holds the interpolated environment (secrets): never shown or kept.
        result = subprocess.run(
            argv,
            cwd=repo.path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=COMPOSE_CONFIG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"compose: `{' '.join(argv)}` took over {COMPOSE_CONFIG_TIMEOUT_S} s"
    except OSError as exc:
        return f"compose: cannot run {argv[0]}: {exc.strerror}"
    if result.returncode != 0:
        return (
            f"compose: `{' '.join(argv)}` rejects the project (exit {result.returncode}); "
            f"its output is not shown because it may hold secrets: run it in {repo.path} "
            "to see why"
        )
    return None
