"""`deployhook deploy | rollback | hold | release | cancel`: admin actions through the
shared store.

They work whether or not the server runs: a queued job is durable in the store, and a
deploy worker (of `serve`, or `deployhook worker`) claims it when there is one.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from deployhook.cli.common import handle_errors, open_service, repo_names, shown
from deployhook.models import Job, Status
from deployhook.registry import Repo
from deployhook.service import Service

# How often --wait looks for new steps and output lines (cheap reads of the store).
POLL_S = 0.3


def _warn_without_worker(svc: Service, repo: Repo) -> None:
    node = repo.node
    if any(w.node == node for w in svc.live_workers()):
        return
    where = f" for node {node!r}" if node else ""
    click.echo(
        f"deployhook: no deploy worker is alive{where}: the job waits in the queue "
        "until one runs (`deployhook serve` or `deployhook worker`)",
        err=True,
    )


def _queued(job: Job, *, coalesced: bool) -> None:
    verb = "joined" if coalesced else "queued"
    click.echo(f"{verb} job {job.id}: {job.trigger} of {job.repo} at {job.sha[:12]} ({job.status})")


def _wait_options(command: Any) -> Any:
    command = click.option(
        "--timeout",
        type=click.IntRange(min=1),
        help="with --wait: give up waiting after this many seconds (exit 1)",
    )(command)
    return click.option(
        "--wait", is_flag=True, help="follow the job; exit 0 if it succeeds, 1 if not"
    )(command)


def _announce(
    svc: Service, repo: Repo, queued: tuple[Job, bool], *, wait: bool, timeout: int | None
) -> None:
    """Say what was queued (or joined), warn without a worker, and follow it if asked."""
    job, coalesced = queued
    _queued(job, coalesced=coalesced)
    _warn_without_worker(svc, repo)
    if wait:
        raise SystemExit(follow(svc, job.id, timeout=timeout))


@click.command()
@click.argument("name", shell_complete=repo_names)
@click.option("--sha", help="the commit to deploy [the remote branch head]")
@_wait_options
@handle_errors
def deploy(name: str, sha: str | None, wait: bool, timeout: int | None) -> None:
    """Queue a manual deploy of NAME (or join its queued job)."""
    with open_service() as svc:
        _announce(svc, svc.repo(name), svc.run(name, sha=sha), wait=wait, timeout=timeout)


@click.command()
@click.argument("name", shell_complete=repo_names)
@click.option("--to", "to", help="the commit [the newest good deploy other than the deployed one]")
@_wait_options
@handle_errors
def rollback(name: str, to: str | None, wait: bool, timeout: int | None) -> None:
    """Queue a rollback of NAME to an earlier good commit."""
    with open_service() as svc:
        _announce(svc, svc.repo(name), svc.rollback(name, to=to), wait=wait, timeout=timeout)


@click.command()
@click.argument("name", shell_complete=repo_names)
@handle_errors
def hold(name: str) -> None:
    """Hold NAME: pushes are recorded but not deployed until `release`."""
    with open_service() as svc:
        state = svc.hold(name)
        click.echo(
            f"{state.repo} is on hold: pushes are recorded, not deployed, until "
            f"`deployhook release {state.repo}`"
        )


@click.command()
@click.argument("name", shell_complete=repo_names)
@handle_errors
def release(name: str) -> None:
    """Release NAME; the newest push that arrived while it was held is queued."""
    with open_service() as svc:
        repo = svc.repo(name)
        job = svc.release(name)
        click.echo(f"{repo.name} is released")
        if job is not None:
            _queued(job, coalesced=False)
            _warn_without_worker(svc, repo)


@click.command()
@click.argument("job", type=int)
@click.option("--json", "as_json", is_flag=True, help="the job's JSON, as the cancel endpoint's")
@handle_errors
def cancel(job: int, as_json: bool) -> None:
    """Cancel JOB: a queued one at once, a running one by asking its worker to stop it."""
    with open_service() as svc:
        done = svc.cancel(job)
    if as_json:
        click.echo(json.dumps(done.to_dict(), indent=2))
    elif done.status == Status.CANCELLED:
        click.echo(f"cancelled job {done.id}: {done.trigger} of {done.repo} at {done.sha[:12]}")
    else:
        click.echo(
            f"job {done.id} ({done.repo} at {done.sha[:12]}) is {done.status}: its worker "
            f"stops it within seconds (`deployhook logs {done.id} --follow` shows the end)"
        )


def follow(svc: Service, job_id: int, *, timeout: float | None = None) -> int:
    """Print a job's output as it comes; return 0 if it succeeded, else 1.

    The output holds the steps too: the runner writes `==> step` lines as each one
    starts and ends.
    """
    deadline = time.monotonic() + timeout if timeout else None
    after = 0
    while True:
        job = svc.job(job_id)  # before the lines: none is missed at the end
        for line in svc.new_output(job_id, after=after):
            after = line.id
            click.echo(shown(line.line))
        if job.status.ended:
            return _ended(job)
        if deadline is not None and time.monotonic() >= deadline:
            click.echo(
                f"deployhook: job {job.id} is still {job.status} after {timeout:g} s; "
                f"it goes on: `deployhook logs {job.id} --follow`",
                err=True,
            )
            return 1
        time.sleep(POLL_S)


def _ended(job: Job) -> int:
    took = f" in {job.duration_s:g} s" if job.duration_s is not None else ""
    if job.status == Status.SUCCEEDED:
        click.echo(f"job {job.id} succeeded{took}: {job.repo} is at {job.sha[:12]}")
        return 0
    if job.status == Status.SKIPPED:  # nothing to deploy: not a failure
        click.echo(f"job {job.id} skipped: {shown(job.note or 'nothing to deploy')}")
        return 0
    reason = f": {shown(job.error)}" if job.error else ""
    click.echo(f"deployhook: job {job.id} {job.status}{took}{reason}", err=True)
    return 1
