"""One line per repo: what the status page, its JSON feed and `deployhook status` show."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from deployhook.models import Job, RepoView, Status, Step, StepStatus, Trigger, iso
from deployhook.registry import Repo

NEVER = "never"
ROLLED_BACK = "rolled_back"


def label(state: str) -> str:
    """A state as people read it: 'rolled back' for rolled_back."""
    return state.replace("_", " ")


@dataclass(frozen=True, slots=True)
class RepoSummary:
    """A repo's state at a glance: its last deploy, what is deployed, what waits."""

    repo: str
    branch: str
    status: str  # the last job's status, or "never"
    held: bool
    queued: bool
    last_job: Job | None
    running: Job | None
    deployed_sha: str | None
    deployed_url: str | None
    deployed_at: float | None
    problem: str | None
    good_job: Job | None = None  # the deployed one: the newest that succeeded
    last_ended: Job | None = None
    rolled_back_from: Job | None = None  # the failed job, when good_job rolled it back

    @property
    def rolled_back(self) -> bool:
        """The deployed commit came back by a rollback, and no newer one deployed since."""
        return self.good_job is not None and self.good_job.trigger == Trigger.ROLLBACK

    @property
    def state(self) -> str:
        """What the repo is doing or what last came of it (docs/status.md).

        A job running or queued first; then a failure (the news); then "rolled_back"
        until a good deploy of another commit; else the last job's status, or "never".
        """
        if self.running is not None:
            return str(Status.RUNNING)
        if self.queued:
            return str(Status.QUEUED)
        last = self.last_job
        if last is None:
            return NEVER
        if last.status in {Status.FAILED, Status.INTERRUPTED}:
            return str(last.status)
        if self.rolled_back:
            return ROLLED_BACK
        return str(last.status)

    @property
    def error(self) -> str | None:
        """The error the repo's line shows: its problem, the last failure, or the one
        a rollback undid."""
        if self.problem:
            return self.problem
        ended = self.last_ended
        if ended is not None and ended.status != Status.SUCCEEDED and ended.error:
            return ended.error
        if self.rolled_back and self.rolled_back_from is not None:
            return self.rolled_back_from.error
        return None

    @property
    def rollback_note(self) -> str | None:
        """One line on the rollback that put the deployed commit back, or None."""
        good = self.good_job
        if not self.rolled_back or good is None:
            return None
        failed = self.rolled_back_from
        if failed is None:
            return f"rolled back to {good.sha[:10]} (job {good.id}) by an admin"
        return (
            f"rolled back to {good.sha[:10]} (job {good.id}) after job {failed.id} "
            f"failed to deploy {failed.sha[:10]}"
        )

    @property
    def when(self) -> float | None:
        """When the last job last changed: its end, start or creation."""
        job = self.last_job
        if job is None:
            return None
        return job.finished_at or job.started_at or job.created_at

    @property
    def current_step(self) -> str | None:
        steps: tuple[Step, ...] = self.running.steps if self.running else ()
        active = [s.name for s in steps if s.status == StepStatus.RUNNING]
        return active[-1] if active else None

    def to_dict(self) -> dict[str, Any]:
        last = self.last_job
        return {
            "repo": self.repo,
            "branch": self.branch,
            "status": self.status,
            "state": self.state,
            "held": self.held,
            "queued": 1 if self.queued else 0,
            "running": self.running.id if self.running else None,
            "current_step": self.current_step,
            "deployed_sha": self.deployed_sha,
            "deployed_url": self.deployed_url,
            "deployed_at": iso(self.deployed_at),
            "last_job": None
            if last is None
            else {
                "id": last.id,
                "status": str(last.status),
                "trigger": str(last.trigger),
                "sha": last.sha,
                "commit_url": last.commit_url,
                "created_at": iso(last.created_at),
                "started_at": iso(last.started_at),
                "finished_at": iso(last.finished_at),
                "duration_s": last.duration_s,
                "error": last.error,
                "rollback_of": last.rollback_of,
                "rolled_back_by": last.rolled_back_by,
            },
            "when": iso(self.when),
            "problem": self.problem,
            "error": self.error,
            "rolled_back": self._rolled_back_dict(),
        }

    def _rolled_back_dict(self) -> dict[str, Any] | None:
        good, failed = self.good_job, self.rolled_back_from
        if not self.rolled_back or good is None:
            return None
        return {
            "job": good.id,
            "sha": good.sha,
            "url": self.deployed_url,
            "at": iso(good.finished_at),
            "failed_job": failed.id if failed else None,
            "failed_sha": failed.sha if failed else None,
            "failed_url": failed.commit_url if failed else None,
            "error": failed.error if failed else None,
            "note": self.rollback_note,
        }


def summarize(repo: Repo, view: RepoView) -> RepoSummary:
    """A repo's line, from what the store knows of it."""
    state, last, good = view.state, view.last_job, view.good_job
    url = None
    if good is not None:
        url = good.commit_url or (f"{state.repo_url}/commit/{good.sha}" if state.repo_url else None)
    return RepoSummary(
        repo=repo.name,
        branch=repo.branch,
        status=str(last.status) if last else NEVER,
        held=state.held,
        queued=view.queued,
        last_job=last,
        running=view.running,
        deployed_sha=view.deployed_sha,
        deployed_url=url,
        deployed_at=good.finished_at if good else None,
        problem=state.problem,
        good_job=good,
        last_ended=view.last_ended,
        rolled_back_from=view.rolled_back_from,
    )


def ago(ts: float | None, *, now: float | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' (the page's JS says the same)."""
    if ts is None:
        return "—"
    delta = max(0, int((time.time() if now is None else now) - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if delta >= size:
            return f"{delta // size} {unit} ago"
    return f"{delta} s ago"


def duration(seconds: float | None) -> str:
    """'42 s', '3 min 12 s', '1 h 4 min'."""
    if seconds is None:
        return "—"
    total = round(seconds)
    if total < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{total} s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
