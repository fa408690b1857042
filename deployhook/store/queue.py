"""The queue: job rows, their atomic claim, steps, output and leases (docs/deploys.md)."""

from __future__ import annotations

from typing import Any

from deployhook.models import Job, LogLine, Rollback, Status, Step, StepStatus, Trigger
from deployhook.store import totals
from deployhook.store.backend import Row, Tx

# After this many interrupted runs of one sha in a row (the first and two retries), the
# repo stops retrying it: a deploy that kills its worker every time must not loop.
MAX_INTERRUPTED_RUNS = 3

# A job row with the id of the rollback that followed it, if any (migration 4).
_JOB = (
    "SELECT j.*, (SELECT r.id FROM jobs r WHERE r.rollback_of = j.id ORDER BY r.id LIMIT 1)"
    " AS rolled_back_by FROM jobs j"
)


def job_from_row(row: Row, steps: tuple[Step, ...] = ()) -> Job:
    return Job(
        id=int(row["id"]),
        repo=row["repo"],
        status=Status(row["status"]),
        trigger=Trigger(row["trigger"]),
        sha=row["sha"],
        ref=row["ref"],
        delivery=row["delivery"],
        previous_sha=row["previous_sha"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        worker=row["worker"],
        node=row["node"],
        repo_url=row["repo_url"],
        cancel_requested=bool(row["cancel_requested"]),
        steps=steps,
        host=row.get("host"),
        pgid=row.get("pgid"),
        note=row.get("note"),
        retry_of=row.get("retry_of"),
        rollback_of=row.get("rollback_of"),
        rolled_back_by=row.get("rolled_back_by"),
    )


def steps_of(tx: Tx, job_id: int) -> tuple[Step, ...]:
    rows = tx.all("SELECT * FROM job_steps WHERE job_id = :job ORDER BY idx", job=job_id)
    return tuple(
        Step(r["name"], StepStatus(r["status"]), r["started_at"], r["finished_at"], r["error"])
        for r in rows
    )


def get(tx: Tx, job_id: int) -> Job | None:
    row = tx.one(f"{_JOB} WHERE j.id = :id", id=job_id)
    return None if row is None else job_from_row(row, steps_of(tx, job_id))


def in_state(tx: Tx, repo: str, status: Status) -> Job | None:
    row = tx.one(
        "SELECT * FROM jobs WHERE repo = :repo AND status = :status", repo=repo, status=str(status)
    )
    return None if row is None else job_from_row(row)


def enqueue(
    tx: Tx,
    *,
    repo: str,
    sha: str,
    ref: str | None,
    trigger: Trigger,
    delivery: str | None,
    node: str,
    now: float,
    repo_url: str | None = None,
    join_running: bool = False,
    retry_of: int | None = None,
    rollback_of: int | None = None,
) -> tuple[Job, bool]:
    """Queue a deploy of sha, or join the repo's queued job (which takes sha and trigger).

    Returns the job and whether it was coalesced. With join_running, a running job of
    the same sha is joined too (a redelivered push must not deploy twice). A push or a
    reconcile never replaces a queued rollback with a commit whose last deploy failed
    (docs/deploys.md rule 3): it joins the rollback, which stays as it is. rollback_of:
    the failed job an automatic rollback rolls back from.
    """
    # The common case under a burst is one statement: the queued job takes the new sha.
    joined = tx.one(
        "UPDATE jobs SET sha = :sha, ref = :ref, trigger = :trigger, delivery = :delivery,"
        " node = :node, repo_url = COALESCE(:repo_url, repo_url), retry_of = :retry_of,"
        " rollback_of = :rollback_of WHERE repo = :repo AND status = 'queued'"
        " AND NOT (trigger = 'rollback' AND :follows_branch AND " + _LAST_FAILED + ")"
        " RETURNING *",
        rollback_of=rollback_of,
        sha=sha,
        ref=ref,
        trigger=str(trigger),
        delivery=delivery,
        node=node,
        repo_url=repo_url,
        repo=repo,
        retry_of=retry_of,
        follows_branch=trigger in {Trigger.PUSH, Trigger.RECONCILE},
    )
    if joined is not None:
        return job_from_row(joined), True
    if join_running:
        running = in_state(tx, repo, Status.RUNNING)
        if running is not None and running.sha == sha:
            return running, True
    row = tx.one(
        "INSERT INTO jobs (repo, status, trigger, sha, ref, delivery, created_at, node,"
        " repo_url, retry_of, rollback_of) VALUES (:repo, 'queued', :trigger, :sha, :ref,"
        " :delivery, :now, :node, :repo_url, :retry_of, :rollback_of)"
        " ON CONFLICT (repo) WHERE status = 'queued' DO NOTHING RETURNING *",
        rollback_of=rollback_of,
        repo=repo,
        trigger=str(trigger),
        sha=sha,
        ref=ref,
        delivery=delivery,
        now=now,
        node=node,
        repo_url=repo_url,
        retry_of=retry_of,
    )
    if row is None:  # a queued rollback kept its commit: the push joins it as it is
        kept = in_state(tx, repo, Status.QUEUED)
        assert kept is not None
        return kept, True
    return job_from_row(row), False


# True when the newest succeeded-or-failed job of :repo with :sha failed.
_LAST_FAILED = (
    "COALESCE((SELECT f.status FROM jobs f WHERE f.repo = :repo AND f.sha = :sha"
    " AND f.status IN ('succeeded', 'failed') ORDER BY f.id DESC LIMIT 1), '') = 'failed'"
)


def failed_and_rolled_back(tx: Tx, repo: str, sha: str) -> bool:
    """True if sha's last deploy failed and a rollback succeeded after it."""
    row = tx.one(
        "SELECT f.id FROM jobs f WHERE f.repo = :repo AND f.sha = :sha"
        " AND f.status IN ('succeeded', 'failed') ORDER BY f.id DESC LIMIT 1",
        repo=repo,
        sha=sha,
    )
    if row is None:
        return False
    return (
        tx.one(
            "SELECT 1 AS rolled FROM jobs f, jobs r WHERE f.id = :failed AND f.status = 'failed'"
            " AND r.repo = :repo AND r.trigger = 'rollback' AND r.status = 'succeeded'"
            " AND r.id > f.id LIMIT 1",
            failed=row["id"],
            repo=repo,
        )
        is not None
    )


def rules_of(tx: Tx, job: Job) -> Trigger:
    """The trigger whose rules a job follows: a retry follows the job it retries."""
    seen = 0
    while job.trigger == Trigger.RETRY and job.retry_of is not None and seen < 10:
        original = get(tx, job.retry_of)
        if original is None:
            return Trigger.PUSH  # pruned: the stricter rules
        job, seen = original, seen + 1
    return Trigger.PUSH if job.trigger == Trigger.RETRY else job.trigger


def enqueue_if_idle(
    tx: Tx,
    *,
    repo: str,
    sha: str,
    ref: str | None,
    trigger: Trigger,
    node: str,
    now: float,
    repo_url: str | None = None,
    retry_of: int | None = None,
    rollback_of: int | None = None,
) -> Job | None:
    """Queue a follow-up job (rollback, retry) unless a newer job is already queued."""
    if in_state(tx, repo, Status.QUEUED) is not None:
        return None
    job, _ = enqueue(
        tx,
        repo=repo,
        sha=sha,
        ref=ref,
        trigger=trigger,
        delivery=None,
        node=node,
        now=now,
        repo_url=repo_url,
        retry_of=retry_of,
        rollback_of=rollback_of,
    )
    return job


def roll_back(tx: Tx, job_id: int, rollback: Rollback, now: float) -> Job | None:
    """Queue the failed job's rollback to the newest good commit other than its own,
    unless a newer job is queued (docs/deploys.md rule 5)."""
    job = get(tx, job_id)
    target = None if job is None else newest_good_sha(tx, job.repo)
    if job is None or target is None or target == job.sha:
        return None
    return enqueue_if_idle(
        tx,
        repo=job.repo,
        sha=target,
        ref=rollback.ref,
        trigger=Trigger.ROLLBACK,
        node=rollback.node,
        now=now,
        repo_url=job.repo_url,
        rollback_of=job.id,
    )


def claim(
    tx: Tx,
    *,
    worker: str,
    node: str,
    host: str,
    lease_s: float,
    now: float,
    skip_locked: bool = False,
    exclude: tuple[str, ...] = (),
) -> Job | None:
    """Atomically take the oldest queued job whose repo has no running job."""
    params: dict[str, Any] = {"node": node}
    not_in = ""
    if exclude:
        names = {f"x{i}": name for i, name in enumerate(exclude)}
        not_in = " AND j.repo NOT IN (" + ", ".join(f":{k}" for k in names) + ")"
        params.update(names)
    row = tx.one(
        "SELECT j.id FROM jobs j WHERE j.status = 'queued' AND j.node = :node"
        + not_in
        + " AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.repo = j.repo AND r.status = 'running')"
        " ORDER BY j.id LIMIT 1" + (" FOR UPDATE SKIP LOCKED" if skip_locked else ""),
        **params,
    )
    if row is None:
        return None
    tx.run(
        "UPDATE jobs SET status = 'running', started_at = :now, worker = :worker,"
        " host = :host, lease_until = :lease WHERE id = :id AND status = 'queued'",
        now=now,
        worker=worker,
        host=host,
        lease=now + lease_s,
        id=row["id"],
    )
    job = get(tx, int(row["id"]))
    assert job is not None
    tx.run("UPDATE repo_state SET problem = NULL WHERE repo = :repo", repo=job.repo)
    return job


def renew(tx: Tx, *, worker: str, job_ids: list[int], lease_s: float, now: float) -> set[int]:
    """Extend the leases of a worker's running jobs; return the ids an admin cancelled."""
    cancelled: set[int] = set()
    for job_id in job_ids:
        row = tx.one(
            "UPDATE jobs SET lease_until = :lease WHERE id = :id AND worker = :worker"
            " AND status = 'running' RETURNING cancel_requested",
            lease=now + lease_s,
            id=job_id,
            worker=worker,
        )
        if row is not None and row["cancel_requested"]:
            cancelled.add(job_id)
    return cancelled


def set_fields(tx: Tx, job_id: int, **fields: Any) -> None:
    allowed = {"previous_sha", "pgid", "error", "sha", "note"}
    assert set(fields) <= allowed, fields
    assignments = ", ".join(f"{k} = :{k}" for k in fields)
    tx.run(f"UPDATE jobs SET {assignments} WHERE id = :id", id=job_id, **fields)


def finish(
    tx: Tx, job_id: int, *, status: Status, error: str | None, now: float, worker: str | None = None
) -> bool:
    """End a running (or queued) job; False if it had already ended (e.g. expired lease)."""
    owner = " AND worker = :worker" if worker else ""
    count = tx.run(
        "UPDATE jobs SET status = :status, error = :error, finished_at = :now,"
        " lease_until = NULL, pgid = NULL WHERE id = :id AND status IN ('queued', 'running')"
        + owner,
        status=str(status),
        error=error,
        now=now,
        id=job_id,
        worker=worker,
    )
    if count:
        tx.run(
            "UPDATE job_steps SET status = 'failed', finished_at = :now"
            " WHERE job_id = :id AND status = 'running'",
            now=now,
            id=job_id,
        )
    return bool(count)


def start_step(tx: Tx, job_id: int, name: str, *, now: float) -> int:
    idx = int(tx.value("SELECT COUNT(*) FROM job_steps WHERE job_id = :id", id=job_id) or 0)
    tx.run(
        "INSERT INTO job_steps (job_id, idx, name, status, started_at)"
        " VALUES (:id, :idx, :name, 'running', :now)",
        id=job_id,
        idx=idx,
        name=name,
        now=now,
    )
    return idx


def finish_step(
    tx: Tx, job_id: int, idx: int, *, status: StepStatus, error: str | None, now: float
) -> None:
    tx.run(
        "UPDATE job_steps SET status = :status, error = :error, finished_at = :now"
        " WHERE job_id = :id AND idx = :idx",
        status=str(status),
        error=error,
        now=now,
        id=job_id,
        idx=idx,
    )


def append_log(tx: Tx, job_id: int, lines: list[tuple[float, str]]) -> None:
    tx.many(
        "INSERT INTO job_log (job_id, ts, line) VALUES (:job, :ts, :line)",
        [{"job": job_id, "ts": ts, "line": line} for ts, line in lines],
    )


def interrupt(tx: Tx, job: Job, *, reason: str, now: float) -> Job | None:
    """End a job whose worker died; queue a retry of its sha unless that would loop.

    Returns the retry job, if one was queued.
    """
    if not finish(tx, job.id, status=Status.INTERRUPTED, error=reason, now=now):
        return None
    recent = tx.all(
        "SELECT status, sha FROM jobs WHERE repo = :repo AND status NOT IN"
        " ('queued', 'running') ORDER BY id DESC LIMIT :n",
        repo=job.repo,
        n=MAX_INTERRUPTED_RUNS,
    )
    if len(recent) == MAX_INTERRUPTED_RUNS and all(
        r["status"] == Status.INTERRUPTED and r["sha"] == job.sha for r in recent
    ):
        tx.run(
            "INSERT INTO repo_state (repo) VALUES (:repo) ON CONFLICT (repo) DO NOTHING",
            repo=job.repo,
        )
        tx.run(
            "UPDATE repo_state SET problem = :problem WHERE repo = :repo",
            repo=job.repo,
            problem=f"{job.sha[:12]} was interrupted {MAX_INTERRUPTED_RUNS} times in a row;"
            " not retried again (deploy it by hand once the cause is fixed)",
        )
        return None
    return enqueue_if_idle(
        tx,
        repo=job.repo,
        sha=job.sha,
        ref=job.ref,
        trigger=Trigger.RETRY,
        node=job.node,
        now=now,
        repo_url=job.repo_url,
        retry_of=job.id,
    )


def orphaned(tx: Tx, *, now: float) -> list[Job]:
    """Running jobs whose lease has expired."""
    rows = tx.all("SELECT * FROM jobs WHERE status = 'running' AND lease_until < :now", now=now)
    return [job_from_row(r) for r in rows]


def waiting(tx: Tx, *, since: float) -> list[Job]:
    """Queued jobs created before `since`, oldest first."""
    rows = tx.all(
        "SELECT * FROM jobs WHERE status = 'queued' AND created_at < :since ORDER BY id",
        since=since,
    )
    return [job_from_row(r) for r in rows]


def running(tx: Tx) -> list[Job]:
    return [job_from_row(r) for r in tx.all("SELECT * FROM jobs WHERE status = 'running'")]


def newest_good_sha(tx: Tx, repo: str, *, other_than: str | None = None) -> str | None:
    row = tx.one(
        "SELECT sha FROM jobs WHERE repo = :repo AND status = 'succeeded'"
        " AND (CAST(:other AS TEXT) IS NULL OR sha <> :other)"
        " ORDER BY finished_at DESC, id DESC LIMIT 1",
        repo=repo,
        other=other_than,
    )
    return None if row is None else str(row["sha"])


def history(tx: Tx, repo: str, *, limit: int, shown: bool = False) -> list[Job]:
    """The repo's newest jobs. shown: only those that say its state (not skipped ones)."""
    rows = tx.all(
        f"{_JOB} WHERE j.repo = :repo"
        + (" AND j.status <> 'skipped'" if shown else "")
        + " ORDER BY j.id DESC LIMIT :limit",
        repo=repo,
        limit=limit,
    )
    return [job_from_row(r, steps_of(tx, int(r["id"]))) for r in rows]


def log_lines(tx: Tx, job_id: int, *, after: int = 0, limit: int = 5000) -> list[LogLine]:
    rows = tx.all(
        "SELECT id, ts, line FROM job_log WHERE job_id = :job AND id > :after"
        " ORDER BY id LIMIT :limit",
        job=job_id,
        after=after,
        limit=limit,
    )
    return [LogLine(int(r["id"]), float(r["ts"]), str(r["line"])) for r in rows]


def prune(tx: Tx, repo: str, *, keep: int) -> int:
    """Drop all but the newest `keep` ended jobs of a repo, never its last good one.

    What is dropped is added to the pruned totals first, so counters stay monotonic.
    """
    keep_good = tx.value(
        "SELECT id FROM jobs WHERE repo = :repo AND status = 'succeeded'"
        " ORDER BY finished_at DESC, id DESC LIMIT 1",
        repo=repo,
    )
    rows = tx.all(
        "SELECT id, repo, status, started_at, finished_at FROM jobs"
        " WHERE repo = :repo AND status NOT IN ('queued', 'running')"
        " ORDER BY id DESC",
        repo=repo,
    )
    doomed_rows = [r for r in rows[keep:] if r["id"] != keep_good]
    totals.add(tx, totals.count_jobs(doomed_rows))
    doomed = [int(r["id"]) for r in doomed_rows]
    for job_id in doomed:
        tx.run("DELETE FROM job_log WHERE job_id = :id", id=job_id)
        tx.run("DELETE FROM job_steps WHERE job_id = :id", id=job_id)
        tx.run("DELETE FROM jobs WHERE id = :id", id=job_id)
    return len(doomed)


def newest_good(tx: Tx, repo: str) -> Job | None:
    """The repo's newest succeeded job: what is deployed now."""
    row = tx.one(
        f"{_JOB} WHERE j.repo = :repo AND j.status = 'succeeded'"
        " ORDER BY j.finished_at DESC, j.id DESC LIMIT 1",
        repo=repo,
    )
    return None if row is None else job_from_row(row)


def last_ended(tx: Tx, repo: str) -> Job | None:
    """The repo's newest job that has ended, whatever came of it (a skipped job is no
    deploy: it says nothing of the repo's state)."""
    row = tx.one(
        f"{_JOB} WHERE j.repo = :repo AND j.status NOT IN ('queued', 'running', 'skipped')"
        " ORDER BY j.id DESC LIMIT 1",
        repo=repo,
    )
    return None if row is None else job_from_row(row)


def status_of(tx: Tx, job_id: int) -> Status | None:
    value = tx.value("SELECT status FROM jobs WHERE id = :id", id=job_id)
    return None if value is None else Status(value)
