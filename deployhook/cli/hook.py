"""`deployhook hook create NAME`: the push webhook on Gitea, through its API."""

from __future__ import annotations

import click

from deployhook.cli.common import handle_errors, open_service


@click.group()
def hook() -> None:
    """Manage a repo's push webhook on its forge."""


@hook.command()
@click.argument("name")
@handle_errors
def create(name: str) -> None:
    """Create (or update) the Gitea push webhook that deploys NAME."""
    with open_service() as svc:
        click.echo(svc.create_hook(name))
