"""Where the secrets a repo names come from: its webhook secrets, tokens and notify URLs.

Only names live in repos.yml; the values are read here, from the environment or files.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping

from deployhook.errors import SecretNotConfigured
from deployhook.registry.model import Repo

_SECRET_SPLIT_RE = re.compile(r"[,\n]")


def resolve_secrets(
    repo: Repo, *, default: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Return the repo's webhook secrets (several allowed, for rotation).

    Raises SecretNotConfigured when none can be found: a push is then refused, never
    accepted unsigned.
    """
    env = os.environ if environ is None else environ
    if repo.secret_env:
        raw = env.get(repo.secret_env)
        origin = f"environment variable {repo.secret_env}"
    elif repo.secret_file:
        origin = f"secret file {repo.secret_file}"
        try:
            raw = repo.secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretNotConfigured(
                f"{origin} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise SecretNotConfigured(f"{origin} is not UTF-8 text") from None
    else:
        raw = default
        origin = "DEPLOYHOOK_SECRET"
    secrets = tuple(s.strip() for s in _SECRET_SPLIT_RE.split(raw or "") if s.strip())
    if not secrets:
        raise SecretNotConfigured(
            f"no webhook secret for repo {repo.name!r}: {origin} is unset or empty"
        )
    return secrets


def secret_values(repos: Iterable[Repo], *, default: str | None) -> list[str]:
    """Every secret value the repos name: webhook secrets, tokens, notification URLs.

    Every repo's, not only one job's: one stack's output may print another's secret.
    """
    values = [default] if default else []
    for repo in repos:
        with contextlib.suppress(SecretNotConfigured):
            values.extend(resolve_secrets(repo, default=default))
        for name in sorted(repo.private_variables - {repo.secret_env}):
            value = os.environ.get(name)
            if value:
                values.append(value)
    return values
