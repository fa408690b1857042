"""The `fetch` and `checkout` steps, and every git call deployhook makes (GitPython).

Git never prompts (no terminal, SSH in batch mode) and a checkout owned by another
user is trusted for this call only (safe.directory through git's environment config,
never written to disk). Credentials are the host's own: deployhook adds none.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import git

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
    """Return the sha at the tip of the repo's branch on its remote (`git ls-remote`)."""
    if not repo.path.is_dir():
        raise StepFailed(f"{repo.path} does not exist")
    cmd = git.Git(str(repo.path))
    try:
        out = cmd.execute(
            ["git", "ls-remote", "--", repo.remote, repo.ref],
            env=git_env(repo.path),
            kill_after_timeout=timeout,
            with_extended_output=False,
            start_new_session=True,
        )
    except git.GitCommandError as exc:
        raise StepFailed(f"git ls-remote {repo.remote} failed: {_short(exc)}") from None
    for line in str(out).splitlines():
        sha, _, ref = line.partition("\t")
        if ref.strip() == repo.ref:
            return sha.strip().lower()
    raise StepFailed(f"branch {repo.branch} not found on remote {repo.remote}")


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


def fetch(repo: Repo, *, timeout: float, output: Callable[[str], None]) -> str:
    """Fetch the repo's branch from its remote; return the branch head fetched."""
    handle = _open(repo)
    if repo.remote not in [r.name for r in handle.remotes]:
        raise StepFailed(f"{repo.path} has no remote named {repo.remote!r}")
    tracking = f"refs/remotes/{repo.remote}/{repo.branch}"
    try:
        _git(
            handle,
            "fetch",
            "--prune",
            "--no-tags",
            "--",
            repo.remote,
            f"+{repo.ref}:{tracking}",
            timeout=timeout,
        )
    except StepFailed as exc:
        raise StepFailed(f"{exc} (remote {repo.remote!r})") from None
    head = _git(handle, "rev-parse", "--verify", "--quiet", f"{tracking}^{{commit}}").strip()
    output(f"fetched {repo.branch} from {repo.remote}: {head[:12]}")
    return head


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
    """Fetch the branch, then settle which commit this job deploys (docs/deploys.md rule 3).

    A push or reconcile job (and a retry of one) deploys only what the branch contains:
    its own commit when it is the head, the head when the branch has moved past it, and
    nothing when the commit is not on the branch. A head that already failed and was
    rolled back is not deployed again by a push. Manual deploys and rollbacks deploy
    exactly their commit.
    """
    timeout = max(ctx.deadline.remaining(), 1)
    head = fetch(ctx.repo, timeout=timeout, output=ctx.output)
    sha, branch = ctx.job.sha, ctx.repo.branch
    if not ctx.follows_branch:
        fetch_commit(ctx.repo, sha, timeout=timeout, output=ctx.output)
        return
    if sha != head:
        if not contains(ctx.repo, head, sha):
            raise StepFailed(f"{sha[:12]} is not on {branch}")
        ctx.retarget(head, note=f"pushed {sha[:12]}; deployed the head of {branch}, {head[:12]}")
    if ctx.store.failed_and_rolled_back(ctx.repo.name, head):
        raise NothingToDo(
            f"{head[:12]} already failed and was rolled back; a push does not deploy it again"
        )


def step_checkout(ctx: Context) -> None:
    ctx.previous_sha = checkout(ctx.repo, ctx.job.sha, output=ctx.output)
    ctx.store.set_job_fields(ctx.job.id, previous_sha=ctx.previous_sha)
    ctx.changed = ctx.changed or ctx.previous_sha != ctx.job.sha
    if ctx.repo.submodules:
        update_submodules(ctx.repo, timeout=max(ctx.deadline.remaining(), 1), output=ctx.output)


FETCH = StepSpec("fetch", step_fetch)
CHECKOUT = StepSpec("checkout", step_checkout)
