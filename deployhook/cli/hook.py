"""`deployhook hook create NAME | --org ORG`: push webhooks on Gitea, through its API."""

from __future__ import annotations

import click

from deployhook.cli.common import handle_errors, open_service, repo_names


@click.group()
def hook() -> None:
    """Manage push webhooks on the forge."""


@hook.command()
@click.argument("name", required=False, shell_complete=repo_names)
@click.option("--org", help="create the organisation ORG's webhook, pointing at POST /deploy")
@click.option("--gitea-url", help="with --org: the Gitea (or Forgejo) base URL")
@click.option("--token-env", help="with --org: the variable holding a Gitea token")
@click.option(
    "--secret-env",
    help="with --org: the variable holding the hook's secret [DEPLOYHOOK_SECRET]",
)
@handle_errors
def create(
    name: str | None,
    org: str | None,
    gitea_url: str | None,
    token_env: str | None,
    secret_env: str | None,
) -> None:
    """Create (or update) the Gitea push webhook that deploys NAME, or with --org the
    organisation's webhook for every repo whose entry has its secret and source."""
    org_options = {"--gitea-url": gitea_url, "--token-env": token_env, "--secret-env": secret_env}
    if org is None:
        if name is None:
            raise click.UsageError("give NAME, or --org ORG")
        given = [option for option, value in org_options.items() if value is not None]
        if given:
            raise click.UsageError(f"{given[0]} goes with --org (NAME's entry names its Gitea)")
        with open_service() as svc:
            click.echo(svc.create_hook(name))
        return
    if name is not None:
        raise click.UsageError("give NAME or --org ORG, not both")
    if gitea_url is None or token_env is None:
        raise click.UsageError("--org needs --gitea-url and --token-env")
    with open_service() as svc:
        for line in svc.create_org_hook(
            org, gitea_url=gitea_url, token_env=token_env, secret_env=secret_env
        ):
            click.echo(line, err=line.startswith("warning:"))
