"""`deployhook deliveries NAME`: the repo's ledger, why each push did or did not deploy."""

from __future__ import annotations

import click

from deployhook import summary
from deployhook.cli.common import handle_errors, open_service, repo_names, shown
from deployhook.cli.status import print_json, table


@click.command()
@click.argument("name", shell_complete=repo_names)
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="deliveries to show, newest first",
)
@click.option(
    "--before",
    type=click.IntRange(min=1),
    help="only deliveries older than this SEQ (the `next` of the page before)",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="the API's JSON: GET /deploy/NAME/deliveries",
)
@handle_errors
def deliveries(name: str, limit: int, before: int | None, as_json: bool) -> None:
    """Show NAME's delivery ledger: what became of each delivery, and why."""
    with open_service() as svc:
        rows, following = svc.deliveries(name, limit=limit, before=before)
    if as_json:
        print_json({"deliveries": [d.to_dict() for d in rows], "next": following})
        return
    if not rows:
        click.echo("no deliveries" + (f" before {before}" if before else " yet"))
        return
    cells = [
        [
            str(d.id),
            summary.ago(d.received_at),
            d.event or "-",
            str(d.outcome),
            str(d.job) if d.job is not None else "-",
            d.sha[:10] if d.sha else "-",
            shown(d.reason or ""),
        ]
        for d in rows
    ]
    for line in table(
        ["SEQ", "RECEIVED", "EVENT", "OUTCOME", "JOB", "SHA", "REASON"], cells, colour_col=3
    ):
        click.echo(line)
    if following is not None:
        click.echo(f"older: deployhook deliveries {name} --before {following}")
