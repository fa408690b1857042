"""`deployhook repos list | add | remove | check`: the registry from the command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from deployhook.cli.common import (
    fail,
    handle_errors,
    load_settings,
    open_service,
    quiet_logs,
    repo_names,
    require_registry,
    shown,
)
from deployhook.cli.status import print_json
from deployhook.errors import DeployhookError
from deployhook.models import Status
from deployhook.service import Service
from deployhook.summary import RepoSummary


@click.group()
def repos() -> None:
    """List, add, remove and check the repos of the registry (repos.yml)."""


@repos.command(name="list")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='{"repos": [...]}: each repo\'s entry and state, as GET /api/overview has it',
)
@handle_errors
def list_repos(as_json: bool) -> None:
    """Print one line a repo: name, branch, path, last status."""
    with open_service(read_only=True) as svc:
        entries = svc.repos()
        no_store = svc.store_missing()  # the registry is there; nothing deployed yet
        lines = {} if no_store else {s.repo: s for s in svc.summaries([r.name for r in entries])}
        if as_json:
            print_json(
                {
                    "repos": [
                        {
                            **(lines[r.name].to_dict() if r.name in lines else {"repo": r.name}),
                            "path": str(r.path),
                            "source": list(r.source),
                            "node": r.node or None,
                            "mode": str(r.mode),
                        }
                        for r in entries
                    ],
                    "registry_error": svc.registry_error,
                }
            )
            return
        if not entries:
            click.echo(
                f"no repos in {svc.settings.registry}: add one with "
                "`deployhook repos add NAME --path /path/to/checkout`",
                err=True,
            )
            return
        if no_store:
            click.echo(f"deployhook: {no_store}", err=True)
        rows = [(r.name, r.branch, str(r.path), _last_status(lines.get(r.name))) for r in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        click.echo(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[3]
        )


def _last_status(line: RepoSummary | None) -> str:
    if line is None:
        return "never deployed (no store yet)"
    last = line.last_job
    parts = [f"{last.status} {last.sha[:12]} (job {last.id})" if last else "never deployed"]
    if line.rollback_note:
        parts.append(line.rollback_note)
    if line.queued and (last is None or last.status != Status.QUEUED):
        parts.append("a job queued")
    if line.held:
        parts.append("held")
    if line.problem:
        parts.append(line.problem)
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
    from deployhook.deploy.steps import git

    secret_file: Path | None = options["secret_file"]
    if options["secret_env"] and secret_file:
        raise click.UsageError("give --secret-env or --secret-file, not both")
    settings = load_settings()
    require_registry(settings)
    checkout = Path(os.path.abspath(path))
    problem = git.checkout_problem(checkout)
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
    svc = Service.open(settings)
    repo = svc.add_repo(name, entry)
    click.echo(
        f"added {name} to {settings.registry}: deploys {repo.branch} of {repo.path}; "
        "a running deployhook picks it up without a restart"
    )
    try:
        svc.secret(repo)
    except DeployhookError as exc:
        click.echo(
            f"deployhook: warning: {exc} in this environment; where the server runs "
            "without it too, its pushes are refused (503)",
            err=True,
        )


@repos.command(name="remove")
@click.argument("name", shell_complete=repo_names)
@click.option(
    "--down",
    is_flag=True,
    help="first cancel its queued or running job, then `compose down` in its checkout "
    "(volumes kept)",
)
@handle_errors
def remove(name: str, down: bool) -> None:
    """Remove a repo from repos.yml, keeping the other entries and comments.

    With --down its stack is stopped too: its jobs are cancelled, then `compose down`
    runs in its checkout (containers and networks removed; volumes and images kept).
    """
    settings = load_settings()
    require_registry(settings)
    svc = Service.open(settings)
    try:
        repo = svc.registry.find(name)  # None: remove_repo says so, naming the file
        problem = svc.down_problem(repo) if down and repo else None
        if problem:
            fail(problem, code=2)
        svc.remove_repo(name)  # first: no new push is queued for it
        kept = "its checkout, volumes and history are" if down else "its checkout and history are"
        click.echo(f"removed {name} from {settings.registry} ({kept} kept)")
        if down and repo:
            quiet_logs(settings)
            svc.take_down(repo, output=lambda line: click.echo(shown(line)))
            click.echo(f"{repo.name} is down")
    finally:
        svc.close()


@repos.command(name="check")
@handle_errors
def check() -> None:
    """Check this host and every repo; one line per problem, exit 2 if any.

    What a deploy needs: the Docker engine answers, the compose command runs, and for
    each repo its secret resolves, its checkout is a git checkout this user can write,
    its branch is on the remote and compose accepts its files.
    """
    with open_service() as svc:
        report = svc.check_repos()
        registry_file = svc.settings.registry
    problems = [f"this host: {problem}" for problem in report.host]
    problems += [
        f"{registry_file}: repos.{name}: {problem}"
        for name, repo_problems in report.repos.items()
        for problem in repo_problems
    ]
    for line in problems:
        click.echo(line, err=True)
    if problems:
        raise SystemExit(2)
    tools = ", ".join(t for t in (report.engine, report.compose) if t)
    count = len(report.repos)
    if not count:
        click.echo(
            f"no repos in {registry_file} yet ({tools} answer): add one with "
            "`deployhook repos add NAME --path /path/to/checkout`"
        )
        return
    click.echo(f"{count} repo{'' if count == 1 else 's'} OK ({tools})")
