"""`deployhook hook create NAME`: the push webhook on Gitea, through its API."""

from __future__ import annotations

import click

from deployhook.cli import handle_errors, load_settings, main, quiet_logs
from deployhook.errors import ConfigError, UnknownRepo


@main.group()
def hook() -> None:
    """Manage a repo's push webhook on its forge."""


@hook.command()
@click.argument("name")
@handle_errors
def create(name: str) -> None:
    """Create (or update) the Gitea push webhook that deploys NAME."""
    from deployhook import registry
    from deployhook.forges import gitea as forge

    settings = load_settings()
    quiet_logs(settings)
    repo = registry.load(settings.registry).get(name)
    if repo is None:
        raise UnknownRepo(f"{settings.registry}: no repo named {name!r}")
    if not settings.public_url:
        raise ConfigError("DEPLOYHOOK_PUBLIC_URL is not set: Gitea needs the URL to deliver to")
    try:
        target = forge.connect(repo)
    except forge.ForgeNotConfigured as exc:
        raise ConfigError(f"{settings.registry}: {exc}") from None
    secret = registry.resolve_secrets(repo, default=settings.secret)[0]
    url = f"{settings.public_url}/deploy/{name}"
    try:
        action, hook_id = forge.ensure_hook(target, url=url, secret=secret, branch=repo.branch)
    except forge.ForgeError as exc:
        raise forge.ForgeError(
            forge.explain(exc, target, token_env=repo.gitea.token_env if repo.gitea else None)
        ) from None
    click.echo(
        f"{action} hook {hook_id} on {target.full_name} ({target.client.url}) "
        f"delivering pushes to {repo.branch} to {url}"
    )
