"""Mirror pushes: every branch and tag of the origin, pushed to `mirror.url` after a deploy.

The deploy checkout fetches one branch, so each repo gets a bare mirror cache in the
data dir (`<data_dir>/mirrors/<repo>.git`) that fetches all heads and tags from the
checkout's remote and pushes them on, deleting what the origin deleted.

The token never reaches argv (`ps`), a file or a log: git gets it in its environment as
an `http.extraHeader` (GIT_CONFIG_*), and both URLs travel the same way, so credentials
an admin embedded in a URL stay out of argv and out of the cache's files too.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import git

from deployhook import redact
from deployhook.deploy.context import Context, StepSpec
from deployhook.deploy.steps import git as gitsync
from deployhook.errors import SecretNotConfigured, StepFailed
from deployhook.log import get_logger
from deployhook.registry import Repo, Token, repo_token

logger = get_logger()

REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
# Remote names that exist only in the environment of one git process.
_SOURCE, _MIRROR = "deployhook-source", "deployhook-mirror"


def cache_path(data_dir: Path, repo: Repo) -> Path:
    return data_dir / "mirrors" / f"{repo.name}.git"


def safe_url(url: str) -> str:
    """The URL without any user or password in it, for messages."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return url


def auth_config(url: str, token: str | None) -> dict[str, str]:
    """Git config that sends token to an http(s) URL; SSH URLs use the host's keys."""
    if not token or urlsplit(url).scheme not in {"http", "https"}:
        return {}
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    redact.register([token, basic])
    return {"http.extraHeader": f"Authorization: Basic {basic}"}


def _short(exc: git.GitCommandError) -> str:
    lines = [ln.strip() for ln in str(exc.stderr or "").splitlines() if ln.strip()]
    meaningful = [ln for ln in lines if ln.lower().startswith(("fatal", "error", "remote:"))]
    text = (meaningful or lines or [f"git exited with {exc.status}"])[-1]
    return redact.mask(text.removeprefix("stderr: ").strip(" '"))


def _run(cwd: Path, args: list[str], *, env: dict[str, str], timeout: float) -> str:
    try:
        out = git.Git(str(cwd)).execute(
            ["git", *args], env=env, kill_after_timeout=timeout, with_extended_output=False
        )
    except git.GitCommandError as exc:
        raise StepFailed(f"git {args[0]} failed: {_short(exc)}") from None
    return str(out)


def source_url(repo: Repo) -> tuple[str, str]:
    """The checkout's remote URL (insteadOf applied) and its object format."""
    env = gitsync.git_env(repo.path)
    try:
        url = _run(repo.path, ["remote", "get-url", "--", repo.remote], env=env, timeout=10)
        fmt = _run(repo.path, ["rev-parse", "--show-object-format"], env=env, timeout=10)
    except StepFailed as exc:
        raise StepFailed(f"cannot read remote {repo.remote!r} of {repo.path}: {exc}") from None
    url = url.strip()
    if "://" not in url and not os.path.isabs(url) and ":" not in url.split("/")[0]:
        url = str((repo.path / url).resolve())  # a path relative to the checkout
    return url, fmt.strip() or "sha1"


def _ensure_cache(cache: Path, *, object_format: str) -> None:
    if (cache / "HEAD").is_file():
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Built aside and renamed, so a crash never leaves a half-made cache in place.
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}.", dir=cache.parent))
    try:
        _run(
            tmp,
            ["init", "--quiet", "--bare", f"--object-format={object_format}", str(tmp)],
            env=gitsync.git_env(tmp),
            timeout=30,
        )
        if cache.exists():
            shutil.rmtree(cache)
        tmp.rename(cache)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_token(repo: Repo, environ: Mapping[str, str] | None = None) -> str | None:
    """The mirror token from `mirror.token_env` or `token_file`; raise StepFailed if it is
    named but unset or unreadable."""
    mirror = repo.mirror
    if mirror is None or not (mirror.token_env or mirror.token_file):
        return None
    try:
        return repo_token(
            Token("mirror.token", mirror.token_env, mirror.token_file),
            what="mirror token",
            environ=environ,
        )
    except SecretNotConfigured as exc:
        raise StepFailed(str(exc)) from None


def push(
    repo: Repo,
    *,
    data_dir: Path,
    timeout: Callable[[], float],
    output: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> int:
    """Bring the cache up to date with the origin, then push it to the mirror.

    Returns how many refs the mirror changed. timeout gives the seconds left each time.
    """
    mirror = repo.mirror
    if mirror is None:
        raise StepFailed(f"repo {repo.name!r} has no mirror configured")
    token = resolve_token(repo, environ)
    origin, object_format = source_url(repo)
    cache = cache_path(data_dir, repo)
    _ensure_cache(cache, object_format=object_format)

    fetch_env = gitsync.git_env(cache, {f"remote.{_SOURCE}.url": origin})
    # No FETCH_HEAD: it would write the origin URL (and any credentials in it) to disk.
    _run(
        cache,
        ["fetch", "--quiet", "--prune", "--no-write-fetch-head", "--no-tags", _SOURCE, *REFSPECS],
        env=fetch_env,
        timeout=max(timeout(), 1),
    )
    output(f"mirror: fetched all branches and tags from {safe_url(origin)}")

    push_env = gitsync.git_env(
        cache, {f"remote.{_MIRROR}.url": mirror.url, **auth_config(mirror.url, token)}
    )
    out = _run(
        cache,
        ["push", "--porcelain", "--prune", _MIRROR, *REFSPECS],
        env=push_env,
        timeout=max(timeout(), 1),
    )
    changed = 0
    for line in out.splitlines():
        flag, _, rest = line.partition("\t")
        if flag in {"*", "+", " ", "-"} and rest:
            changed += 1
            output(f"mirror: {redact.mask(' '.join(rest.split()))}")
    output(f"mirror: {safe_url(mirror.url)} is up to date ({changed} refs changed)")
    logger.info("mirror_pushed", url=safe_url(mirror.url), changed=changed)
    return changed


def step(ctx: Context) -> None:
    """The `mirror` post step."""
    push(
        ctx.repo, data_dir=ctx.settings.data_dir, timeout=ctx.deadline.remaining, output=ctx.output
    )


MIRROR = StepSpec("mirror", step, applies=lambda repo: repo.mirror is not None)
