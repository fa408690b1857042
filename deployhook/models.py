"""The values the store keeps and the API shows: jobs, steps, ledger rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"  # nothing to do (see the job's note): not a deploy

    @property
    def ended(self) -> bool:
        return self not in {Status.QUEUED, Status.RUNNING}


class Trigger(StrEnum):
    PUSH = "push"
    MANUAL = "manual"
    ROLLBACK = "rollback"
    RETRY = "retry"
    RECONCILE = "reconcile"


class DeliveryKind(StrEnum):
    """What a delivery is, once checked: a push to deploy, a ping, something ignored, or
    something refused."""

    PUSH = "push"
    PING = "ping"
    IGNORED = "ignored"
    REJECTED = "rejected"


class Outcome(StrEnum):
    """What became of one delivery, as the ledger records it."""

    QUEUED = "queued"
    COALESCED = "coalesced"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    HELD = "held"
    REJECTED = "rejected"


class Mode(StrEnum):
    """How a repo is deployed: `docker compose up`, or `docker stack deploy` to a swarm."""

    COMPOSE = "compose"
    SWARM = "swarm"


class OnLocalChanges(StrEnum):
    """What a deploy does with tracked files modified on the server."""

    FAIL = "fail"
    RESET = "reset"


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


def iso(ts: float | None) -> str | None:
    """Render an epoch timestamp as ISO 8601 UTC, or None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    status: StepStatus
    started_at: float | None
    finished_at: float | None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    repo: str
    status: Status
    trigger: Trigger
    sha: str
    ref: str | None
    delivery: str | None
    previous_sha: str | None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    worker: str | None = None
    node: str = ""
    repo_url: str | None = None
    cancel_requested: bool = False
    # One line: why it was skipped, or that it deployed the branch head instead of the
    # older pushed commit.
    note: str | None = None
    # A retry: the job it retries (and whose rules it follows).
    retry_of: int | None = None
    steps: tuple[Step, ...] = field(default=())
    # Where it runs: the worker's host, and its process group there (while running).
    host: str | None = None
    pgid: int | None = None
    # An automatic rollback: the failed job it rolls back from; and the other way round.
    rollback_of: int | None = None
    rolled_back_by: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return round(self.finished_at - self.started_at, 3)

    @property
    def commit_url(self) -> str | None:
        return f"{self.repo_url}/commit/{self.sha}" if self.repo_url else None

    def to_dict(self) -> dict[str, Any]:
        """The JOB shape of the HTTP contract."""
        return {
            "id": self.id,
            "repo": self.repo,
            "status": str(self.status),
            "trigger": str(self.trigger),
            "sha": self.sha,
            "ref": self.ref,
            "delivery": self.delivery,
            "previous_sha": self.previous_sha,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_s": self.duration_s,
            "error": self.error,
            "note": self.note,
            "steps": [s.to_dict() for s in self.steps],
            "rollback_of": self.rollback_of,
            "rolled_back_by": self.rolled_back_by,
        }


@dataclass(frozen=True, slots=True)
class Rollback:
    """A failed job's automatic rollback, to be queued as the job ends (docs/deploys.md
    rule 5): with the entry's ref and node as they are now."""

    ref: str | None
    node: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """One ledger row: a delivery and what became of it."""

    id: int
    repo: str
    delivery_id: str | None
    event: str | None
    received_at: float
    outcome: Outcome
    reason: str | None
    job: int | None
    http_status: int
    sha: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.delivery_id,
            "event": self.event,
            "received_at": iso(self.received_at),
            "outcome": str(self.outcome),
            "reason": self.reason,
            "job": self.job,
            "http_status": self.http_status,
            "sha": self.sha,
            "seq": self.id,
        }


@dataclass(frozen=True, slots=True)
class RepoState:
    """What the store knows of one repo beyond its jobs."""

    repo: str
    held: bool = False
    held_at: float | None = None
    held_sha: str | None = None
    held_ref: str | None = None
    held_delivery: str | None = None
    seen_head: str | None = None
    seen_at: float | None = None
    repo_url: str | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line of a job's output, with its time and its number in the store."""

    id: int
    ts: float
    line: str


# A job running this long past its repo's timeout is stuck: the worker kills a job at its
# timeout, and stopping it, the steps after and the reporters take far less than this.
JOB_STUCK_GRACE_S = 60.0
# A worker using this share of its file descriptor limit is near running out.
FD_WARN_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A deploy worker as the store knows it: where it runs and when it last beat."""

    id: str
    node: str
    host: str
    pid: int
    slots: int
    started_at: float
    heartbeat_at: float
    fds: int | None = None  # open file descriptors at its last beat, and its limit
    fd_limit: int | None = None


@dataclass(frozen=True, slots=True)
class RepoView:
    """What the store knows of one repo, read in one snapshot: state, jobs, queue."""

    state: RepoState
    deployed_sha: str | None
    good_job: Job | None
    last_job: Job | None
    queued: bool
    running: Job | None
    # The newest job that ended (the last job itself unless one is queued or running).
    last_ended: Job | None = None
    # When the deployed job is an automatic rollback: the failed job it rolled back from.
    rolled_back_from: Job | None = None


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job as a delivery's answer names it: enough to say which job and how it stood."""

    id: int
    status: Status
    repo: str
    sha: str

    @classmethod
    def of(cls, job: Job) -> JobRef:
        return cls(job.id, job.status, job.repo, job.sha)


@dataclass(frozen=True, slots=True)
class Decision:
    """What became of one delivery, as the ledger records it and the answer tells it.

    The web layer turns a decision into an HTTP answer (web/answers.py); nothing below it
    knows status codes or response bodies.
    """

    outcome: Outcome
    kind: DeliveryKind
    reason: str | None = None
    job: JobRef | None = None
    coalesced: bool = False
    # A rejection: the error that refused the delivery.
    error: Exception | None = field(default=None, compare=False)
    # A duplicate: what the first delivery with this id became.
    first: Decision | None = None

    def to_record(self) -> dict[str, Any]:
        """What the ledger keeps, so a duplicate can be answered like the first delivery."""
        record: dict[str, Any] = {
            "outcome": str(self.outcome),
            "kind": str(self.kind),
            "reason": self.reason,
            "coalesced": self.coalesced,
        }
        if self.job is not None:
            record["job"] = {
                "id": self.job.id,
                "status": str(self.job.status),
                "repo": self.job.repo,
                "sha": self.job.sha,
            }
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], *, outcome: Outcome) -> Decision:
        """Read a kept decision back; rows written before 0.2 hold the answer's body."""
        if "outcome" not in record:  # the JSON body that was sent: read what it says
            status = str(record.get("status"))
            job = None
            if isinstance(record.get("job"), int):
                job = JobRef(record["job"], Status(status), record["repo"], record["sha"])
            kind = DeliveryKind.PING if status == "pong" else DeliveryKind.PUSH
            if status == "ignored":
                kind = DeliveryKind.IGNORED
            return cls(
                outcome,
                kind,
                reason=record.get("reason"),
                job=job,
                coalesced=bool(record.get("coalesced")),
            )
        raw_job = record.get("job")
        return cls(
            Outcome(record["outcome"]),
            DeliveryKind(record["kind"]),
            reason=record.get("reason"),
            job=None
            if raw_job is None
            else JobRef(raw_job["id"], Status(raw_job["status"]), raw_job["repo"], raw_job["sha"]),
            coalesced=bool(record.get("coalesced")),
        )
