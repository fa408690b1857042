"""Reporter: the commit status on the forge, `pending` when a job starts, its result at the end."""

from __future__ import annotations

import threading
import time

import structlog

from deployhook.deploy.context import Context, job_url
from deployhook.forges.gitea import (
    BUDGET_S,
    TIMEOUT_S,
    ForgeError,
    ForgeNotConfigured,
    Gitea,
    Target,
    connect,
)
from deployhook.models import Job, Status, Trigger

logger = structlog.get_logger()


_STATE_OF = {
    Status.SUCCEEDED: "success",
    Status.FAILED: "failure",
    Status.CANCELLED: "error",
    Status.INTERRUPTED: "error",
    Status.SKIPPED: "success",  # nothing to deploy is not a failure (docs/deploys.md)
}


class CommitStatus:
    """Reporter: Gitea commit status `pending` when a job starts, its result when it ends.

    The pending status is sent beside the deploy (a slow forge does not delay it); the
    result waits for it, so Gitea always sees them in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[threading.Thread, threading.Event]] = {}

    def _target(self, ctx: Context) -> Target | None:
        gitea = ctx.repo.gitea
        if gitea is None or not gitea.commit_status:
            return None
        try:
            return connect(ctx.repo)
        except ForgeNotConfigured as exc:
            ctx.output(f"gitea: no commit status: {exc}")
            return None

    def _send(
        self,
        ctx: Context,
        target: Target,
        *,
        sha: str,
        state: str,
        description: str,
        abort: threading.Event | None = None,
    ) -> None:
        context = f"deploy/{ctx.repo.name}"
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
            ctx.output(f"gitea: commit status {state} not set on {sha[:12]}: {exc}")
            logger.warning("gitea_status_failed", state=state, error=str(exc))
            return
        ctx.output(f"gitea: commit status {state} set on {sha[:12]} ({context})")
        logger.info("gitea_status_set", state=state, gitea_repo=target.full_name)

    def started(self, ctx: Context) -> None:
        target = self._target(ctx)
        if target is None:
            return
        abort = threading.Event()
        what = (
            "rolling back to this commit"
            if ctx.job.trigger == Trigger.ROLLBACK
            else f"deploying ({ctx.job.trigger})"
        )
        thread = threading.Thread(
            target=self._send,
            args=(ctx, target),
            kwargs={"sha": ctx.job.sha, "state": "pending", "description": what, "abort": abort},
            name=f"job-{ctx.job.id}-gitea-status",
            daemon=True,
        )
        with self._lock:
            # Jobs that never reached finished() (a worker stopping) leave their entry.
            self._pending = {k: v for k, v in self._pending.items() if v[0].is_alive()}
            self._pending[ctx.job.id] = (thread, abort)
        thread.start()

    def finished(self, ctx: Context, job: Job) -> None:
        target = self._target(ctx)
        if target is None:
            return
        began = time.monotonic()
        with self._lock:
            pending = self._pending.pop(job.id, None)
        if pending is not None:
            thread, abort = pending
            abort.set()  # no new attempts: the result supersedes it
            thread.join(TIMEOUT_S + 1)
        budget = max(BUDGET_S - (time.monotonic() - began), TIMEOUT_S)
        client = target.client
        target = Target(
            Gitea(client.url, client.token, timeout=client.timeout, budget=budget),
            target.owner,
            target.name,
        )
        if ctx.pushed_sha and ctx.pushed_sha != job.sha:
            # The job deployed the branch head instead: the pushed commit's pending ends.
            self._send(
                ctx,
                target,
                sha=ctx.pushed_sha,
                state="success",
                description=f"superseded by HEAD {job.sha[:12]}",
            )
        if job.status == Status.SUCCEEDED:
            description = (
                f"deployed in {job.duration_s:g} s" if job.duration_s is not None else "deployed"
            )
        elif job.status == Status.SKIPPED:
            description = job.note or "nothing to deploy"
        else:
            description = job.error or str(job.status)
        self._send(
            ctx,
            target,
            sha=job.sha,
            state=_STATE_OF.get(job.status, "error"),
            description=description,
        )
