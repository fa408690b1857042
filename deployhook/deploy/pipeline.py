"""One deploy: fetch, checkout, compose up, health, then the post-deploy steps.

Each step is recorded in the job's steps with its times; everything it prints goes to the
job's output in the store as it is produced. A failed step becomes data on the job: the
runner never raises.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from deployhook import log
from deployhook.config import Settings
from deployhook.deploy import compose, process
from deployhook.deploy.reporters import notify
from deployhook.deploy.steps import git as gitsync
from deployhook.deploy.steps import mirror, swarm
from deployhook.errors import JobCancelled, JobTimedOut, StepFailed
from deployhook.forges import gitea as forge
from deployhook.models import Job, Status, StepStatus
from deployhook.registry import Repo
from deployhook.store import Store

logger = structlog.get_logger()

_FLUSH_S = 0.2
_FLUSH_LINES = 200
_MAX_LINE = 8192


class JobOutput:
    """A job's output: lines with their times, written to the store as they come.

    A background flusher writes pending lines every fifth of a second, so a live log is
    never far behind and a crash loses at most that much.
    """

    def __init__(self, store: Store, job_id: int) -> None:
        self._store = store
        self._job_id = job_id
        self._pending: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._flusher, name=f"job-{job_id}-output", daemon=True
        )
        self._thread.start()

    def __call__(self, line: str) -> None:
        text = log.mask(line[:_MAX_LINE])
        with self._cond:
            self._pending.append((time.time(), text))
            closed = self._closed
            if len(self._pending) >= _FLUSH_LINES:
                self._cond.notify()
        if closed:  # late lines (a reporter after the job ended) are written at once
            self.flush()

    def flush(self) -> None:
        with self._cond:
            lines, self._pending = self._pending, []
        if lines:
            try:
                self._store.append_log(self._job_id, lines)
            except Exception:  # the deploy must go on; the log line says what was lost
                logger.exception("job_output_lost", lines=len(lines))

    def _flusher(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(_FLUSH_S)
                closed = self._closed
            self.flush()
            if closed:
                return

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        self.flush()


@dataclass
class Context:
    """What a step needs: the job, its repo, the clock, the cancel flag and the output."""

    job: Job
    repo: Repo
    settings: Settings
    store: Store
    output: JobOutput
    deadline: process.Deadline
    cancel: threading.Event
    changed: bool = False
    previous_sha: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def run(self, argv: list[str]) -> int:
        """Run a child process in the checkout, in its own group, output to the job log."""
        return process.run(
            argv,
            cwd=self.repo.path,
            output=self.output,
            deadline=self.deadline,
            cancel=self.cancel,
            job_id=self.job.id,
            on_start=lambda pgid: self.store.set_job_fields(self.job.id, pgid=pgid),
        )

    def compose_base(self) -> tuple[str, ...]:
        return compose.command(self.settings.compose)


StepFn = Callable[[Context], None]


class Reporter(Protocol):
    """Told when a job starts and ends (commit status, notifications). Never fails a job."""

    def started(self, ctx: Context) -> None: ...

    def finished(self, ctx: Context, job: Job) -> None: ...


def step_fetch(ctx: Context) -> None:
    gitsync.fetch(
        ctx.repo, ctx.job.sha, timeout=max(ctx.deadline.remaining(), 1), output=ctx.output
    )


def step_checkout(ctx: Context) -> None:
    ctx.previous_sha = gitsync.checkout(ctx.repo, ctx.job.sha, output=ctx.output)
    ctx.store.set_job_fields(ctx.job.id, previous_sha=ctx.previous_sha)
    ctx.changed = ctx.changed or ctx.previous_sha != ctx.job.sha
    if ctx.repo.submodules:
        gitsync.update_submodules(
            ctx.repo, timeout=max(ctx.deadline.remaining(), 1), output=ctx.output
        )


def step_compose(ctx: Context) -> None:
    ctx.changed = True
    argv = compose.up_argv(ctx.compose_base(), ctx.repo)
    ctx.output("$ " + " ".join(argv))
    code = ctx.run(argv)
    if code != 0:
        raise StepFailed(f"compose up exited with {code}")


def step_health(ctx: Context) -> None:
    from deployhook.deploy.steps import health

    health.wait_healthy(
        ctx.repo,
        compose_base=ctx.compose_base(),
        deadline=ctx.deadline,
        cancel=ctx.cancel,
        output=ctx.output,
    )


def step_prune(ctx: Context) -> None:
    from deployhook.deploy.steps import health

    health.prune_images(ctx.repo, compose_base=ctx.compose_base(), output=ctx.output)


# (name, applies to the repo?, run). The deploy itself: any failure fails the job.
DEPLOY_STEPS: list[tuple[str, Callable[[Repo], bool], StepFn]] = [
    ("fetch", lambda repo: True, step_fetch),
    ("checkout", lambda repo: True, step_checkout),
    ("compose", lambda repo: repo.mode != "swarm", step_compose),
    ("health", lambda repo: repo.mode != "swarm" and repo.health_timeout > 0, step_health),
    *swarm.STEPS,  # mode: swarm: build, push, stack deploy, task health instead
]
# After a good deploy: a failure is recorded on the step and does not undo the deploy.
POST_STEPS: list[tuple[str, Callable[[Repo], bool], StepFn]] = [
    ("mirror", lambda repo: repo.mirror is not None, mirror.step),
    (
        "mirror_sync",
        lambda repo: bool(repo.gitea and repo.gitea.mirror_sync),
        forge.step_mirror_sync,
    ),
    ("prune", lambda repo: repo.prune_images, step_prune),
]
REPORTERS: list[Reporter] = [forge.CommitStatus(), notify.Notifier()]


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    error: str | None
    changed: bool


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


class Deploy:
    """Runs one claimed job to its end and records everything on it."""

    def __init__(
        self, *, job: Job, repo: Repo, settings: Settings, store: Store, cancel: threading.Event
    ) -> None:
        self.job = job
        output = JobOutput(store, job.id)
        self.ctx = Context(
            job=job,
            repo=repo,
            settings=settings,
            store=store,
            output=output,
            deadline=process.Deadline(repo.timeout),
            cancel=cancel,
        )

    def _step(self, name: str, fn: StepFn) -> None:
        ctx = self.ctx
        idx = ctx.store.start_step(ctx.job.id, name)
        ctx.output(f"==> {name}")
        started = time.monotonic()
        try:
            if ctx.cancel.is_set():
                raise JobCancelled("cancelled")
            ctx.deadline.check()
            fn(ctx)
        except StepFailed as exc:
            ctx.output(f"==> {name} failed: {exc}")
            ctx.store.finish_step(
                ctx.job.id, idx, status=StepStatus.FAILED, error=_one_line(str(exc))
            )
            logger.warning("step_failed", step=name, error=str(exc))
            raise
        except Exception as exc:
            ctx.output(f"==> {name} crashed: {type(exc).__name__}: {exc}")
            for line in traceback.format_exc().splitlines():
                ctx.output(line)
            ctx.store.finish_step(
                ctx.job.id,
                idx,
                status=StepStatus.FAILED,
                error=_one_line(f"{type(exc).__name__}: {exc}"),
            )
            logger.exception("step_crashed", step=name)
            raise StepFailed(f"{name}: internal error: {type(exc).__name__}: {exc}") from exc
        ctx.store.finish_step(ctx.job.id, idx, status=StepStatus.SUCCEEDED)
        ctx.output(f"==> {name} done in {time.monotonic() - started:.1f} s")
        logger.info("step_succeeded", step=name, duration_s=round(time.monotonic() - started, 3))

    def run(self) -> Result:
        ctx = self.ctx
        for reporter in REPORTERS:
            try:
                reporter.started(ctx)
            except Exception:  # a forge or notifier must never fail a deploy
                logger.exception("reporter_failed")
        status, error = Status.SUCCEEDED, None
        try:
            for name, applies, fn in DEPLOY_STEPS:
                if applies(ctx.repo):
                    self._step(name, fn)
        except JobCancelled:
            status, error = Status.CANCELLED, "cancelled by an admin"
        except JobTimedOut as exc:
            status, error = Status.FAILED, str(exc)
        except StepFailed as exc:
            status, error = Status.FAILED, _one_line(str(exc))
        if status == Status.SUCCEEDED:
            for name, applies, fn in POST_STEPS:
                if applies(ctx.repo):
                    # A failed post step is recorded on it; the deploy stands.
                    with contextlib.suppress(StepFailed):
                        self._step(name, fn)
        ctx.output(f"==> job {status}" + (f": {error}" if error else ""))
        ctx.output.close()
        return Result(status, error, ctx.changed)

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
        output=JobOutput(store, job.id),
        deadline=process.Deadline(repo.timeout),
        cancel=threading.Event(),
    )
    try:
        _report_finished(ctx, job)
    finally:
        ctx.output.close()
