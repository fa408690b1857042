"""A daemon that runs for months (docs/reliability.md, issue 13): nothing grows with the
number of jobs, no job stays running without a live lease, liveness survives a database
blip, and /healthz tells the truth. Each test is named after the finding it guards.

The worker runs as a real `deployhook worker` subprocess where the process is the point
(a descriptor limit, a database restarted under it), over real git checkouts and the
recording fake docker.
"""

from __future__ import annotations

import os
import resource
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from deployhook.config import Settings
from deployhook.models import Job, Status, Trigger
from deployhook.store import Store, open_store
from tests.conftest import write_registry
from tests.databases import PrivateCluster, private_cluster, with_search_path
from tests.hardening.support import wait_for
from tests.helpers import SECRET, FakeDocker, Remote, make_fake_docker, make_remote

pytestmark = pytest.mark.slow


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads: line")


@contextmanager
def worker_process(
    settings: Settings, *, nofile: int | None = None, log: Path, extra: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`deployhook worker` with these settings (and RLIMIT_NOFILE), stopped afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    env.update(settings.to_environ())
    env["DEPLOYHOOK_LOG_FORMAT"] = "json"
    env.update(extra or {})

    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployhook", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,  # noqa: PLW1509 - setrlimit only, before exec
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def world(tmp: Path, repos: int, **settings: object) -> tuple[Settings, list[Remote], FakeDocker]:
    remotes = [make_remote(tmp, f"r{n}") for n in range(repos)]
    fake = make_fake_docker(tmp / "fake")
    registry = write_registry(
        tmp / "repos.yml",
        {r.checkout.name: {"path": str(r.checkout), "health_timeout": 0} for r in remotes},
    )
    values: dict[str, object] = {
        "registry": registry,
        "data_dir": tmp / "data",
        "secret": SECRET,
        "reconcile_interval": 0,
        "compose": (str(fake.path), "compose"),
        "stop_grace": 5,
        **settings,
    }
    return Settings.load({}, **values), remotes, fake


def ended(store: Store, repo: str) -> list[Status]:
    return [j.status for j in store.jobs(repo, limit=1000) if j.status.ended]


# -- finding 1: two descriptors leaked per job ---------------------------------------------


def test_finding_1_no_descriptor_leak_500_jobs_under_nofile_256(tmp_path: Path) -> None:
    """Each job started two threads that each opened (and never closed) the lock file and
    a SQLite connection: 3,627 descriptors after 11 minutes, then `Too many open files`.
    Under a limit of 256 the worker must run 500 jobs with nothing growing."""
    settings, remotes, _fake = world(tmp_path, 4, keep_jobs=1000)
    store = open_store(settings)
    names = [r.checkout.name for r in remotes]
    shas = {r.checkout.name: r.deployed() for r in remotes}
    created = 0
    samples: list[tuple[int, int, int]] = []  # jobs ended, descriptors, threads
    try:
        with worker_process(settings, nofile=256, log=tmp_path / "worker.log") as proc:
            give_up = time.monotonic() + 300
            while created < 500:
                assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
                assert time.monotonic() < give_up, f"stuck after {created} jobs: {samples[-1]}"
                for name in names:
                    if created < 500 and not any(
                        j.status == Status.QUEUED for j in store.jobs(name, limit=2)
                    ):
                        store.enqueue(
                            repo=name, sha=shas[name], ref=None, trigger=Trigger.MANUAL, node=""
                        )
                        created += 1
                done = sum(len(ended(store, n)) for n in names)
                samples.append((done, descriptors(proc.pid), threads(proc.pid)))
                time.sleep(0.01)
            wait_for(
                lambda: sum(len(ended(store, n)) for n in names) == 500,
                timeout=240,
                what="500 jobs to end",
            )
            assert proc.poll() is None
        statuses = [s for n in names for s in ended(store, n)]
    finally:
        store.close()
    assert statuses.count(Status.SUCCEEDED) == 500, set(statuses)
    # Bounded, not growing: connections kept idle (a few), a running job's pipes and
    # threads (two slots) come and go; the late jobs need no more than the early ones.
    early = [s for s in samples if 50 <= s[0] < 150]
    late = [s for s in samples if s[0] >= 400]
    assert early and late
    assert max(s[1] for s in late) <= max(s[1] for s in early) + 8, (early[-1], late[-1])
    assert max(s[2] for s in late) <= max(s[2] for s in early) + 2, (early[-1], late[-1])
    assert max(s[1] for s in samples) < 80


# -- finding 2: a job stayed running forever when its end could not be written ---------------


def compose_started(fake: FakeDocker, count: int = 1) -> bool:
    return len(fake.starts()) >= count


def settled_after(store: Store, repo: str, job_id: int) -> list[Job] | None:
    """The repo's jobs once none is running or queued and one after job_id succeeded."""
    jobs = store.jobs(repo, limit=20)
    if any(not j.status.ended for j in jobs):
        return None
    if not any(j.id > job_id and j.status == Status.SUCCEEDED for j in jobs):
        return None
    return jobs


def test_finding_2_a_job_ending_while_sqlite_refuses_writes_is_interrupted_then_retried(
    tmp_path: Path,
) -> None:
    """The end of a job met an unwritable store: the final write and its fallback both
    failed, and the job stayed `running` with an expired lease, since the worker skipped
    its own jobs when recovering. Here another connection holds SQLite's write lock from
    the moment compose runs, for 35 s: each write waits SQLite's 10 s busy timeout and
    fails, longer than the worker retries a job's end (10 s)."""
    settings, [remote], fake = world(tmp_path, 1)
    fake.set(sleep=1.5)
    name = remote.checkout.name
    store = open_store(settings)
    try:
        with worker_process(settings, log=tmp_path / "worker.log") as proc:
            job, _ = store.enqueue(
                repo=name, sha=remote.deployed(), ref=None, trigger=Trigger.MANUAL, node=""
            )
            wait_for(lambda: compose_started(fake), what="compose to start")
            blocker = sqlite3.connect(settings.database_path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # every writer now waits, then fails
            try:
                time.sleep(35)
                assert store.job(job.id).status == Status.RUNNING  # nothing could be written
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            jobs = wait_for(
                lambda: settled_after(store, name, job.id), timeout=60, what="the retry to end"
            )
            assert proc.poll() is None
    finally:
        store.close()
    first = next(j for j in jobs if j.id == job.id)
    assert first.status == Status.INTERRUPTED, first
    assert "store" in (first.error or "")
    retry = next(j for j in jobs if j.id > job.id)
    assert (retry.trigger, retry.sha, retry.status) == (
        Trigger.RETRY,
        remote.deployed(),
        Status.SUCCEEDED,
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    """A PostgreSQL of these tests' own, stopped and started by them."""
    with private_cluster() as running:
        yield running


@contextmanager
def pg_schema(cluster: PrivateCluster) -> Iterator[str]:
    schema = "t_" + secrets.token_hex(6)
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield with_search_path(cluster.url, schema)


@contextmanager
def outage(cluster: PrivateCluster) -> Iterator[None]:
    """The database server stopped for the block; started again however it ends."""
    cluster.stop()
    try:
        yield
    finally:
        cluster.start()


@pytest.mark.postgres
def test_finding_2_a_job_ending_during_a_postgres_outage_is_interrupted_then_retried(
    tmp_path: Path, cluster: PrivateCluster
) -> None:
    """As above, with the database server stopped from the moment compose runs, for 15 s."""
    with pg_schema(cluster) as url:
        settings, [remote], fake = world(tmp_path, 1, database_url=url)
        fake.set(sleep=1.5)
        name = remote.checkout.name
        store = open_store(settings)
        try:
            with worker_process(settings, log=tmp_path / "worker.log") as proc:
                job, _ = store.enqueue(
                    repo=name, sha=remote.deployed(), ref=None, trigger=Trigger.MANUAL, node=""
                )
                wait_for(lambda: compose_started(fake), what="compose to start")
                with outage(cluster):
                    time.sleep(15)
                jobs = wait_for(
                    lambda: settled_after(store, name, job.id),
                    timeout=60,
                    what="the retry to end",
                )
                assert proc.poll() is None
        finally:
            store.close()
    first = next(j for j in jobs if j.id == job.id)
    assert first.status == Status.INTERRUPTED, first
    assert "store" in (first.error or "")
    retry = next(j for j in jobs if j.id > job.id)
    assert (retry.trigger, retry.status) == (Trigger.RETRY, Status.SUCCEEDED)
