"""Reporter: the commit status on the forge, `pending` when a job starts, its result at the end.

Gitea (and Forgejo) with `gitea: {commit_status: true}`, GitHub with `github:
{commit_status: true}`, or both: each gets the same context, `deployhook/<name>`, so a
branch protection rule names one check whichever forge runs it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployhook.deploy.context import Context, job_url
from deployhook.forges import gitea, github
from deployhook.forges.http import BUDGET_S, TIMEOUT_S, ForgeError, ForgeNotConfigured, Target
from deployhook.log import get_logger
from deployhook.models import Job, Status, Trigger
from deployhook.registry import Repo

logger = get_logger()


_STATE_OF = {
    Status.SUCCEEDED: "success",
    Status.FAILED: "failure",
    Status.CANCELLED: "error",
    Status.INTERRUPTED: "error",
    Status.SKIPPED: "success",  # nothing to deploy is not a failure (docs/deploys.md)
}


def context_of(repo: Repo) -> str:
    """The status's context on every forge: what branch protection rules name."""
    return f"deployhook/{repo.name}"


@dataclass(frozen=True, slots=True)
class _Forge:
    """One forge a repo reports to: its name in the job's output, and how to reach it."""

    label: str
    wanted: Callable[[Repo], bool]
    connect: Callable[[Repo], Target[Any]]


FORGES = (
    _Forge("gitea", lambda r: bool(r.gitea and r.gitea.commit_status), gitea.connect),
    _Forge("github", lambda r: bool(r.github and r.github.commit_status), github.connect),
)


class CommitStatus:
    """Reporter: commit status `pending` when a job starts, its result when it ends.

    The pending status is sent beside the deploy (a slow forge does not delay it); the
    result waits for it, so the forge always sees them in order. A forge that is down,
    slow or refusing is said in the job's output and never changes the deploy.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, list[tuple[threading.Thread, threading.Event]]] = {}

    @staticmethod
    def _targets(ctx: Context) -> list[tuple[str, Target[Any]]]:
        found = []
        for forge in FORGES:
            if not forge.wanted(ctx.repo):
                continue
            try:
                found.append((forge.label, forge.connect(ctx.repo)))
            except ForgeNotConfigured as exc:
                ctx.output(f"{forge.label}: no commit status: {exc}")
        return found

    @staticmethod
    def _send(
        ctx: Context,
        label: str,
        target: Target[Any],
        *,
        sha: str,
        state: str,
        description: str,
        abort: threading.Event | None = None,
    ) -> None:
        context = context_of(ctx.repo)
        try:
            target.client.set_status(
                target.owner,
                target.name,
                sha,
                state=state,
                context=context,
                description=description,
                target_url=job_url(ctx.settings.public_url, ctx.job.id),
                abort=abort,
            )
        except ForgeError as exc:
            ctx.output(f"{label}: commit status {state} not set on {sha[:12]}: {exc}")
            logger.warning("commit_status_failed", forge=label, state=state, error=str(exc))
            return
        ctx.output(f"{label}: commit status {state} set on {sha[:12]} ({context})")
        logger.info("commit_status_set", forge=label, state=state, forge_repo=target.full_name)

    def started(self, ctx: Context) -> None:
        targets = self._targets(ctx)
        if not targets:
            return
        what = (
            "rolling back to this commit"
            if ctx.job.trigger == Trigger.ROLLBACK
            else f"deploying ({ctx.job.trigger})"
        )
        sending = []
        for label, target in targets:
            abort = threading.Event()
            thread = threading.Thread(
                target=self._send,
                args=(ctx, label, target),
                kwargs={
                    "sha": ctx.job.sha,
                    "state": "pending",
                    "description": what,
                    "abort": abort,
                },
                name=f"job-{ctx.job.id}-{label}-status",
                daemon=True,
            )
            sending.append((thread, abort))
        with self._lock:
            # Jobs that never reached finished() (a worker stopping) leave their entry.
            self._pending = {
                k: v for k, v in self._pending.items() if any(t.is_alive() for t, _ in v)
            }
            self._pending[ctx.job.id] = sending
        for thread, _ in sending:
            thread.start()

    def finished(self, ctx: Context, job: Job) -> None:
        targets = self._targets(ctx)
        if not targets:
            return
        began = time.monotonic()
        with self._lock:
            pending = self._pending.pop(job.id, [])
        for _thread, abort in pending:
            abort.set()  # no new attempts: the result supersedes it
        for thread, _abort in pending:
            thread.join(TIMEOUT_S + 1)
        if job.status == Status.SUCCEEDED:
            description = (
                f"deployed in {job.duration_s:g} s" if job.duration_s is not None else "deployed"
            )
        elif job.status == Status.SKIPPED:
            description = job.note or "nothing to deploy"
        else:
            description = job.error or str(job.status)
        for label, given in targets:
            budget = max(BUDGET_S - (time.monotonic() - began), TIMEOUT_S)
            target = Target(given.client.with_budget(budget), given.owner, given.name)
            if ctx.pushed_sha and ctx.pushed_sha != job.sha:
                # The job deployed the branch head instead: the pushed commit's pending ends.
                self._send(
                    ctx,
                    label,
                    target,
                    sha=ctx.pushed_sha,
                    state="success",
                    description=f"superseded by HEAD {job.sha[:12]}",
                )
            self._send(
                ctx,
                label,
                target,
                sha=job.sha,
                state=_STATE_OF.get(job.status, "error"),
                description=description,
            )
