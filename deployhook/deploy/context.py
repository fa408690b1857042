"""What a deploy step sees: the job, its repo, its clock and cancel flag, its output.

Steps (deploy/steps/) and reporters (deploy/reporters/) import this module, never the
pipeline that runs them.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from deployhook.config import Settings
from deployhook.deploy import compose, process
from deployhook.errors import StoreUnavailable
from deployhook.log import get_logger
from deployhook.models import Job, Trigger
from deployhook.registry import Repo
from deployhook.store import Store

logger = get_logger()

_FLUSH_S = 0.2
_FLUSH_LINES = 200
_MAX_LINE = 8192


class OutputCap:
    """Keeps a job's output within `limit` bytes: its beginning and its end.

    The first half of the budget is stored as it comes (and followed live). Past it, a
    line says so, and the newest lines are kept in memory, within the other half; when
    the job ends, a line says how much was left out and the kept end follows it, so the
    error a failed build ends with is never lost (docs/status.md).
    """

    def __init__(self, limit: int) -> None:
        self.head_budget = limit // 2
        self.tail_budget = limit - self.head_budget
        self.head_used = 0
        self.tail: collections.deque[tuple[float, str]] = collections.deque()
        self.tail_used = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def admit(self, ts: float, line: str) -> list[tuple[float, str]]:
        """The lines to store now for this new one."""
        size = len(line.encode("utf-8", "replace")) + 1
        if self.head_used + size <= self.head_budget:
            self.head_used += size
            return [(ts, line)]
        first_past = self.head_used <= self.head_budget
        self.head_used = self.head_budget + 1  # past the head for good
        self.tail.append((ts, line))
        self.tail_used += size
        while self.tail_used > self.tail_budget and self.tail:
            _, old = self.tail.popleft()
            old_size = len(old.encode("utf-8", "replace")) + 1
            self.tail_used -= old_size
            self.dropped_lines += 1
            self.dropped_bytes += old_size
        if first_past:
            return [
                (
                    ts,
                    f"[deployhook] output past {_size(self.head_budget)}: the rest is "
                    f"kept to its last {_size(self.tail_budget)}, shown when the job ends",
                )
            ]
        return []

    def end(self) -> list[tuple[float, str]]:
        """What to store when the job ends: how much was left out, then the kept end."""
        kept, self.tail, self.tail_used = list(self.tail), collections.deque(), 0
        if not self.dropped_lines:
            return kept
        note = (
            f"[deployhook] {self.dropped_lines} lines ({_size(self.dropped_bytes)}) of output "
            "were left out here; its end follows"
        )
        self.dropped_lines = self.dropped_bytes = 0
        return [(kept[0][0] if kept else time.time(), note), *kept]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


class JobOutput:
    """A job's output: lines with their times, written to the store as they come.

    A background flusher writes pending lines every fifth of a second, so a live log is
    never far behind and a crash loses at most that much. OutputCap bounds what is kept.
    """

    def __init__(self, store: Store, job_id: int, *, limit: int) -> None:
        self._store = store
        self._job_id = job_id
        self._cap = OutputCap(limit)
        self._pending: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._delayed = False  # the last flush could not be written
        self._thread = threading.Thread(
            target=self._flusher, name=f"job-{job_id}-output", daemon=True
        )
        self._thread.start()

    def __call__(self, line: str) -> None:
        text, now = line[:_MAX_LINE], time.time()
        with self._cond:
            # Late lines (a reporter's, after the job ended) are few: written as they are.
            self._pending.extend([(now, text)] if self._closed else self._cap.admit(now, text))
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
            except StoreUnavailable as exc:
                # Kept for the next flush (OutputCap bounds them): the store may be back.
                with self._cond:
                    self._pending[:0] = lines
                    first = not self._delayed
                    self._delayed = True
                if first:
                    logger.warning("job_output_delayed", lines=len(lines), error=str(exc))
            except Exception:  # the deploy must go on; the log line says what was lost
                logger.exception("job_output_lost", lines=len(lines))
            else:
                self._delayed = False

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
            self._pending.extend(self._cap.end())
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        self.flush()
        if self._pending:  # the store stayed away to the end
            logger.warning("job_output_lost", lines=len(self._pending))


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
    # The trigger whose rules the job follows (a retry: the job it retries).
    rules: Trigger = Trigger.PUSH
    changed: bool = False
    previous_sha: str | None = None
    # The commit the job was created for, when it deploys another (the branch head).
    pushed_sha: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def follows_branch(self) -> bool:
        """A push or reconcile job (or a retry of one): it deploys only what the branch has."""
        return self.rules in {Trigger.PUSH, Trigger.RECONCILE}

    def retarget(self, sha: str, *, note: str | None) -> None:
        """Deploy sha instead of the job's commit, and say so on the job (note)."""
        self.pushed_sha = self.pushed_sha or self.job.sha
        if note:
            self.output(f"==> {note}")
        self.job = self.store.retarget(self.job.id, repo=self.repo.name, sha=sha, note=note)

    def child_env(self) -> dict[str, str]:
        """The environment every child of this job runs with: never a secret of deployhook's
        or of any repo's (deploy/process.py), plus what hooks and compose files may use.

        So `image: app:${DEPLOYHOOK_SHA}` and build args work, and a hook's
        `docker compose exec` reaches this entry's project (docs/registry.md#hooks).
        """
        env = process.child_environ()
        job = self.job
        env.update(
            {
                "DEPLOYHOOK_REPO": self.repo.name,
                "DEPLOYHOOK_JOB": str(job.id),
                "DEPLOYHOOK_SHA": job.sha,
                "DEPLOYHOOK_PREVIOUS_SHA": self.previous_sha or "",
                "DEPLOYHOOK_REF": job.ref or "",
                "DEPLOYHOOK_TRIGGER": str(job.trigger),
            }
        )
        if self.repo.project_name:
            env["COMPOSE_PROJECT_NAME"] = self.repo.project_name
        if self.repo.compose_files:
            separator = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
            env["COMPOSE_FILE"] = separator.join(self.repo.compose_files)
        return env

    def run(self, argv: list[str], *, env: dict[str, str] | None = None) -> int:
        """Run a child process in the checkout, in its own group, output to the job log."""
        return process.run(
            argv,
            cwd=self.repo.path,
            output=self.output,
            deadline=self.deadline,
            cancel=self.cancel,
            env=self.child_env() if env is None else env,
            job_id=self.job.id,
            on_start=self._record_pgid,
        )

    def _record_pgid(self, pgid: int) -> None:
        """Note the group a dead worker's successor must stop; a store blip must not
        fail the deploy for it (the successor also finds the group in /proc)."""
        try:
            self.store.set_job_fields(self.job.id, pgid=pgid)
        except StoreUnavailable as exc:
            logger.warning("job_pgid_not_recorded", pgid=pgid, error=str(exc))

    def compose_base(self) -> tuple[str, ...]:
        return compose.command(self.settings.compose)


StepFn = Callable[[Context], None]


def always(_repo: Repo) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One row of a step table: the step's name in JOB.steps, when it applies, its work.

    run raises StepFailed (or a subclass) to fail the step; its message becomes the
    job's one-line error.
    """

    name: str
    run: StepFn
    applies: Callable[[Repo], bool] = always


class Reporter(Protocol):
    """Told when a job starts and ends (commit status, notifications). Never fails a job."""

    def started(self, ctx: Context) -> None: ...

    def finished(self, ctx: Context, job: Job) -> None: ...


def job_url(public_url: str | None, job_id: int) -> str | None:
    """The link to a job's page sent out (commit status, notifications), if a base is set."""
    return f"{public_url.rstrip('/')}/ui/jobs/{job_id}" if public_url else None
