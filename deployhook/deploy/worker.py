"""The deploy worker: claims jobs from the store and runs them, plus the periodic duties.

One process (started by `serve`, or alone as `deployhook worker`) runs up to
DEPLOYHOOK_WORKERS deploys at once, never two of one repo. It wakes the moment a job is
queued, renews the leases of its running jobs, notices cancels, interrupts the jobs of
dead workers (queueing their retries), reconciles remote heads and prunes old history.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from deployhook.config import WATCHDOG_ENV, Settings
from deployhook.deploy import process
from deployhook.errors import StepFailed, StoreUnavailable
from deployhook.log import get_logger
from deployhook.models import JOB_STUCK_GRACE_S, Job, Rollback, Status, Trigger
from deployhook.registry import Registry, Repo, secret_values
from deployhook.store import PERSIST_S, Store, open_store, persist

log = get_logger()

LEASE_S = 30.0
BEAT_S = 1.0
HEARTBEAT_ROW_S = 5.0
IDLE_POLL_S = 2.0
RECONCILE_TIMEOUT_S = 20.0
# A job's last write (its end) is tried again for this long while the store is away;
# past it the job is ended `interrupted`, with a retry, as soon as the store is back.
FINISH_RETRY_S = PERSIST_S
# A worker whose liveness lock looks free is taken for dead only when it still looks so
# this much later and has not beaten meanwhile: a database blip drops the lock for a
# moment (its owner re-takes it within a second), a dead worker never beats again.
DEAD_AFTER_S = 2 * HEARTBEAT_ROW_S
# A job whose lease this worker could not renew for this long is stopped by the worker
# itself, before the lease runs out and another worker interrupts and retries it: the
# two deploys must never overlap.
LEASE_GIVE_UP_S = LEASE_S - 5.0
# `serve` hands its worker the write end of a pipe (config.WATCHDOG_ENV names its
# descriptor): the worker writes to it after every round of its main loop while it is
# well, and `serve` restarts a worker that falls silent (server.py).
# A worker is not well when it uses this share of its descriptor limit, or when its beat
# thread (leases, cancels) has not come round for this long.
FD_WEDGED_SHARE = 0.9
BEAT_STALE_S = 60.0

T = TypeVar("T")


class Opened(Protocol):
    """What a worker works with (a Service has them): settings, registry and store."""

    @property
    def settings(self) -> Settings: ...

    @property
    def registry(self) -> Registry: ...

    @property
    def store(self) -> Store: ...


@dataclass
class _Opened:
    settings: Settings
    registry: Registry
    store: Store


@dataclass
class _Active:
    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    lease_lost: bool = False  # stopped by this worker: it could not renew the lease
    thread: threading.Thread | None = None
    renewed_at: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Claims and runs jobs; `work(burst=True)` runs what is queued and returns (tests)."""

    def __init__(
        self, opened: Opened, *, slots: int | None = None, watchdog_fd: int | None = None
    ) -> None:
        self.registry = opened.registry
        self.store = opened.store
        self.settings: Settings = opened.settings
        self.slots = slots or self.settings.workers
        self.node = self.settings.node
        self.id = (
            self.settings.worker_id
            or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        )
        self.active: dict[int, _Active] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.signalled: str | None = None  # the signal that asked it to stop, if one did
        self._last_prune = 0.0
        self._last_reconcile = 0.0
        self._last_row_beat = 0.0
        # Jobs whose end could not be recorded (the store was away): id -> (job, reason),
        # ended `interrupted` by the beat once the store takes writes again.
        self._unsettled: dict[int, tuple[Job, str]] = {}
        # Workers whose lock looked free: id -> (since, monotonic; their heartbeat then).
        self._suspects: dict[str, tuple[float, float | None]] = {}
        self._watchdog_fd = watchdog_fd
        self._unwell: str | None = None
        self._beat_seen = time.monotonic()

    # -- the main loop -------------------------------------------------------------

    def work(self, *, burst: bool = False) -> None:
        """Run until stopped; with burst, until nothing is claimable, one job at a time."""
        with structlog.contextvars.bound_contextvars(worker=self.id):
            self._work(burst=burst)

    def _work(self, *, burst: bool) -> None:
        self.store.register_worker(worker=self.id, node=self.node, slots=self.slots)
        log.info("worker_started", node=self.node or None, slots=self.slots)
        self.recover(startup=True)
        if burst:
            while (job := self._claim()) is not None:
                self._execute(job, _Active(job))
            self.store.stop_worker(self.id)
            return
        waiter = self.store.waiter()
        beat = threading.Thread(target=self._beat_loop, name="worker-beat", daemon=True)
        beat.start()
        duties = threading.Thread(target=self._duties_loop, name="worker-duties", daemon=True)
        duties.start()
        try:
            while not self._stop.is_set():
                self._fill_slots()
                self._tell_watchdog()
                waiter.wait(IDLE_POLL_S)
        finally:
            if self.signalled:
                log.info("worker_signal", signal=self.signalled)
            waiter.close()
            self._drain()
            self.store.stop_worker(self.id)
            log.info("worker_stopped")

    def stop(self) -> None:
        self._stop.set()
        self.store.wake()

    @property
    def stopping(self) -> threading.Event:
        """Set to stop after the running deploys (a signal handler sets only this)."""
        return self._stop

    def _fill_slots(self) -> None:
        while len(self.active) < self.slots and not self._stop.is_set():
            try:
                job = self._claim()
            except StoreUnavailable as exc:
                log.error("claim_failed", error=str(exc))
                return
            if job is None:
                return
            entry = _Active(job)
            entry.thread = threading.Thread(
                target=self._execute, args=(job, entry), name=f"job-{job.id}", daemon=True
            )
            with self._lock:
                self.active[job.id] = entry
            entry.thread.start()

    # -- telling serve that this worker is well ---------------------------------------

    def unwell(self) -> str | None:
        """Why this worker cannot do its work (so it had better be restarted), or None."""
        usage = descriptor_usage()
        if usage is not None and usage[0] >= usage[1] * FD_WEDGED_SHARE:
            return f"{usage[0]} of {usage[1]} file descriptors open"
        if time.monotonic() - self._beat_seen > BEAT_STALE_S:
            return f"its beat (leases, cancels) has not run for {BEAT_STALE_S:.0f} s"
        with self._lock:
            entries = list(self.active.values())
        for entry in entries:
            repo = self.registry.find(entry.job.repo)
            limit = (repo.timeout if repo else 0) + JOB_STUCK_GRACE_S
            if time.monotonic() - entry.started > limit:
                return f"job {entry.job.id} runs past its timeout and a grace"
        return None

    def _tell_watchdog(self) -> None:
        if self._watchdog_fd is None:
            return
        reason = self.unwell()
        if reason != self._unwell:
            if reason:
                log.error("worker_unwell", reason=reason)
            self._unwell = reason
        if reason:
            return  # silence: serve restarts this worker
        try:
            os.write(self._watchdog_fd, b".")
        except BlockingIOError:
            pass  # serve has not read the last ones yet: it knows we live
        except OSError as exc:  # serve is gone: nobody to tell
            if exc.errno == errno.EPIPE:
                self._watchdog_fd = None

    def _claim(self) -> Job | None:
        with self._lock:
            busy = tuple(a.job.repo for a in self.active.values())
        return self.store.claim(worker=self.id, node=self.node, lease_s=LEASE_S, exclude=busy)

    # -- one job ---------------------------------------------------------------------

    def _execute(self, job: Job, entry: _Active) -> None:
        structlog.contextvars.bind_contextvars(repo=job.repo, job=job.id, delivery=job.delivery)
        started = time.monotonic()
        try:
            self._run_job(job, entry)
        except StoreUnavailable as exc:
            # Nothing more can be recorded now. It must not stay `running`: it ends
            # interrupted once the store is back, and its retry deploys it (rule 7).
            log.error("job_end_not_recorded", error=str(exc))
            self._unsettle(job, "interrupted: the store could not be written when it ran")
        except Exception:  # nothing around one job may kill the worker
            log.exception("job_crashed")
            try:
                self._persist(
                    lambda: self.store.finish(
                        job.id,
                        status=Status.FAILED,
                        error="internal error in the worker (see its log)",
                        worker=self.id,
                    )
                )
            except StoreUnavailable:
                self._unsettle(job, "interrupted: the store could not be written when it ran")
        finally:
            with self._lock:
                self.active.pop(job.id, None)
            self._prune_jobs(job.repo)
            log.info("job_ended", duration_s=round(time.monotonic() - started, 3))
            structlog.contextvars.unbind_contextvars("repo", "job", "delivery")
            self.store.wake()  # a slot is free

    def _prune_jobs(self, repo: str) -> None:
        """Keep DEPLOYHOOK_KEEP_JOBS of the repo's jobs, now that one more ended."""
        try:
            self.store.prune_jobs(repo, keep=self.settings.keep_jobs)
        except StoreUnavailable as exc:  # the periodic prune catches up
            log.warning("jobs_not_pruned", error=str(exc))

    @staticmethod
    def _persist(write: Callable[[], T]) -> T:
        """A job's last write, tried again for FINISH_RETRY_S while the store is away."""
        return persist(write, within=FINISH_RETRY_S)

    def _unsettle(self, job: Job, reason: str) -> None:
        with self._lock:
            self._unsettled[job.id] = (job, reason)

    def _settle(self) -> None:
        """End the jobs whose end was lost to a store outage, now that it may be back."""
        with self._lock:
            pending = list(self._unsettled.items())
        for job_id, (_job, reason) in pending:
            try:
                self._interrupt(job_id, reason)
            except StoreUnavailable:
                return  # still away: the next beat tries again
            with self._lock:
                self._unsettled.pop(job_id, None)

    def _run_job(self, job: Job, entry: _Active) -> None:
        repo = self.registry.find(job.repo)
        log.info("job_started", trigger=str(job.trigger), sha=job.sha)
        if repo is None:
            self._persist(
                lambda: self.store.finish(
                    job.id,
                    status=Status.FAILED,
                    worker=self.id,
                    error=f"repo {job.repo!r} is no longer in the registry",
                )
            )
            return
        _stop_orphans(repo, job.id)
        # Every repo's secrets, read again now (a rotated file), are registered: whatever a
        # deploy prints is stored masked, and no child's environment holds one.
        secret_values(self.registry, default=self.settings.secret)
        # The steps and what they use (GitPython, the Docker SDK, requests, Apprise) are
        # imported at the first deploy: an idle worker does without them.
        from deployhook.deploy.pipeline import Deploy

        deploy = Deploy(
            job=job, repo=repo, settings=self.settings, store=self.store, cancel=entry.cancel
        )
        result = deploy.run()
        if (entry.stopping or entry.lease_lost) and result.status == Status.CANCELLED:
            # Stopped by a shutdown or a lost lease, not by an admin: retried when a
            # worker (and the store) is back.
            reason = (
                "interrupted: its worker could not renew its lease (store unavailable)"
                if entry.lease_lost
                else "interrupted: the worker was stopped"
            )
            retry = self._persist(lambda: self.store.interrupt(job, reason=reason))
            log.warning("job_interrupted", retry=retry.id if retry else None)
            deploy.report_finished(self.store.job(job.id))
            return
        # docs/deploys.md rule 5: a failed deploy that changed something is rolled back to
        # the newest good commit, queued as the job ends (one transaction).
        rollback = (
            Rollback(ref=repo.ref, node=repo.node)
            if result.status == Status.FAILED
            and repo.rollback
            and job.trigger != Trigger.ROLLBACK
            and result.changed
            else None
        )
        if not self._persist(
            lambda: self.store.finish(
                job.id,
                status=result.status,
                error=result.error,
                worker=self.id,
                note=result.note,
                rollback=rollback,
            )
        ):
            log.warning("job_already_ended")  # its lease expired and someone else ended it
            return
        log.info("job_finished", status=str(result.status), error=result.error)
        ended = self.store.job(job.id)
        if rollback is not None:
            log.info(
                "rollback_queued" if ended.rolled_back_by else "rollback_not_queued",
                rollback_job=ended.rolled_back_by,
                reason=None if ended.rolled_back_by else "a newer job is queued, or no good commit",
            )
        deploy.report_finished(ended)

    # -- leases, cancels, dead workers -------------------------------------------------

    def _beat_loop(self) -> None:
        while not self._stop.wait(BEAT_S):
            self._beat_seen = time.monotonic()
            try:
                self.beat()
            except StoreUnavailable as exc:
                log.warning("beat_failed", error=str(exc))
            except Exception:
                log.exception("beat_failed")

    def beat(self) -> None:
        """Settle lost ends, renew leases, pick up cancels, end the jobs of dead workers."""
        self._settle()
        self._renew()
        now = time.monotonic()
        if now - self._last_row_beat >= HEARTBEAT_ROW_S:
            usage = descriptor_usage()
            self.store.heartbeat(
                self.id,
                fds=usage[0] if usage else None,
                fd_limit=usage[1] if usage else None,
            )
            self._last_row_beat = now
            self.recover()

    def _renew(self) -> None:
        """Extend the leases of the running jobs; stop those it cannot for too long."""
        with self._lock:
            entries = dict(self.active)
        if not entries:
            return
        try:
            cancelled = self.store.renew(worker=self.id, job_ids=list(entries), lease_s=LEASE_S)
        except StoreUnavailable:
            now = time.monotonic()
            for job_id, entry in entries.items():
                if now - entry.renewed_at > LEASE_GIVE_UP_S and not entry.cancel.is_set():
                    log.error("job_lease_lost", job=job_id)
                    entry.lease_lost = True
                    entry.cancel.set()
            raise
        now = time.monotonic()
        for job_id, entry in entries.items():
            entry.renewed_at = now
            if job_id in cancelled and not entry.cancel.is_set():
                log.info("job_cancel_requested", job=job_id)
                entry.cancel.set()

    def recover(self, *, startup: bool = False) -> None:
        """Interrupt running jobs nobody runs: their worker is gone (lock released, lease
        expired), or they are this worker's own and it is not running them (a lost end,
        or, at start, a previous life of a fixed DEPLOYHOOK_WORKER_ID)."""
        expired = {job.id: job for job in self.store.expired_jobs()}
        with self._lock:
            ours = set(self.active) | set(self._unsettled)
        running = self.store.running_jobs()
        verdicts: dict[str, bool] = {}  # one look at each worker per round
        for job in running:
            here = (job.host or "") == self.store.host
            if job.worker == self.id:
                if job.id not in ours and (startup or job.id in expired):
                    reason = "interrupted: its worker lost track of it"
                    self._interrupt(job.id, reason, stop_processes=here)
                continue
            if job.worker is None:
                continue
            if job.worker not in verdicts:
                verdicts[job.worker] = self._dead(job.worker, job.host or "")
            if verdicts[job.worker]:
                # Its processes can only be stopped from its own host.
                self._interrupt(job.id, "interrupted: its worker died", stop_processes=here)
        for suspect in set(self._suspects) - {j.worker for j in running}:
            del self._suspects[suspect]
        for job in expired.values():
            if job.worker != self.id:
                self._interrupt(job.id, "interrupted: its worker stopped renewing its lease")

    def _dead(self, worker: str, host: str) -> bool:
        """True once a worker's lock has looked free for DEAD_AFTER_S with no beat since."""
        alive = self.store.worker_alive(worker) if self.store.can_tell_liveness(host) else None
        if alive is not False:
            self._suspects.pop(worker, None)
            return False
        now = time.monotonic()
        beat = self.store.heartbeat_of(worker)
        since, beat_then = self._suspects.setdefault(worker, (now, beat))
        if beat != beat_then:  # it beat after its lock looked free: alive, lock re-taken
            self._suspects[worker] = (now, beat)
            return False
        if now - since < DEAD_AFTER_S:
            log.info("worker_suspected", suspect=worker, for_s=round(now - since, 1))
            return False
        del self._suspects[worker]
        return True

    def _interrupt(self, job_id: int, reason: str, *, stop_processes: bool = False) -> None:
        job = self.store.job(job_id)
        if job.status != Status.RUNNING:
            return
        if (
            stop_processes
            and job.pgid
            and process.group_of_job(job.pgid, job_id)
            and not process.started_by_live_worker(job.pgid)
        ):
            # The dead worker's compose may still run: it must not overlap the retry.
            process.stop_group(job.pgid, grace=2)
        retry = self.store.interrupt(job, reason=reason)
        log.warning(
            "job_interrupted",
            job=job_id,
            repo=job.repo,
            reason=reason,
            retry=retry.id if retry else None,
        )
        repo = self.registry.find(job.repo)
        if repo is not None:
            from deployhook.deploy.pipeline import report_ended

            report_ended(
                self.store.job(job_id), repo=repo, settings=self.settings, store=self.store
            )

    # -- periodic duties ---------------------------------------------------------------

    def _duties_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.duties()
            except Exception:
                log.exception("duties_failed")
            self._stop.wait(5.0)

    def duties(self, *, force: bool = False) -> None:
        now = time.monotonic()
        interval = self.settings.reconcile_interval
        if interval and (
            force or not self._last_reconcile or now - self._last_reconcile >= interval
        ):
            self._last_reconcile = now
            self.reconcile()
        every = self.settings.prune_interval
        if force or (every and (not self._last_prune or now - self._last_prune >= every)):
            self._last_prune = now
            removed = self.store.prune(
                repos=self.registry.names(),
                keep_jobs=self.settings.keep_jobs,
                keep_deliveries=self.settings.keep_deliveries,
            )
            if removed:
                log.info("history_pruned", rows=removed)

    def reconcile(self) -> list[Job]:
        """docs/deploys.md rule 8: deploy a remote head that no webhook announced."""
        repos = [r for r in self.registry if r.node == self.node]
        if not repos:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(repos))) as pool:
            heads = list(pool.map(self._remote_head, repos))
        queued = []
        for repo, head in zip(repos, heads, strict=True):
            if head is None:
                continue
            seen = self.store.repo_state(repo.name).seen_head
            if seen is None:
                self.store.see_head(repo.name, head)
                log.info("reconcile_first_sight", repo=repo.name, head=head)
            elif seen != head:
                job, _ = self.store.enqueue(
                    repo=repo.name,
                    sha=head,
                    ref=repo.ref,
                    trigger=Trigger.RECONCILE,
                    node=repo.node,
                    remote_head=True,
                )
                log.info("reconcile_queued", repo=repo.name, head=head, seen=seen, job=job.id)
                queued.append(job)
        return queued

    @staticmethod
    def _remote_head(repo: Repo) -> str | None:
        from deployhook.deploy.steps import git as gitsync  # GitPython: when it is used

        try:
            return gitsync.remote_head(repo, timeout=RECONCILE_TIMEOUT_S)
        except StepFailed as exc:
            log.warning("reconcile_failed", repo=repo.name, error=str(exc))
            return None

    # -- shutdown --------------------------------------------------------------------

    def _drain(self) -> None:
        """Let running deploys finish within the grace period, then interrupt them."""
        end = time.monotonic() + self.settings.stop_grace
        if self.active:
            log.info("worker_draining", jobs=list(self.active), grace_s=self.settings.stop_grace)
        while self.active and time.monotonic() < end:
            time.sleep(0.2)
            self._tell_watchdog()  # draining is not being wedged
            with contextlib.suppress(Exception):
                self.beat()
        with self._lock:
            left = list(self.active.values())
        for entry in left:
            entry.stopping = True
            entry.cancel.set()
        for entry in left:
            if entry.thread is not None:
                entry.thread.join(timeout=process.TERM_GRACE_S + 10)
        with contextlib.suppress(Exception):
            self._settle()
        if self._unsettled:  # the next worker's start interrupts them (this one's lock is gone)
            log.error("job_ends_not_recorded", jobs=sorted(self._unsettled))


def _stop_orphans(repo: Repo, job_id: int) -> None:
    """Stop what an earlier job of this repo left running in its checkout on this host.

    A worker killed mid-deploy leaves its compose behind; when a worker on another host
    ended that job, nobody here stopped it, and it must not overlap the next deploy.
    Its marks: a process group leader working in the checkout, started for another job.
    """
    checkout = str(repo.path.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.getpgid(pid) != pid or os.readlink(entry / "cwd") != checkout:
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        marks = [v for v in environ if v.startswith(f"{process.JOB_ENV}=".encode())]
        if marks and marks[0] != f"{process.JOB_ENV}={job_id}".encode():
            if process.started_by_live_worker(pid):  # not an orphan: never ours to stop
                log.warning("orphan_spared", pid=pid, of_job=marks[0].split(b"=")[1].decode())
                continue
            log.warning("orphan_stopped", pid=pid, of_job=marks[0].split(b"=")[1].decode())
            process.stop_group(pid)


def descriptor_usage() -> tuple[int, int] | None:
    """This process's open file descriptors and its (soft) limit; None where unknown."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        count = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir opened
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return limit, limit  # not even one more: at the limit
        return None
    return count, limit


def run_worker(settings: Settings, *, watchdog_fd: int | None = None) -> int:
    """Run a worker process until SIGTERM or SIGINT.

    watchdog_fd: the write end of serve's watchdog pipe (default: the descriptor named
    by config.WATCHDOG_ENV, if any).
    """
    registry = Registry(settings.registry)
    registry.refresh(force=True)
    opened = _Opened(settings, registry, open_store(settings))
    watchdog = os.environ.pop(WATCHDOG_ENV, None)  # children must not inherit it
    if watchdog_fd is None and watchdog and watchdog.isdigit():
        watchdog_fd = int(watchdog)
    if watchdog_fd is not None:
        os.set_blocking(watchdog_fd, False)
        os.set_inheritable(watchdog_fd, False)
    worker = Worker(opened, watchdog_fd=watchdog_fd)

    def stop(signum: int, _frame: Any) -> None:
        # A signal handler runs between two bytecodes of the main thread, which may hold
        # a lock at that moment (the log's, the store pool's): take none here. The loop
        # sees the flag within a poll and logs the signal itself.
        worker.signalled = signal.Signals(signum).name
        worker.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.work()
    opened.store.close()
    return 0
