"""`deployhook serve`, `deployhook worker`: the long-running processes."""

from __future__ import annotations

import sys

import click

from deployhook.cli.common import handle_errors, load_settings
from deployhook.config import Settings


@click.command()
@click.option("--bind", help="HOST:PORT to listen on [DEPLOYHOOK_BIND, 127.0.0.1:8000]")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="deploys at once across repos [DEPLOYHOOK_WORKERS, 2]",
)
@click.option(
    "--web-processes",
    type=click.IntRange(min=1),
    help="gunicorn processes [DEPLOYHOOK_WEB_PROCESSES, 2]",
)
@click.option("--no-worker", is_flag=True, help="run the web part only")
@handle_errors
def serve(
    bind: str | None, workers: int | None, web_processes: int | None, no_worker: bool
) -> None:
    """Run the HTTP API under gunicorn and one supervised deploy worker."""
    from deployhook import log
    from deployhook.server import Serve

    settings = load_settings(bind=bind, workers=workers, web_processes=web_processes)
    log.configure(fmt=settings.log_format, level=settings.log_level)
    announce(settings)
    sys.exit(Serve(settings, with_worker=not no_worker).run())


def announce(settings: Settings) -> None:
    """Say at start what serve serves, and which repos cannot verify a push (no secret):
    a log line, and a plain sentence on stderr when a person is watching it."""
    import structlog

    from deployhook.registry import Registry, unresolvable

    logger = structlog.get_logger()
    registry = Registry(settings.registry)
    registry.refresh(force=True)  # an invalid file: the server itself says so
    repos = list(registry)
    logger.info(
        "serve_registry",
        registry=str(settings.registry.absolute()),
        data_dir=str(settings.data_dir.absolute()),
        repos=len(repos),
    )
    missing = unresolvable(repos, default=settings.secret)
    if not missing:
        return
    names = ", ".join(sorted(missing))
    logger.warning(
        "no_webhook_secret",
        repos=sorted(missing),
        problems=[missing[n] for n in sorted(missing)],
        effect="their pushes are refused with 503 until a secret is configured",
    )
    if sys.stderr.isatty():
        some = "repo" if len(missing) == 1 else "repos"
        click.echo(
            f"deployhook: warning: {len(missing)} {some} cannot verify a push, no webhook "
            f"secret: {names}. Their pushes are refused (503). Set DEPLOYHOOK_SECRET, or "
            f"secret_env / secret_file in {settings.registry} (docs/secrets.md).",
            err=True,
        )


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="deploys at once across repos [DEPLOYHOOK_WORKERS, 2]",
)
@handle_errors
def worker(workers: int | None) -> None:
    """Run the deploy worker alone, against the same store."""
    from deployhook import log
    from deployhook.deploy.worker import run_worker

    settings = load_settings(workers=workers)
    log.configure(fmt=settings.log_format, level=settings.log_level)
    sys.exit(run_worker(settings))


@click.command(name="_web", hidden=True)
@handle_errors
def web() -> None:
    """Run the gunicorn master and its web processes alone (serve --no-worker)."""
    from deployhook.server import run_web

    run_web(load_settings())
