"""`deployhook status [NAME] [--json]` and `deployhook logs JOB|NAME [--follow]`: read the
store directly.

Both work whether or not the server runs: they open the same store it uses.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from deployhook import summary
from deployhook.cli.common import handle_errors, open_service, repo_names, shown
from deployhook.models import Job
from deployhook.service import Service

COLOURS = {
    # a ledger row's outcome (deployhook deliveries)
    "coalesced": "yellow",
    "duplicate": "bright_black",
    "ignored": "bright_black",
    "held": "yellow",
    "rejected": "red",
    # a job's status
    "succeeded": "green",
    "failed": "red",
    "running": "blue",
    "queued": "yellow",
    "rolled back": "magenta",
    "cancelled": "bright_black",
    "interrupted": "bright_black",
    "skipped": "bright_black",
    "never": "bright_black",
}


def table(
    header: Sequence[str], rows: list[list[str]], *, colour_col: int | None = None
) -> list[str]:
    """Left-aligned columns; the status column coloured on a terminal (click strips it)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in rows:
        cells = []
        for idx, (cell, width) in enumerate(zip(row, widths, strict=True)):
            text = cell.ljust(width)
            if idx == colour_col:
                text = click.style(text, fg=COLOURS.get(cell))
            cells.append(text)
        lines.append("  ".join(cells).rstrip())
    return lines


def _short(sha: str | None) -> str:
    return sha[:10] if sha else "-"


def _repos_table(svc: Service) -> int:
    lines = svc.summaries()
    if svc.registry_error:
        click.echo(f"deployhook: {svc.registry_error} (showing the last good registry)", err=True)
    if not lines:
        click.echo(
            f"no repos in {svc.settings.registry} yet: add one with "
            "`deployhook repos add NAME --path /path/to/checkout`"
        )
        return 0
    rows = []
    for line in lines:
        rows.append(
            [
                line.repo,
                line.branch,
                summary.label(line.state),
                _short(line.deployed_sha),
                summary.ago(line.when) if line.when else "-",
                summary.duration(line.last_job.duration_s if line.last_job else None).replace(
                    "—", "-"
                ),
                "held" if line.held else "-",
                "yes" if line.queued else "-",
            ]
        )
    for text in table(
        ["REPO", "BRANCH", "STATUS", "DEPLOYED", "WHEN", "TOOK", "HELD", "QUEUED"],
        rows,
        colour_col=2,
    ):
        click.echo(text)
    for line in lines:
        if line.rollback_note:
            click.echo(f"{line.repo}: {shown(line.rollback_note)}")
        if line.error:
            click.echo(f"{line.repo}: {shown(line.error)}")
    return 0


def _repo_jobs(svc: Service, name: str, limit: int) -> int:
    repo = svc.repo(name)
    [line] = svc.summaries([repo.name])
    click.echo(
        f"{repo.name} ({repo.branch}): deployed {_short(line.deployed_sha)}"
        + (f" {summary.ago(line.deployed_at)}" if line.deployed_at else "")
        + (", held" if line.held else "")
        + (", a job is queued" if line.queued else "")
    )
    click.echo(f"state: {summary.label(line.state)}")
    if line.rollback_note:
        click.echo(shown(line.rollback_note))
    if line.error:
        click.echo(f"error: {shown(line.error)}")
    jobs = svc.jobs(repo.name, limit=limit)
    if not jobs:
        click.echo("no jobs yet")
        return 0
    rows = [
        [
            str(j.id),
            str(j.status),
            str(j.trigger),
            _short(j.sha),
            summary.ago(j.created_at),
            summary.duration(j.duration_s).replace("—", "-"),
            shown(_note(j)),
        ]
        for j in jobs
    ]
    for text in table(
        ["JOB", "STATUS", "TRIGGER", "SHA", "QUEUED", "TOOK", "ERROR"], rows, colour_col=1
    ):
        click.echo(text)
    return 0


def _note(job: Job) -> str:
    """A job's error, and the rollback it links to (either way)."""
    parts = [job.error or ""]
    if job.rolled_back_by:
        parts.append(f"(rolled back by job {job.rolled_back_by})")
    if job.rollback_of:
        parts.append(f"(rollback of job {job.rollback_of})")
    return " ".join(p for p in parts if p)


def print_json(doc: Any) -> None:
    """The API's JSON, one document, indented (`jq` reads it; a script needs no parsing)."""
    click.echo(json.dumps(doc, indent=2))


@click.command()
@click.argument("name", required=False, shell_complete=repo_names)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="jobs to show for one repo",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="the API's JSON: GET /api/overview, or GET /deploy/NAME with its jobs",
)
@handle_errors
def status(name: str | None, limit: int, as_json: bool) -> None:
    """Show every repo's state, or one repo's recent jobs."""
    with open_service(read_only=True) as svc:
        if as_json:
            if name is None:
                print_json(svc.overview())
            else:
                doc = svc.repo_status(name)
                print_json({**doc, "jobs": [j.to_dict() for j in svc.jobs(name, limit=limit)]})
            sys.exit(0)
        sys.exit(_repo_jobs(svc, name, limit) if name else _repos_table(svc))


@click.command()
@click.argument("job_or_name", metavar="JOB|NAME", shell_complete=repo_names)
@click.option("--follow", "-f", is_flag=True, help="keep printing until the job ends")
@handle_errors
def logs(job_or_name: str, follow: bool) -> None:
    """Print a job's output, each line with its UTC time.

    An all-digit argument is a job id; a repo's name means its latest job.
    """
    with open_service(read_only=True) as svc:
        if job_or_name.isascii() and job_or_name.isdigit():
            job = int(job_or_name)
        else:
            job = svc.latest_job(job_or_name).id
        try:
            for line in svc.output(job, follow=follow):
                sys.stdout.write(shown(line))
                sys.stdout.flush()
        except KeyboardInterrupt:  # the reader stopped following: not a failure
            pass
        except BrokenPipeError:  # `deployhook logs 7 | head`: the reader has had enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(0)
