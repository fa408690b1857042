"""The store: the delivery ledger and the job queue, shared by every process.

The store *is* the queue. Web processes, the deploy worker and the CLI all open it;
every change is one transaction under the store's write lock, so the rules of
docs/deploys.md (rules 1-2) hold across processes.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from deployhook import redact
from deployhook.config import Settings
from deployhook.errors import Conflict, StoreUnavailable, UnknownJob
from deployhook.log import get_logger
from deployhook.models import (
    Decision,
    Delivery,
    Job,
    LogLine,
    RepoState,
    RepoView,
    Rollback,
    Status,
    StepStatus,
    Trigger,
    WorkerInfo,
)
from deployhook.store import ledger, queue, totals, workers
from deployhook.store.backend import Backend, Tx, Waiter
from deployhook.store.group import GroupCommit
from deployhook.store.ledger import CheckedDelivery

log = get_logger()

__all__ = ["CheckedDelivery", "Store", "Tx", "open_store", "persist"]

T = TypeVar("T")

# How long a write that must not be lost (a job's step, its end) is tried again while
# the store is away: a database restart or a blip passes, a real outage does not.
PERSIST_S = 10.0
_PERSIST_PAUSES_S = (0.1, 0.25, 0.5, 1.0)


def persist(write: Callable[[], T], *, within: float = PERSIST_S) -> T:
    """Run write(); while it raises StoreUnavailable, try again for `within` seconds.

    Only for writes that are safe to repeat after a failed attempt (a failed transaction
    changed nothing).
    """
    end = time.monotonic() + within
    for attempt in itertools.count():
        try:
            return write()
        except StoreUnavailable as exc:
            pause = _PERSIST_PAUSES_S[min(attempt, len(_PERSIST_PAUSES_S) - 1)]
            if time.monotonic() + pause > end:
                raise
            log.warning("store_write_retried", error=str(exc), attempt=attempt + 1)
            time.sleep(pause)
    raise AssertionError("unreachable")


# Job ids are 64-bit integers in both backends: an id past that range (a request can
# name any) is no job, not an error of the database.
MAX_ID = 2**63 - 1


def _known_id(job_id: int) -> int:
    if not 0 < job_id <= MAX_ID:
        raise UnknownJob(f"no job {job_id}")
    return job_id


# /healthz asks whether the store takes writes; the answer (from a probe, or from a real
# write of this process) is trusted for this long, so a flood of /healthz costs one probe
# a second per process, not one each.
WRITABLE_FRESH_S = 1.0


class _Writability:
    """The newest sign of whether the store takes writes: a probe, or a real write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._probing = False
        self._at = float("-inf")
        self._error: str | None = None

    def saw(self, error: str | None) -> None:
        """Record a write's outcome (None: it committed)."""
        self._at, self._error = time.monotonic(), error

    def check(self, probe: Callable[[], str | None]) -> str | None:
        """The fresh answer, else probe (one thread at a time; the others get the last)."""
        with self._lock:
            if time.monotonic() - self._at < WRITABLE_FRESH_S or self._probing:
                return self._error
            self._probing = True
        try:
            error = probe()
            self.saw(error)
            return error
        finally:
            with self._lock:
                self._probing = False


class Store:
    """Domain operations on the ledger and the queue, each one transaction."""

    def __init__(self, backend: Backend, *, limits: ledger.Limits | None = None) -> None:
        self.backend = backend
        self._writability = _Writability()
        self._group = GroupCommit(
            backend,
            on_job=backend.wake,
            on_outcome=self._writability.saw,
            ledger=ledger.Ledger(limits or ledger.Limits()),
        )
        self._schema_ready = False
        self._schema_tried_at = 0.0
        self._schema_error: str | None = None
        self.host = socket.gethostname()

    def migrate(self) -> int:
        version = self.backend.migrate()
        self._schema_ready = True
        return version

    def migrate_or_defer(self) -> None:
        """Migrate now; a store that cannot be written yet is retried on first use."""
        try:
            self.migrate()
        except StoreUnavailable as exc:
            log.error("store_unavailable", error=str(exc))
            self._schema_error = str(exc)
            self._schema_tried_at = time.monotonic()

    def wake(self) -> None:
        """Tell idle workers a job may be claimable (best effort, never blocks)."""
        self.backend.wake()

    def waiter(self) -> Waiter:
        """A handle a worker blocks on between claims, woken by wake()."""
        return self.backend.waiter()

    def _ensure_schema(self) -> None:
        """Migrate now if that failed at start (a read-only or full disk): retry, at most
        once a second, so a store that comes back is used without a restart."""
        if self._schema_ready:
            return
        now = time.monotonic()
        if now - self._schema_tried_at < 1.0 and self._schema_error:
            raise StoreUnavailable(self._schema_error)
        self._schema_tried_at = now
        try:
            self.migrate()
        except StoreUnavailable as exc:
            self._schema_error = str(exc)
            raise

    @contextlib.contextmanager
    def _write(self) -> Iterator[Tx]:
        self._ensure_schema()
        try:
            with self.backend.write() as tx:
                yield tx
        except StoreUnavailable as exc:
            self._writability.saw(str(exc))
            raise
        self._writability.saw(None)

    def _read(self) -> Any:
        # A store that cannot be written may still be read (status pages while the disk
        # is read-only); if its schema is missing, the read itself says so.
        with contextlib.suppress(StoreUnavailable):
            self._ensure_schema()
        return self.backend.read()

    def close(self) -> None:
        self.backend.close()

    def read(self) -> Any:
        return self._read()

    def write(self) -> Any:
        return self._write()

    # -- intake ------------------------------------------------------------------

    def submit(self, item: CheckedDelivery) -> Decision:
        """Admit a delivery durably; return what became of it once it is committed."""
        self._ensure_schema()
        return self._group.submit(item)

    def record_rejection(self, item: CheckedDelivery) -> None:
        """Add a rejected delivery to the ledger; its answer stands even if that fails."""
        try:
            self._ensure_schema()
            self._group.submit(item)
        except StoreUnavailable as exc:
            log.warning("delivery_not_recorded", repo=item.repo, error=str(exc))

    # -- jobs ----------------------------------------------------------------------

    def enqueue(
        self,
        *,
        repo: str,
        sha: str,
        ref: str | None,
        trigger: Trigger,
        node: str,
        delivery: str | None = None,
        repo_url: str | None = None,
        remote_head: bool = False,
    ) -> tuple[Job, bool]:
        """Queue a deploy (or join the queued one); wakes the worker.

        remote_head: sha is the remote branch head just read, so reconcile need not
        deploy it again.
        """
        now = time.time()
        with self._write() as tx:
            if remote_head:
                ledger.see_head(tx, repo, sha, now=now)
            job, coalesced = queue.enqueue(
                tx,
                repo=repo,
                sha=sha,
                ref=ref,
                trigger=trigger,
                delivery=delivery,
                node=node,
                now=now,
                repo_url=repo_url,
            )
        self.backend.wake()
        return job, coalesced

    def job(self, job_id: int) -> Job:
        _known_id(job_id)
        with self._read() as tx:
            job = queue.get(tx, job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id}")
        return job

    def jobs(self, repo: str, *, limit: int = 20) -> list[Job]:
        with self._read() as tx:
            return queue.history(tx, repo, limit=limit)

    def active_jobs(self, repo: str) -> list[Job]:
        """The repo's queued and running jobs (at most one of each)."""
        with self._read() as tx:
            found = [queue.in_state(tx, repo, s) for s in (Status.RUNNING, Status.QUEUED)]
        return [job for job in found if job is not None]

    def deliveries(
        self, repo: str, *, limit: int = 50, before: int | None = None
    ) -> list[Delivery]:
        with self._read() as tx:
            return ledger.deliveries(tx, repo, limit=limit, before=before)

    def overview(self, repo: str) -> RepoView:
        """What the store knows of one repo: state, deployed sha, last job, queue."""
        [view] = self.overviews([repo])
        return view

    def overviews(self, repos: list[str]) -> list[RepoView]:
        """Each repo's view, all in one snapshot."""
        with self._read() as tx:
            return [self._view(tx, repo) for repo in repos]

    @staticmethod
    def _view(tx: Tx, repo: str) -> RepoView:
        last = queue.history(tx, repo, limit=1, shown=True)
        running = queue.in_state(tx, repo, Status.RUNNING)
        good = queue.newest_good(tx, repo)
        ended = last[0] if last and last[0].status.ended else queue.last_ended(tx, repo)
        rolled_back_from = None
        if good is not None and good.trigger == Trigger.ROLLBACK and good.rollback_of:
            rolled_back_from = queue.get(tx, good.rollback_of)
        return RepoView(
            state=ledger.state(tx, repo),
            deployed_sha=good.sha if good else None,
            good_job=good,
            last_job=last[0] if last else None,
            queued=queue.in_state(tx, repo, Status.QUEUED) is not None,
            running=queue.get(tx, running.id) if running else None,
            last_ended=ended,
            rolled_back_from=rolled_back_from,
        )

    def tail(
        self, job_id: int, *, after: int = 0, limit: int = 5000
    ) -> tuple[Status | None, list[LogLine]]:
        """The job's status, then its output lines past `after`, in one snapshot.

        Status is read first: once it says ended, every line written before the end
        is among the lines returned. None: no such job.
        """
        if not 0 < job_id <= MAX_ID:
            return None, []
        after = min(after, MAX_ID)
        with self._read() as tx:
            status = queue.status_of(tx, job_id)
            return status, queue.log_lines(tx, job_id, after=after, limit=limit)

    def metrics_snapshot(self) -> totals.Snapshot:
        with self._read() as tx:
            return totals.snapshot(tx)

    def repo_state(self, repo: str) -> RepoState:
        with self._read() as tx:
            return ledger.state(tx, repo)

    def newest_good_sha(self, repo: str, *, other_than: str | None = None) -> str | None:
        with self._read() as tx:
            return queue.newest_good_sha(tx, repo, other_than=other_than)

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job now, or ask a running one's worker to stop it."""
        _known_id(job_id)
        with self._write() as tx:
            job = queue.get(tx, job_id)
            if job is None:
                raise UnknownJob(f"no job {job_id}")
            if job.status.ended:
                raise Conflict(f"job {job_id} already ended ({job.status})")
            if job.status == Status.QUEUED:
                queue.finish(
                    tx,
                    job_id,
                    status=Status.CANCELLED,
                    error="cancelled by an admin",
                    now=time.time(),
                )
            else:
                tx.run("UPDATE jobs SET cancel_requested = 1 WHERE id = :id", id=job_id)
            job = queue.get(tx, job_id)
        assert job is not None
        return job

    def hold(self, repo: str) -> RepoState:
        with self._write() as tx:
            return ledger.set_hold(tx, repo, held=True, now=time.time())

    def release(self, repo: str, *, node: str) -> Job | None:
        """Lift a hold; queue the newest push that arrived while held, if any."""
        now = time.time()
        with self._write() as tx:
            state = ledger.state(tx, repo)
            ledger.set_hold(tx, repo, held=False, now=now)
            if not state.held_sha:
                return None
            job, _ = queue.enqueue(
                tx,
                repo=repo,
                sha=state.held_sha,
                ref=state.held_ref,
                trigger=Trigger.PUSH,
                delivery=state.held_delivery,
                node=node,
                now=now,
                repo_url=state.repo_url,
            )
        self.backend.wake()
        return job

    def see_head(self, repo: str, sha: str) -> None:
        with self._write() as tx:
            ledger.see_head(tx, repo, sha, now=time.time())

    # -- the worker's side ----------------------------------------------------------

    def claim(
        self, *, worker: str, node: str, lease_s: float, exclude: tuple[str, ...] = ()
    ) -> Job | None:
        with self._write() as tx:
            return queue.claim(
                tx,
                worker=worker,
                node=node,
                host=self.host,
                lease_s=lease_s,
                now=time.time(),
                skip_locked=self.backend.skip_locked,
                exclude=exclude,
            )

    def renew(self, *, worker: str, job_ids: list[int], lease_s: float) -> set[int]:
        with self._write() as tx:
            return queue.renew(tx, worker=worker, job_ids=job_ids, lease_s=lease_s, now=time.time())

    def retarget(self, job_id: int, *, repo: str, sha: str, note: str | None) -> Job:
        """Make a job deploy sha instead (the branch head past its pushed commit).

        The head counts as seen: reconcile need not deploy it again.
        """
        with self._write() as tx:
            queue.set_fields(tx, job_id, sha=sha, note=redact.mask(note) if note else None)
            ledger.see_head(tx, repo, sha, now=time.time())
            job = queue.get(tx, job_id)
        assert job is not None
        return job

    def failed_and_rolled_back(self, repo: str, sha: str) -> bool:
        """True if sha's last deploy failed and the repo was rolled back after it."""
        with self._read() as tx:
            return queue.failed_and_rolled_back(tx, repo, sha)

    def rules_of(self, job: Job) -> Trigger:
        """The trigger whose rules a job follows (a retry: the job it retries)."""
        with self._read() as tx:
            return queue.rules_of(tx, job)

    def set_job_fields(self, job_id: int, **fields: Any) -> None:
        if fields.get("error"):
            fields["error"] = redact.mask(fields["error"])
        with self._write() as tx:
            queue.set_fields(tx, job_id, **fields)

    def start_step(self, job_id: int, name: str) -> int:
        with self._write() as tx:
            return queue.start_step(tx, job_id, name, now=time.time())

    def finish_step(
        self, job_id: int, idx: int, *, status: StepStatus, error: str | None = None
    ) -> None:
        error = redact.mask(error) if error else error
        with self._write() as tx:
            queue.finish_step(tx, job_id, idx, status=status, error=error, now=time.time())

    def append_log(self, job_id: int, lines: list[tuple[float, str]]) -> None:
        """Add output lines; what a deploy prints is stored with every secret masked."""
        lines = [(ts, redact.mask(line)) for ts, line in lines]
        if lines:
            with self._write() as tx:
                queue.append_log(tx, job_id, lines)

    def log_lines(self, job_id: int, *, after: int = 0, limit: int = 5000) -> list[LogLine]:
        if not 0 < job_id <= MAX_ID:
            return []
        after = min(after, MAX_ID)
        with self._read() as tx:
            return queue.log_lines(tx, job_id, after=after, limit=limit)

    def finish(
        self,
        job_id: int,
        *,
        status: Status,
        error: str | None,
        worker: str | None = None,
        note: str | None = None,
        rollback: Rollback | None = None,
    ) -> bool:
        """End a job; False if it had already ended (its lease expired, say).

        rollback: also queue the job's rollback to the repo's newest good commit, unless a
        newer job is queued or there is none, in the same transaction: no moment (nor a
        crash) shows the failure without its rollback queued.
        """
        error = redact.mask(error) if error else error
        now = time.time()
        with self._write() as tx:
            ended = queue.finish(tx, job_id, status=status, error=error, now=now, worker=worker)
            if ended and note:
                queue.set_fields(tx, job_id, note=redact.mask(note))
            queued = ended and rollback is not None and queue.roll_back(tx, job_id, rollback, now)
        if queued:
            self.backend.wake()
        return ended

    def interrupt(self, job: Job, *, reason: str) -> Job | None:
        reason = redact.mask(reason)
        with self._write() as tx:
            retry = queue.interrupt(tx, job, reason=reason, now=time.time())
        if retry is not None:
            self.backend.wake()
        return retry

    def running_jobs(self) -> list[Job]:
        with self._read() as tx:
            return queue.running(tx)

    def waiting_jobs(self, *, since: float) -> list[Job]:
        """Queued jobs created before `since` (wall time)."""
        with self._read() as tx:
            return queue.waiting(tx, since=since)

    def expired_jobs(self) -> list[Job]:
        with self._read() as tx:
            return queue.orphaned(tx, now=time.time())

    def prune_jobs(self, repo: str, *, keep: int) -> int:
        """Keep a repo's newest `keep` ended jobs (and the last good one)."""
        with self._write() as tx:
            return queue.prune(tx, repo, keep=keep)

    def prune(self, *, repos: list[str], keep_jobs: int, keep_deliveries: int) -> int:
        removed = 0
        for repo in repos:
            with self._write() as tx:
                removed += queue.prune(tx, repo, keep=keep_jobs)
        with self._write() as tx:
            removed += ledger.prune(tx, keep=keep_deliveries, known=repos)
        if removed:
            self.backend.compact()
        return removed

    # -- workers ---------------------------------------------------------------------

    def register_worker(self, *, worker: str, node: str, slots: int) -> None:
        self.backend.hold_worker_lock(worker)
        with self._write() as tx:
            workers.register(
                tx, worker=worker, node=node, host=self.host, slots=slots, now=time.time()
            )

    def heartbeat(
        self, worker: str, *, fds: int | None = None, fd_limit: int | None = None
    ) -> None:
        with self._write() as tx:
            workers.heartbeat(tx, worker, now=time.time(), fds=fds, fd_limit=fd_limit)

    def heartbeat_of(self, worker: str) -> float | None:
        """The worker's last heartbeat as it wrote it (compare values, not clocks)."""
        with self._read() as tx:
            return workers.heartbeat_of(tx, worker)

    def stop_worker(self, worker: str) -> None:
        with self._write() as tx:
            workers.stop(tx, worker, now=time.time())

    def workers(self, *, since: float) -> list[WorkerInfo]:
        """Workers that have not stopped and beat since `since`."""
        with self._read() as tx:
            return workers.beating_since(tx, since)

    def worker_alive(self, worker: str) -> bool | None:
        """True/False if the backend can tell whether a worker lives; None if it can't."""
        return self.backend.worker_alive(worker)

    def can_tell_liveness(self, host: str) -> bool:
        """Whether worker_alive can tell for a worker on `host` (a flock: only this host)."""
        return host == self.host or self.backend.liveness_across_hosts

    def writable(self) -> str | None:
        """None if deliveries can be stored now, else why not (fresh within a second)."""
        try:
            self._ensure_schema()
        except StoreUnavailable as exc:
            return str(exc)
        return self._writability.check(self.backend.writable)


def open_store(settings: Settings, *, migrate: bool = True) -> Store:
    """Open the configured store (SQLite in the data dir, or PostgreSQL) and migrate it.

    A store that cannot be written yet (read-only or full disk, database down) is not
    fatal: every operation retries the migration and answers StoreUnavailable (503)
    until it works, so the server starts, says why, and recovers by itself.
    """
    backend: Backend
    if settings.database_url:
        from deployhook.store.postgres import PostgresBackend

        backend = PostgresBackend(settings.database_url)
    else:
        from deployhook.store.sqlite import SqliteBackend

        backend = SqliteBackend(settings.database_path)
    limits = ledger.Limits(
        keep=settings.keep_deliveries, rejected_per_minute=settings.rejected_per_minute
    )
    store = Store(backend, limits=limits)
    if migrate:
        store.migrate_or_defer()
    return store
