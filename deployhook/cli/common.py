"""What every command shares: settings, the service, one line per error and its exit code.

Exit codes: 0 success, 1 the operation failed, 2 usage or configuration error (one
line on stderr naming the file, the key and what is wrong).
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from deployhook import errors
from deployhook.config import Settings
from deployhook.text import for_terminal

if TYPE_CHECKING:
    from deployhook.service import Service

F = TypeVar("F", bound=Callable[..., Any])

# Errors in what the admin asked for or configured: exit 2. Everything else: exit 1.
USAGE_ERRORS: tuple[type[errors.DeployhookError], ...] = (
    errors.ConfigError,
    errors.UnknownRepo,
    errors.UnknownJob,
    errors.InvalidRequest,
    errors.SecretNotConfigured,
)


def fail(message: str, *, code: int = 1) -> NoReturn:
    click.echo(f"deployhook: {message}", err=True)
    sys.exit(code)


def handle_errors(command: F) -> F:
    """Turn a DeployhookError into one line on stderr and the contract's exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except errors.DeployhookError as exc:
            fail(str(exc), code=2 if isinstance(exc, USAGE_ERRORS) else 1)

    return wrapper  # type: ignore[return-value]


def shown(text: str) -> str:
    """Text from the store (a deploy's output, an error) as this terminal may show it: no
    escape sequence but colours, and colours only on a terminal (trust finding 6)."""
    return for_terminal(text, colours=sys.stdout.isatty())


def repo_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of a repo's NAME: the registry's names (nothing on any error: a
    completion must never print one)."""
    from deployhook import registry

    try:
        names = registry.load(Settings.load().registry)
    except Exception:
        return []
    return [name for name in names if name.startswith(incomplete)]


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.load(**overrides)
    except errors.ConfigError as exc:
        fail(str(exc), code=2)


class _CurrentStderr:
    """Whatever sys.stderr is when a line is written (click's test runner swaps it)."""

    def write(self, text: str) -> Any:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def quiet_logs(settings: Settings) -> None:
    """Send deployhook's own log lines to stderr, warnings and worse only: stdout is ours."""
    from deployhook import log

    log.configure(
        fmt=settings.log_format,
        level="warning",
        stream=_CurrentStderr(),  # type: ignore[arg-type]
        when_used=True,  # structlog (and asyncio) only for a command that logs
    )


def require_registry(settings: Settings) -> None:
    """A registry that was looked for and not found: say where we looked (exit 2)."""
    import os

    from deployhook.config import PREFIX, registry_not_found

    if not settings.registry.exists() and f"{PREFIX}REGISTRY" not in os.environ:
        raise errors.ConfigError(registry_not_found())


@contextlib.contextmanager
def open_service(*, read_only: bool = False, **overrides: Any) -> Iterator[Service]:
    """The service for one command; an invalid registry is one line, exit 2.

    The store is opened only if the command uses it; read_only: never created (a
    missing one is NoStore).
    """
    from deployhook import registry
    from deployhook.service import Service

    settings = load_settings(**overrides)
    quiet_logs(settings)
    require_registry(settings)
    registry.load(settings.registry)  # an invalid file: one line naming it, not a log line
    svc = Service.open(settings, create_store=not read_only)
    try:
        yield svc
    finally:
        svc.close()
