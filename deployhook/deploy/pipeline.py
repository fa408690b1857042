"""One deploy: the step tables and the run of a claimed job through them.

Each step is recorded in the job's steps with its times; everything it prints goes to the
job's output in the store as it is produced. A failed step becomes data on the job: the
pipeline never raises. Where a new step goes: a module in deploy/steps/ that exports a
StepSpec, and one line in a table below.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from dataclasses import dataclass

from deployhook.config import Settings
from deployhook.deploy import process
from deployhook.deploy.context import Context, JobOutput, Reporter, StepSpec
from deployhook.deploy.reporters.commit_status import CommitStatus
from deployhook.deploy.reporters.notify import Notifier
from deployhook.deploy.steps import git, hooks, swarm
from deployhook.deploy.steps.compose import COMPOSE, PULL
from deployhook.deploy.steps.health import HEALTH
from deployhook.deploy.steps.mirror import MIRROR
from deployhook.deploy.steps.mirror_sync import MIRROR_SYNC
from deployhook.deploy.steps.prune import PRUNE
from deployhook.errors import JobCancelled, JobTimedOut, NothingToDo, StepFailed, StoreUnavailable
from deployhook.log import get_logger
from deployhook.models import Job, Status, StepStatus
from deployhook.registry import Repo
from deployhook.store import Store, persist
from deployhook.text import one_line

logger = get_logger()

# The deploy itself, in order: any failure fails the job. Each step says whether it
# applies to a repo (compose or swarm mode, health_timeout 0, ...).
DEPLOY_STEPS: tuple[StepSpec, ...] = (
    git.FETCH,
    git.CHECKOUT,
    hooks.PRE_DEPLOY,
    PULL,
    COMPOSE,
    HEALTH,
    *swarm.STEPS,  # mode: swarm: build, push, stack deploy, task health instead
    hooks.POST_DEPLOY,
)
# After a good deploy: a failure is recorded on the step and does not undo the deploy.
POST_STEPS: tuple[StepSpec, ...] = (MIRROR, MIRROR_SYNC, PRUNE)
REPORTERS: tuple[Reporter, ...] = (CommitStatus(), Notifier())


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    error: str | None
    changed: bool
    note: str | None = None


class Deploy:
    """Runs one claimed job to its end and records everything on it."""

    def __init__(
        self, *, job: Job, repo: Repo, settings: Settings, store: Store, cancel: threading.Event
    ) -> None:
        self.job = job
        output = JobOutput(store, job.id, limit=settings.max_output)
        self.ctx = Context(
            job=job,
            repo=repo,
            settings=settings,
            store=store,
            output=output,
            deadline=process.Deadline(repo.timeout),
            cancel=cancel,
            rules=store.rules_of(job),
        )

    def _step(self, step: StepSpec) -> None:
        ctx, name = self.ctx, step.name
        idx = persist(lambda: ctx.store.start_step(ctx.job.id, name))
        ctx.output(f"==> {name}")
        started = time.monotonic()
        try:
            if ctx.cancel.is_set():
                raise JobCancelled("cancelled")
            ctx.deadline.check()
            step.run(ctx)
        except NothingToDo as exc:
            ctx.output(f"==> {name}: nothing to do: {exc}")
            ctx.store.finish_step(ctx.job.id, idx, status=StepStatus.SUCCEEDED)
            raise
        except StepFailed as exc:
            ctx.output(f"==> {name} failed: {exc}")
            ctx.store.finish_step(
                ctx.job.id, idx, status=StepStatus.FAILED, error=one_line(str(exc))
            )
            logger.warning("step_failed", step=name, error=str(exc))
            raise
        except StoreUnavailable:
            raise  # not the step's failure: the worker ends the job interrupted, to retry
        except Exception as exc:
            ctx.output(f"==> {name} crashed: {type(exc).__name__}: {exc}")
            for line in traceback.format_exc().splitlines():
                ctx.output(line)
            ctx.store.finish_step(
                ctx.job.id,
                idx,
                status=StepStatus.FAILED,
                error=one_line(f"{type(exc).__name__}: {exc}"),
            )
            logger.exception("step_crashed", step=name)
            raise StepFailed(f"{name}: internal error: {type(exc).__name__}: {exc}") from exc
        persist(lambda: ctx.store.finish_step(ctx.job.id, idx, status=StepStatus.SUCCEEDED))
        ctx.output(f"==> {name} done in {time.monotonic() - started:.1f} s")
        logger.info("step_succeeded", step=name, duration_s=round(time.monotonic() - started, 3))

    def run(self) -> Result:
        ctx = self.ctx
        for reporter in REPORTERS:
            try:
                reporter.started(ctx)
            except Exception:  # a forge or notifier must never fail a deploy
                logger.exception("reporter_failed")
        status, error, note = Status.SUCCEEDED, None, None
        try:
            for step in DEPLOY_STEPS:
                if step.applies(ctx.repo):
                    self._step(step)
        except NothingToDo as exc:
            status, note = Status.SKIPPED, one_line(str(exc))
        except JobCancelled:
            status, error = Status.CANCELLED, "cancelled by an admin"
        except JobTimedOut as exc:
            status, error = Status.FAILED, str(exc)
        except StepFailed as exc:
            status, error = Status.FAILED, one_line(str(exc))
        if status == Status.SUCCEEDED:
            for step in POST_STEPS:
                if step.applies(ctx.repo):
                    # A failed post step is recorded on it; the deploy stands.
                    with contextlib.suppress(StepFailed):
                        self._step(step)
        ctx.output(f"==> job {status}" + (f": {error or note}" if error or note else ""))
        ctx.output.close()
        return Result(status, error, ctx.changed, note)

    def report_finished(self, job: Job) -> None:
        _report_finished(self.ctx, job)


def _report_finished(ctx: Context, job: Job) -> None:
    for reporter in REPORTERS:
        try:
            reporter.finished(ctx, job)
        except Exception:  # a forge or notifier must never fail a deploy
            logger.exception("reporter_failed")


def report_ended(job: Job, *, repo: Repo, settings: Settings, store: Store) -> None:
    """Tell the reporters about a job that ended outside a Deploy (interrupted)."""
    ctx = Context(
        job=job,
        repo=repo,
        settings=settings,
        store=store,
        output=JobOutput(store, job.id, limit=settings.max_output),
        deadline=process.Deadline(repo.timeout),
        cancel=threading.Event(),
    )
    try:
        _report_finished(ctx, job)
    finally:
        ctx.output.close()
