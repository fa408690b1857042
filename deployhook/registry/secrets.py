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
from deployhook.errors import DeployhookError, SecretNotConfigured
from deployhook.registry.model import Repo, Token

# A value may hold several secrets, for rotation: any of them verifies.
_SEPARATORS_RE = re.compile(r"[,\n]")
# Shorter webhook secrets can be guessed offline from one signed delivery.
MIN_SECRET_LENGTH = 16


def read(
    *,
    env: str | None,
    file: Path | None,
    what: str,
    environ: Mapping[str, str],
    key: str | None = None,
) -> str:
    """The value of a variable or file named in repos.yml, stripped, and now registered.

    key: the registry key that names it (`gitea.token`), for the error. Raises
    SecretNotConfigured when it is unset, empty or unreadable.
    """
    if env:
        origin = f"environment variable {env}" + (f" ({key}_env)" if key else "")
        raw = environ.get(env) or ""
    elif file:
        origin = f"secret file {file}" + (f" ({key}_file)" if key else "")
        try:
            return redact.read_file(file)
        except ValueError as exc:
            raise SecretNotConfigured(f"{what}: {origin} {exc}") from None
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
    origin = str(repo.secret_env or repo.secret_file or "DEPLOYHOOK_SECRET")
    return _checked(value, origin=origin, whose=f"of repo {repo.name!r}", what=what)


def unresolvable(repos: Iterable[Repo], *, default: str | None) -> dict[str, str]:
    """Repos whose webhook secret does not resolve, and why: their pushes are refused."""
    found = {}
    for repo in repos:
        try:
            resolve_secrets(repo, default=default)
        except DeployhookError as exc:
            found[repo.name] = str(exc)
    return found


def _checked(value: str, *, origin: str, whose: str, what: str) -> tuple[str, ...]:
    """The secrets in a value, each long enough, or SecretNotConfigured."""
    if not split(value):
        raise SecretNotConfigured(f"{what}: {origin} holds no secret")
    problem = weakness(value)
    if problem:
        raise SecretNotConfigured(f"the webhook secret {whose} is too short: {origin}: {problem}")
    return split(value)


def webhook_secrets(
    env: str | None, *, default: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The webhook secrets in a variable (None: DEPLOYHOOK_SECRET), checked and registered
    like a repo's: for a hook no single entry owns (an organisation's)."""
    what = "no webhook secret"
    if env:
        value = read(
            env=env, file=None, what=what, environ=os.environ if environ is None else environ
        )
        origin = env
    elif default and default.strip():
        value = default.strip()
        redact.register([value])
        origin = "DEPLOYHOOK_SECRET"
    else:
        raise SecretNotConfigured(f"{what}: DEPLOYHOOK_SECRET is unset or empty")
    return _checked(value, origin=origin, whose=f"in {origin}", what=what)


def token(
    name: str | None,
    *,
    what: str,
    file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    key: str | None = None,
) -> str:
    """A forge token or notification URLs named by a `*_env` (or `*_file`) key."""
    env = os.environ if environ is None else environ
    return read(env=name, file=file, what=what, environ=env, key=key)


def repo_token(
    source: Token, *, what: str | None = None, environ: Mapping[str, str] | None = None
) -> str:
    """The value of one of a repo's tokens (Repo.tokens), now registered.

    Notify URLs are registered one by one too: a message may show one of them alone.
    """
    value = token(
        source.env,
        file=source.file,
        what=what or source.key.replace(".", " "),
        environ=environ,
        key=source.key,
    )
    if source.key == "notify":
        redact.register(value.replace(",", " ").split())
    return value


def secret_values(repos: Iterable[Repo], *, default: str | None) -> list[str]:
    """Every secret value the repos name (now registered): webhook secrets, tokens, URLs.

    Every repo's, not only one job's: one stack's output may print another's secret.
    """
    values = [default] if default else []
    for repo in repos:
        with contextlib.suppress(SecretNotConfigured):
            values.extend(resolve_secrets(repo, default=default))
        for source in repo.tokens:
            with contextlib.suppress(SecretNotConfigured):
                values.append(repo_token(source))
    redact.register(values)
    return values
