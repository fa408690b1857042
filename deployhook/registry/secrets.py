"""Where the secrets a repo names come from: its webhook secrets, tokens and notify URLs.

Only names live in repos.yml; the values are read here, from the environment or files,
and each value is registered with redact.py the moment it is read, so no output of this
process can show it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from deployhook import redact
from deployhook.errors import SecretNotConfigured
from deployhook.registry.model import Repo

# A value may hold several secrets, for rotation: any of them verifies.
_SEPARATORS_RE = re.compile(r"[,\n]")
# Shorter webhook secrets can be guessed offline from one signed delivery.
MIN_SECRET_LENGTH = 16


def read(*, env: str | None, file: Path | None, what: str, environ: Mapping[str, str]) -> str:
    """The value of a variable or file named in repos.yml, stripped, and now registered.

    Raises SecretNotConfigured when it is unset, empty or unreadable.
    """
    if env:
        origin = f"environment variable {env}"
        raw = environ.get(env) or ""
    elif file:
        origin = f"secret file {file}"
        try:
            raw = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretNotConfigured(
                f"{what}: {origin} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise SecretNotConfigured(f"{what}: {origin} is not UTF-8 text") from None
    else:
        raise SecretNotConfigured(f"{what}: no variable or file is named")
    value = raw.strip()
    if not value:
        raise SecretNotConfigured(f"{what}: {origin} is unset or empty")
    redact.register([value])
    return value


def split(value: str) -> tuple[str, ...]:
    """The secrets in one value: separated by commas or newlines (rotation)."""
    return tuple(s.strip() for s in _SEPARATORS_RE.split(value) if s.strip())


def weakness(value: str) -> str | None:
    """Why a secret value is too weak to verify anything, or None.

    Every part after splitting must be long enough: a comma inside a strong secret would
    otherwise split off a short one that verifies (`x,Zq8#...` made `x` a secret).
    """
    parts = split(value)
    short = [p for p in parts if len(p) < MIN_SECRET_LENGTH]
    if not short:
        return None
    if len(parts) > 1:
        separator = "','" if "," in value else "a newline"
        sizes = " + ".join(str(len(p)) for p in parts)
        return (
            f"split at {separator} into {sizes} characters; each secret needs at least "
            f"{MIN_SECRET_LENGTH} (a comma or newline separates secrets, for rotation)"
        )
    return f"{len(parts[0])} characters; a secret needs at least {MIN_SECRET_LENGTH}"


def resolve_secrets(
    repo: Repo, *, default: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Return the repo's webhook secrets (several allowed, for rotation).

    Raises SecretNotConfigured when none can be found or one is too short: a push is
    then refused (503), never accepted unsigned or under a guessable secret.
    """
    env = os.environ if environ is None else environ
    what = f"no webhook secret for repo {repo.name!r}"
    if repo.secret_env or repo.secret_file:
        value = read(env=repo.secret_env, file=repo.secret_file, what=what, environ=env)
    elif default and default.strip():
        value = default.strip()
        redact.register([value])
    else:
        raise SecretNotConfigured(f"{what}: DEPLOYHOOK_SECRET is unset or empty")
    if not split(value):
        raise SecretNotConfigured(f"{what}: {repo.secret_env or repo.secret_file} holds no secret")
    problem = weakness(value)
    if problem:
        origin = repo.secret_env or repo.secret_file or "DEPLOYHOOK_SECRET"
        raise SecretNotConfigured(
            f"the webhook secret of repo {repo.name!r} is too short: {origin}: {problem}"
        )
    return split(value)


def token(
    name: str | None,
    *,
    what: str,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """A forge token or notification URLs named by a `*_env` (or `*_file`) key."""
    return read(env=name, file=file, what=what, environ=os.environ if environ is None else environ)


def secret_values(repos: Iterable[Repo], *, default: str | None) -> list[str]:
    """Every secret value the repos name (now registered): webhook secrets, tokens, URLs.

    Every repo's, not only one job's: one stack's output may print another's secret.
    """
    values = [default] if default else []
    for repo in repos:
        with contextlib.suppress(SecretNotConfigured):
            values.extend(resolve_secrets(repo, default=default))
        for name in sorted(repo.private_variables - {repo.secret_env}):
            with contextlib.suppress(SecretNotConfigured):
                values.append(token(name, what=name))
    redact.register(values)
    return values
