"""The `fetch` and `checkout` steps, and every git call deployhook makes (GitPython).

Git never prompts (no terminal, SSH in batch mode) and a checkout owned by another
user is trusted for this call only (safe.directory through git's environment config,
never written to disk). Credentials are the host's own: deployhook adds none.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import git
from packaging.version import InvalidVersion, Version
from wcmatch import glob as wcmatch_glob

from deployhook.deploy import process
from deployhook.deploy.context import Context, StepSpec
from deployhook.errors import NothingToDo, StepFailed
from deployhook.models import OnLocalChanges
from deployhook.registry import Repo


def _ssh_command(path: Path) -> str:
    """The ssh command git would use here, with batch mode added (never a prompt).

    GIT_SSH_COMMAND overrides a checkout's core.sshCommand (a per-repo deploy key), so
    that setting is read and kept rather than replaced.
    """
    configured = os.environ.get("GIT_SSH_COMMAND")
    if not configured:
        try:
            with git.Repo(path).config_reader() as config:
                configured = str(config.get_value("core", "sshCommand", "")) or None
        except (git.InvalidGitRepositoryError, git.NoSuchPathError, OSError, ValueError):
            configured = None
    return (configured or "ssh") + " -o BatchMode=yes"


def git_env(path: Path, extra_config: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every git process runs with (deployhook's own secrets removed)."""
    env = process.child_environ()
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": _ssh_command(path),
            "LC_ALL": "C",
        }
    )
    env.setdefault("GIT_ASKPASS", "/bin/false")
    env.setdefault("SSH_ASKPASS", "/bin/false")
    config = {"safe.directory": str(path)}
    config.update(extra_config or {})
    base = int(env.get("GIT_CONFIG_COUNT", "0") or 0)
    for i, (key, value) in enumerate(config.items(), start=base):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    env["GIT_CONFIG_COUNT"] = str(base + len(config))
    return env


def _short(exc: git.GitCommandError) -> str:
    """Git's first fatal or error line: the cause ("'x' does not appear to be a git
    repository"), not the generic last one ("Could not read from remote repository")."""
    lines = [
        ln.strip().removeprefix("stderr: ").strip(" '")
        for ln in str(exc.stderr or "").splitlines()
        if ln.strip()
    ]
    meaningful = [ln for ln in lines if ln.lower().startswith(("fatal", "error"))]
    return (meaningful or lines or [f"git exited with {exc.status}"])[0]


def checkout_problem(path: Path, *, timeout: float = 20) -> str | None:
    """Why path is not a usable git checkout, or None."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is not a directory"
    try:
        inside = git.Git(str(path)).execute(
            ["git", "rev-parse", "--is-inside-work-tree"],
            env=git_env(path),
            kill_after_timeout=timeout,
            with_extended_output=False,
        )
    except git.GitCommandError:
        inside = ""
    except OSError as exc:
        return f"cannot run git in {path}: {exc.strerror or exc}"
    if str(inside).strip() != "true":
        return f"{path} is not a git checkout (clone the repo there first)"
    return None


def remote_head(repo: Repo, *, timeout: float) -> str:
    """The commit the entry follows on its remote (`git ls-remote`): its branch's tip, or
    for a `tags` entry the commit of its newest matching tag (annotated tags peeled)."""
    if not repo.path.is_dir():
        raise StepFailed(f"{repo.path} does not exist")
    pattern = f"refs/tags/{repo.tags}" if repo.tags else repo.ref
    cmd = git.Git(str(repo.path))
    try:
        out = cmd.execute(
            ["git", "ls-remote", "--", repo.remote, pattern],
            env=git_env(repo.path),
            kill_after_timeout=timeout,
            with_extended_output=False,
            start_new_session=True,
        )
    except git.GitCommandError as exc:
        raise StepFailed(f"git ls-remote {repo.remote} failed: {_short(exc)}") from None
    refs: dict[str, str] = {}
    for line in str(out).splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref.strip()] = sha.strip().lower()
    if not repo.tags:
        if repo.ref in refs:
            return refs[repo.ref]
        raise StepFailed(f"branch {repo.branch} not found on remote {repo.remote}")
    tags = {
        ref.removeprefix("refs/tags/"): refs.get(f"{ref}^{{}}", sha)  # peeled, if annotated
        for ref, sha in refs.items()
        if ref.startswith("refs/tags/") and not ref.endswith("^{}")
    }
    newest = newest_tag(tags, repo.tags)
    if newest is None:
        raise StepFailed(f"no tag matching {repo.tags} on remote {repo.remote}")
    return tags[newest]


def _version_key(tag: str) -> tuple[int, Any]:
    """Version order: v1.10 after v1.9, v2.0 after v2.0-rc1 (PEP 440, a leading v
    ignored); tags that are not versions come first, digit runs compared as numbers."""
    try:
        return (1, Version(tag.removeprefix("v").removeprefix("V")))
    except InvalidVersion:
        parts = re.split(r"(\d+)", tag)
        return (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p))


def newest_tag(tags: Iterable[str], pattern: str) -> str | None:
    """The newest tag matching the entry's `tags` glob, in version order."""
    matching = [t for t in tags if fnmatch.fnmatchcase(t, pattern)]
    return max(matching, key=_version_key, default=None)


def _open(repo: Repo) -> git.Repo:
    try:
        return git.Repo(repo.path)
    except git.NoSuchPathError:
        raise StepFailed(f"{repo.path} does not exist") from None
    except git.InvalidGitRepositoryError:
        raise StepFailed(f"{repo.path} is not a git checkout") from None


def _git(
    handle: git.Repo, *args: str, timeout: float | None = None, env: dict[str, str] | None = None
) -> str:
    """Run one git command in the checkout, with deployhook's environment."""
    try:
        out = handle.git.execute(
            ["git", *args],
            env=env or git_env(Path(handle.working_dir)),
            kill_after_timeout=timeout,
            with_extended_output=False,
            strip_newline_in_stdout=True,
            start_new_session=True,
        )
    except git.GitCommandError as exc:
        raise StepFailed(f"git {args[0]} failed: {_short(exc)}") from None
    return str(out)


def head(repo: Repo) -> str | None:
    """The commit the checkout is on, or None for an unborn branch."""
    handle = _open(repo)
    try:
        return handle.head.commit.hexsha
    except ValueError:
        return None


def has_commit(handle: git.Repo, sha: str) -> bool:
    try:
        _git(handle, "cat-file", "-e", f"{sha}^{{commit}}")
    except StepFailed:
        return False
    return True


def _fetch_refs(repo: Repo, refspec: str, *, timeout: float) -> git.Repo:
    """`git fetch --prune --no-tags REMOTE REFSPEC` in the checkout; its handle."""
    handle = _open(repo)
    if repo.remote not in [r.name for r in handle.remotes]:
        raise StepFailed(f"{repo.path} has no remote named {repo.remote!r}")
    try:
        _git(handle, "fetch", "--prune", "--no-tags", "--", repo.remote, refspec, timeout=timeout)
    except StepFailed as exc:
        raise StepFailed(f"{exc} (remote {repo.remote!r})") from None
    return handle


def fetch(repo: Repo, *, timeout: float, output: Callable[[str], None]) -> str:
    """Fetch the repo's branch from its remote; return the branch head fetched."""
    tracking = f"refs/remotes/{repo.remote}/{repo.branch}"
    handle = _fetch_refs(repo, f"+{repo.ref}:{tracking}", timeout=timeout)
    head = _git(handle, "rev-parse", "--verify", "--quiet", f"{tracking}^{{commit}}").strip()
    output(f"fetched {repo.branch} from {repo.remote}: {head[:12]}")
    return head


def fetch_tags(repo: Repo, *, timeout: float, output: Callable[[str], None]) -> dict[str, str]:
    """Fetch the remote's tags (moved ones updated, deleted ones gone); return each
    tag's commit (an annotated tag peeled)."""
    handle = _fetch_refs(repo, "+refs/tags/*:refs/tags/*", timeout=timeout)
    listed = _git(
        handle,
        "for-each-ref",
        "--format=%(refname:strip=2)%09%(objectname)%09%(*objectname)",
        "refs/tags",
    )
    tags = {}
    for line in listed.splitlines():
        name, _, rest = line.partition("\t")
        obj, _, peeled = rest.partition("\t")
        tags[name] = (peeled or obj).strip()
    output(f"fetched {len(tags)} tags from {repo.remote}")
    return tags


def commit_of(repo: Repo, sha: str) -> str | None:
    """The commit sha names here (an annotated tag object peeled), or None if unknown."""
    try:
        return _git(_open(repo), "rev-parse", "--verify", "--quiet", f"{sha}^{{commit}}").strip()
    except StepFailed:
        return None


def changed_files(repo: Repo, base: str, target: str) -> list[str] | None:
    """The files that differ between two commits (None if either is not here)."""
    try:
        out = _git(_open(repo), "diff", "--name-only", "--no-renames", "-z", base, target)
    except StepFailed:
        return None
    return [name for name in out.split("\0") if name]


def contains(repo: Repo, head: str, sha: str) -> bool:
    """True if the commit sha is head or one of its ancestors (present here)."""
    handle = _open(repo)
    if not has_commit(handle, sha):
        return False
    try:
        _git(handle, "merge-base", "--is-ancestor", sha, head)
    except StepFailed:
        return False
    return True


def fetch_commit(repo: Repo, sha: str, *, timeout: float, output: Callable[[str], None]) -> None:
    """Make sure the commit sha is here, asking the remote for it by id if it is not.

    For manual deploys and rollbacks only, which name an exact earlier commit: a push
    deploys only what its branch contains (docs/deploys.md rule 3).
    """
    handle = _open(repo)
    if has_commit(handle, sha):
        return
    try:
        _git(handle, "fetch", "--no-tags", "--", repo.remote, sha, timeout=timeout)
    except StepFailed as exc:
        output(str(exc))
    if not has_commit(handle, sha):
        raise StepFailed(f"commit {sha[:12]} is not on {repo.remote} (was it force-pushed away?)")


def local_changes(handle: git.Repo) -> list[str]:
    """Tracked files modified (or staged) in the work tree; untracked files don't count."""
    out = _git(handle, "status", "--porcelain=v1", "-z", "--no-renames", "--untracked-files=no")
    return sorted({entry[3:] for entry in out.split("\0") if len(entry) > 3})


def checkout(repo: Repo, sha: str, *, output: Callable[[str], None]) -> str | None:
    """Move the checkout's branch to exactly sha, keeping it attached; return the old head.

    `git reset --keep` moves the branch (fast-forward or not) and refuses to overwrite
    local changes or untracked files, so `.env` and certificates are never touched.
    """
    handle = _open(repo)
    changed = local_changes(handle)
    if changed:
        shown = ", ".join(changed[:10]) + (
            f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        )
        if repo.on_local_changes != OnLocalChanges.RESET:
            raise StepFailed(
                f"local changes to tracked files: {shown} "
                "(on_local_changes: fail; commit, stash or discard them)"
            )
        output(f"discarding local changes to tracked files: {shown}")
        _git(handle, "reset", "--hard", "--quiet", "HEAD")
    previous = head(repo)
    if repo.tags:  # a `tags` entry follows no branch: the checkout is detached at the commit
        if previous != sha or not handle.head.is_detached:
            _git(handle, "checkout", "--quiet", "--detach", sha)
        was = f" (was {previous[:12]})" if previous and previous != sha else ""
        output(f"detached at {sha[:12]}{was}")
        return previous
    current = None if handle.head.is_detached else handle.active_branch.name
    if current != repo.branch:
        start = previous or sha
        _git(handle, "checkout", "--quiet", "-B", repo.branch, start)
        output(f"switched to branch {repo.branch}")
    if previous != sha:
        _git(handle, "reset", "--keep", "--quiet", sha)
    output(
        f"{repo.branch} is at {sha[:12]}"
        + (f" (was {previous[:12]})" if previous and previous != sha else "")
    )
    return previous


def update_submodules(repo: Repo, *, timeout: float, output: Callable[[str], None]) -> None:
    handle = _open(repo)
    out = _git(handle, "submodule", "update", "--init", "--recursive", timeout=timeout)
    for line in out.splitlines():
        output(line)


def step_fetch(ctx: Context) -> None:
    """Fetch, then settle which commit this job deploys (docs/deploys.md rule 3).

    A push or reconcile job (and a retry of one) deploys only what the entry follows:
    its own commit when it is the head (the branch's tip, or a `tags` entry's newest
    matching tag), the head when it has moved past it, and nothing when the commit is
    not there. A head that already failed and was rolled back is not deployed again by a
    push, nor one that changes nothing under the entry's `paths`. Manual deploys and
    rollbacks deploy exactly their commit.
    """
    timeout = max(ctx.deadline.remaining(), 1)
    repo, sha = ctx.repo, ctx.job.sha
    if repo.tags:
        tags = fetch_tags(repo, timeout=timeout, output=ctx.output)
        newest = newest_tag(tags, repo.tags)
        head = tags[newest] if newest else None
        followed = {commit for name, commit in tags.items() if fnmatch.fnmatchcase(name, repo.tags)}
        moved = f"deployed the newest tag {newest}, {head[:12] if head else ''}"
    else:
        head = fetch(repo, timeout=timeout, output=ctx.output)
        followed = set()
        moved = f"deployed the head of {repo.branch}, {head[:12]}"
    if not ctx.follows_branch:
        fetch_commit(repo, sha, timeout=timeout, output=ctx.output)
        return
    if head is None:
        raise StepFailed(f"no tag matching {repo.tags} on {repo.remote}")
    commit = commit_of(repo, sha) or sha  # a pushed annotated tag: the commit it names
    if commit != head:
        on_it = commit in followed if repo.tags else contains(repo, head, commit)
        if not on_it:
            raise StepFailed(f"{sha[:12]} is not on {repo.follows}")
        ctx.retarget(head, note=f"pushed {sha[:12]}; {moved}")
    elif commit != sha:
        ctx.retarget(head, note=None)
    if ctx.store.failed_and_rolled_back(repo.name, head):
        raise NothingToDo(
            f"{head[:12]} already failed and was rolled back; a push does not deploy it again"
        )
    _skip_unless_paths_changed(ctx, head)


def _skip_unless_paths_changed(ctx: Context, target: str) -> None:
    """With `paths`: nothing to do when no file under them changed since the entry's last
    good deploy (decided with git, never from a payload's truncated file lists)."""
    patterns = ctx.repo.paths
    if not patterns:
        return
    baseline = ctx.store.newest_good_sha(ctx.repo.name)
    if baseline is None:
        ctx.output("paths: no earlier good deploy of this entry: deploying")
        return
    changed = changed_files(ctx.repo, baseline, target)
    if changed is None:
        ctx.output(f"paths: {baseline[:12]} is not here to compare with: deploying")
        return
    flags = wcmatch_glob.GLOBSTAR | wcmatch_glob.DOTGLOB
    matched = [f for f in changed if wcmatch_glob.globmatch(f, list(patterns), flags=flags)]
    if not matched:
        raise NothingToDo(
            f"no change under paths since {baseline[:12]} ({len(changed)} files changed "
            f"elsewhere): {', '.join(patterns)}"
        )
    more = f" and {len(matched) - 5} more" if len(matched) > 5 else ""
    ctx.output(f"paths: {', '.join(matched[:5])}{more} changed since {baseline[:12]}")


def step_checkout(ctx: Context) -> None:
    ctx.previous_sha = checkout(ctx.repo, ctx.job.sha, output=ctx.output)
    ctx.store.set_job_fields(ctx.job.id, previous_sha=ctx.previous_sha)
    ctx.changed = ctx.changed or ctx.previous_sha != ctx.job.sha
    if ctx.repo.submodules:
        update_submodules(ctx.repo, timeout=max(ctx.deadline.remaining(), 1), output=ctx.output)


FETCH = StepSpec("fetch", step_fetch)
CHECKOUT = StepSpec("checkout", step_checkout)
