"""The store's behaviour (docs/webhooks.md, docs/deploys.md rules 1-2, 5, 7), once per backend.

Each test runs on SQLite and on PostgreSQL (a fresh schema; see tests/databases.py).
Several Store objects on one database stand for several processes; real subprocesses
where a process boundary is the point (concurrent writers, a worker that dies).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deployhook.config import Settings
from deployhook.errors import BadSignature, StoreUnavailable, UnknownRepo
from deployhook.models import Decision, DeliveryKind, Outcome, Rollback, Status, Trigger
from deployhook.registry import Registry
from deployhook.service import Service
from deployhook.store import CheckedDelivery, Store, open_store
from deployhook.store.postgres import PostgresBackend
from deployhook.store.schema import MIGRATIONS
from deployhook.web import create_app
from deployhook.web.answers import decision_body, decision_status
from tests.conftest import write_registry
from tests.databases import fresh_database, fresh_schema
from tests.helpers import SECRET, gitea_headers, gitea_push_body

MakeStore = Callable[[], Store]


def sha(n: int) -> str:
    return f"{n:040x}"


def checked(repo: str, kind: DeliveryKind, **fields: object) -> CheckedDelivery:
    return CheckedDelivery(
        repo=repo,
        kind=kind,
        received_at=time.time(),
        status_of=decision_status,
        **fields,  # type: ignore[arg-type]
    )


def answer(decision: Decision) -> tuple[int, dict[str, object]]:
    return decision_status(decision), decision_body(decision)


def push(repo: str, n: int, *, delivery: str | None = None) -> CheckedDelivery:
    return CheckedDelivery(
        repo=repo,
        kind=DeliveryKind.PUSH,
        received_at=time.time(),
        status_of=decision_status,
        delivery_id=delivery,
        event="push",
        sha=sha(n),
        ref="refs/heads/main",
    )


@pytest.fixture
def store_settings(tmp_path: Path, store_url: str | None) -> Settings:
    return Settings.load({}, data_dir=tmp_path / "data", database_url=store_url)


@pytest.fixture
def make_store(store_settings: Settings) -> Iterator[MakeStore]:
    """Open Stores on one database, each like a separate process; closed after the test."""
    opened: list[Store] = []

    def make() -> Store:
        store = open_store(store_settings)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def env_for(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_environ()}


# -- intake ------------------------------------------------------------------------------


def test_push_is_queued_then_coalesced_into_newest_sha(store: Store) -> None:
    first = store.submit(push("site", 1, delivery="d1"))
    second = store.submit(push("site", 2, delivery="d2"))
    assert (decision_status(first), first.outcome) == (202, Outcome.QUEUED)
    assert (decision_status(second), second.outcome) == (202, Outcome.COALESCED)
    assert first.job is not None and second.job is not None
    assert second.job.id == first.job.id
    assert decision_body(second)["coalesced"] is True
    job = store.job(first.job.id)
    assert (job.status, job.sha, job.delivery) == (Status.QUEUED, sha(2), "d2")
    assert [d.outcome for d in store.deliveries("site")] == [Outcome.COALESCED, Outcome.QUEUED]


def test_duplicate_delivery_gets_the_first_answer_again(store: Store) -> None:
    first = store.submit(push("site", 1, delivery="same"))
    again = store.submit(push("site", 1, delivery="same"))
    assert again.outcome == Outcome.DUPLICATE
    assert decision_status(again) == 200  # nothing new queued
    assert decision_body(again) == {**decision_body(first), "duplicate": True}
    assert len(store.jobs("site")) == 1


def test_rejected_delivery_is_not_seen(store: Store) -> None:
    error = BadSignature("signature does not match")
    store.submit(
        checked("site", DeliveryKind.REJECTED, delivery_id="d", reason=str(error), error=error)
    )
    decision = store.submit(push("site", 1, delivery="d"))
    assert decision.outcome == Outcome.QUEUED


def test_ping_and_ignored_are_recorded_with_reason(store: Store) -> None:
    ping = store.submit(checked("site", DeliveryKind.PING, delivery_id="p", event="ping"))
    other = store.submit(
        checked("site", DeliveryKind.IGNORED, delivery_id="o", event="push", reason="push to dev")
    )
    assert answer(ping) == (200, {"status": "pong"})
    assert answer(other) == (200, {"status": "ignored", "reason": "push to dev"})
    rows = store.deliveries("site")
    assert [(d.outcome, d.reason) for d in rows] == [
        (Outcome.IGNORED, "push to dev"),
        (Outcome.IGNORED, "ping"),
    ]


def test_held_pushes_are_recorded_and_release_queues_the_newest(store: Store) -> None:
    store.hold("site")
    decisions = [store.submit(push("site", n)) for n in (1, 2)]
    assert all(answer(d)[0] == 200 and answer(d)[1]["status"] == "held" for d in decisions)
    assert store.jobs("site") == []
    job = store.release("site", node="")
    assert job is not None
    assert (job.sha, job.status) == (sha(2), Status.QUEUED)
    assert store.release("site", node="") is None


def test_redelivered_push_joins_the_running_job_of_its_sha(store: Store) -> None:
    queued = store.submit(push("site", 1)).job
    assert queued is not None
    running = store.claim(worker="w", node="", lease_s=30)
    assert running is not None and running.id == queued.id
    same = decision_body(store.submit(push("site", 1)))
    assert (same["job"], same["status"], same["coalesced"]) == (queued.id, "running", True)
    newer = store.submit(push("site", 2))
    assert newer.outcome == Outcome.QUEUED and newer.job is not None
    assert newer.job.id != queued.id


def test_text_the_database_cannot_hold_is_stored_not_refused(store: Store) -> None:
    error = UnknownRepo("unknown repo \x00")
    decision = store.submit(
        checked(
            "bad\x00name",
            DeliveryKind.REJECTED,
            reason=str(error),
            error=error,
            delivery_id="x\x00",
        )
    )
    assert decision_status(decision) == 404
    [row] = store.deliveries("bad\x00name")
    assert row.outcome == Outcome.REJECTED
    assert row.http_status == 404


# -- one queued, one running, under concurrency --------------------------------------------


ENQUEUER = textwrap.dedent("""
    import sys, time
    from deployhook.config import Settings
    from deployhook.models import Trigger
    from deployhook.store import open_store
    store = open_store(Settings.load(), migrate=False)
    proc, rounds = int(sys.argv[1]), int(sys.argv[2])
    for n in range(rounds):
        for repo in ("a", "b", "c"):
            store.enqueue(repo=repo, sha=f"{proc:08x}{n:032x}", ref="refs/heads/main",
                          trigger=Trigger.PUSH, node="")
    store.close()
""")


def test_concurrent_enqueues_from_processes_keep_one_queued_and_one_running(
    make_store: MakeStore, store_settings: Settings
) -> None:
    store = make_store()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, str(p), "25"], env=env_for(store_settings)
        )
        for p in range(4)
    ]
    claimed: list[int] = []

    def queued_left() -> int:
        with store.read() as tx:
            return int(tx.value("SELECT COUNT(*) FROM jobs WHERE status = 'queued'"))

    while any(p.poll() is None for p in procs) or queued_left():
        job = store.claim(worker="w", node="", lease_s=30)
        if job is None:
            continue
        claimed.append(job.id)
        with store.read() as tx:
            counts = tx.all(
                "SELECT status, COUNT(*) AS n FROM jobs WHERE repo = :repo GROUP BY status",
                repo=job.repo,
            )
        assert all(r["n"] <= 1 for r in counts if r["status"] in ("queued", "running"))
        assert store.finish(job.id, status=Status.SUCCEEDED, error=None, worker="w")
    assert [p.wait() for p in procs] == [0, 0, 0, 0]
    assert len(claimed) == len(set(claimed))
    for repo in ("a", "b", "c"):
        jobs = store.jobs(repo, limit=1000)
        assert sum(j.status == Status.QUEUED for j in jobs) == 0
        assert all(j.status == Status.SUCCEEDED for j in jobs)
        # 100 enqueues per repo cost far fewer jobs: a burst coalesces into the queued one.
        assert 1 <= len(jobs) <= 100
        spans = sorted((j.started_at or 0, j.finished_at or 0) for j in jobs)
        assert all(a_end <= b_start for (_s, a_end), (b_start, _e) in itertools.pairwise(spans))


def test_many_workers_claim_every_job_exactly_once(make_store: MakeStore) -> None:
    setup = make_store()
    expected = {
        setup.enqueue(repo=f"r{n}", sha=sha(n), ref=None, trigger=Trigger.PUSH, node="")[0].id
        for n in range(40)
    }
    stores = [make_store() for _ in range(8)]
    claimed: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def work(store: Store, name: str) -> None:
        try:
            start.wait()
            while (job := store.claim(worker=name, node="", lease_s=30)) is not None:
                with lock:
                    claimed.append(job.id)
                store.finish(job.id, status=Status.SUCCEEDED, error=None, worker=name)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s, f"w{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert sorted(claimed) == sorted(expected)


def test_claim_skips_a_repo_that_is_running_and_repos_excluded(store: Store) -> None:
    first = store.enqueue(repo="a", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="")[0]
    assert store.claim(worker="w1", node="", lease_s=30).id == first.id  # type: ignore[union-attr]
    store.enqueue(repo="a", sha=sha(2), ref=None, trigger=Trigger.PUSH, node="")
    b = store.enqueue(repo="b", sha=sha(3), ref=None, trigger=Trigger.PUSH, node="")[0]
    assert store.claim(worker="w2", node="", lease_s=30, exclude=("b",)) is None
    assert store.claim(worker="w2", node="", lease_s=30).id == b.id  # type: ignore[union-attr]


def test_claims_follow_the_node(store: Store) -> None:
    gpu = store.enqueue(repo="a", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="gpu")[0]
    plain = store.enqueue(repo="b", sha=sha(2), ref=None, trigger=Trigger.PUSH, node="")[0]
    assert store.claim(worker="x", node="other", lease_s=30) is None
    assert store.claim(worker="g", node="gpu", lease_s=30).id == gpu.id  # type: ignore[union-attr]
    assert store.claim(worker="g", node="gpu", lease_s=30) is None
    assert store.claim(worker="d", node="", lease_s=30).id == plain.id  # type: ignore[union-attr]


# -- leases, interrupts, retries -----------------------------------------------------------


def test_expired_lease_is_found_and_its_interrupt_queues_a_retry(store: Store) -> None:
    store.enqueue(repo="a", sha=sha(1), ref="refs/heads/main", trigger=Trigger.PUSH, node="n")
    job = store.claim(worker="gone", node="n", lease_s=-1)
    assert job is not None
    assert [j.id for j in store.expired_jobs()] == [job.id]
    retry = store.interrupt(job, reason="interrupted: its worker stopped renewing its lease")
    assert retry is not None
    assert (retry.trigger, retry.sha, retry.node, retry.status) == (
        Trigger.RETRY,
        sha(1),
        "n",
        Status.QUEUED,
    )
    assert store.job(job.id).status == Status.INTERRUPTED
    assert store.interrupt(job, reason="again") is None  # already ended
    assert not store.finish(job.id, status=Status.SUCCEEDED, error=None, worker="gone")


def _deployed_then_claimed(store: Store, good: str, bad: str) -> int:
    """A good deploy of `good`, then a claimed (running) job of `bad`; its id."""
    for commit in (good, bad):
        store.enqueue(repo="a", sha=commit, ref="refs/heads/main", trigger=Trigger.PUSH, node="")
        job = store.claim(worker="w", node="", lease_s=30)
        assert job is not None and job.sha == commit
        if commit == good:
            assert store.finish(job.id, status=Status.SUCCEEDED, error=None, worker="w")
    return job.id


def test_a_failed_job_ends_with_its_rollback_already_queued(store: Store) -> None:
    """One transaction: nobody (a page, a test waiting for quiet) sees the failure with
    nothing queued, and a worker that dies right after cannot lose the rollback."""
    failed = _deployed_then_claimed(store, sha(1), sha(2))
    rollback = Rollback(ref="refs/heads/main", node="")
    assert store.finish(failed, status=Status.FAILED, error="e", worker="w", rollback=rollback)
    ended = store.job(failed)
    assert ended.status == Status.FAILED and ended.rolled_back_by is not None
    queued = store.job(ended.rolled_back_by)
    assert (queued.status, queued.trigger, queued.sha, queued.rollback_of) == (
        Status.QUEUED,
        Trigger.ROLLBACK,
        sha(1),
        failed,
    )
    # Ending it again (a lease that expired meanwhile) queues nothing more.
    assert not store.finish(failed, status=Status.FAILED, error="e", worker="w", rollback=rollback)
    assert len(store.jobs("a", limit=10)) == 3


def test_a_failed_job_queues_no_rollback_behind_a_newer_push(store: Store) -> None:
    failed = _deployed_then_claimed(store, sha(1), sha(2))
    store.enqueue(repo="a", sha=sha(3), ref="refs/heads/main", trigger=Trigger.PUSH, node="")
    rollback = Rollback(ref="refs/heads/main", node="")
    assert store.finish(failed, status=Status.FAILED, error="e", worker="w", rollback=rollback)
    assert store.job(failed).rolled_back_by is None
    assert [j.trigger for j in store.jobs("a", limit=10) if j.status == Status.QUEUED] == [
        Trigger.PUSH
    ]


def test_renew_extends_only_the_owners_leases_and_reports_cancels(store: Store) -> None:
    store.enqueue(repo="a", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="")
    job = store.claim(worker="owner", node="", lease_s=-1)
    assert job is not None
    assert store.renew(worker="thief", job_ids=[job.id], lease_s=30) == set()
    assert store.expired_jobs() != []
    assert store.renew(worker="owner", job_ids=[job.id], lease_s=30) == set()
    assert store.expired_jobs() == []
    store.cancel(job.id)
    assert store.renew(worker="owner", job_ids=[job.id], lease_s=30) == {job.id}


def test_retries_stop_after_three_interrupted_runs_of_one_sha(store: Store) -> None:
    store.enqueue(repo="a", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="")
    for attempt in range(3):
        job = store.claim(worker="dies", node="", lease_s=30)
        assert job is not None, attempt
        retry = store.interrupt(job, reason="interrupted: its worker died")
        assert (retry is None) == (attempt == 2)
    assert store.claim(worker="w", node="", lease_s=30) is None
    assert "interrupted 3 times" in (store.repo_state("a").problem or "")


# -- history -------------------------------------------------------------------------------


def _run(store: Store, repo: str, n: int, status: Status) -> int:
    store.enqueue(repo=repo, sha=sha(n), ref=None, trigger=Trigger.PUSH, node="")
    job = store.claim(worker="w", node="", lease_s=30)
    assert job is not None
    store.finish(job.id, status=status, error=None)
    return job.id


def test_rollback_target_is_the_newest_good_sha_other_than_the_deployed(store: Store) -> None:
    for n, status in ((1, Status.SUCCEEDED), (2, Status.SUCCEEDED), (3, Status.FAILED)):
        _run(store, "a", n, status)
    deployed = store.newest_good_sha("a")
    assert deployed == sha(2)
    assert store.newest_good_sha("a", other_than=deployed) == sha(1)
    assert store.newest_good_sha("b") is None


def test_a_push_joining_a_queued_rollback_is_no_rollback_any_more(store: Store) -> None:
    failed = _deployed_then_claimed(store, sha(0), sha(1))
    to_good = Rollback(ref=None, node="")
    assert store.finish(failed, status=Status.FAILED, error="e", worker="w", rollback=to_good)
    rollback = store.job(store.job(failed).rolled_back_by or 0)
    assert (rollback.trigger, rollback.sha, rollback.rollback_of) == (
        Trigger.ROLLBACK,
        sha(0),
        failed,
    )
    joined, coalesced = store.enqueue(repo="a", sha=sha(2), ref=None, trigger=Trigger.PUSH, node="")
    assert coalesced and joined.id == rollback.id
    assert (joined.trigger, joined.rollback_of) == (Trigger.PUSH, None)
    assert store.job(failed).rolled_back_by is None


def test_prune_keeps_the_newest_jobs_and_the_last_good_one(store: Store) -> None:
    good = _run(store, "a", 0, Status.SUCCEEDED)
    failed = [_run(store, "a", n, Status.FAILED) for n in range(1, 8)]
    store.append_log(failed[0], [(time.time(), "old output")])
    for n in range(12):
        store.submit(push("a", 100 + n, delivery=f"d{n}"))
        store.submit(push("gone", 100 + n))
    removed = store.prune(repos=["a"], keep_jobs=3, keep_deliveries=5)
    kept = [j.id for j in store.jobs("a", limit=100)]
    queued = [j.id for j in store.jobs("a", limit=100) if j.status == Status.QUEUED]
    assert sorted(kept) == sorted([*queued, *failed[-3:], good])
    assert store.log_lines(failed[0]) == []
    assert len(store.deliveries("a", limit=100)) == 5
    assert len(store.deliveries("gone", limit=100)) == 5
    assert removed >= 4 + 7 + 7


# -- wake-ups, liveness, availability --------------------------------------------------------


def test_a_wake_from_another_process_reaches_a_waiting_worker(make_store: MakeStore) -> None:
    waiter = make_store().waiter()
    try:
        assert waiter.wait(0.05) is False
        make_store().enqueue(repo="a", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="")
        assert waiter.wait(30) is True
    finally:
        waiter.close()


HOLDER = textwrap.dedent("""
    import sys, time
    from deployhook.config import Settings
    from deployhook.store import open_store
    store = open_store(Settings.load(), migrate=False)
    store.register_worker(worker=sys.argv[1], node="", slots=1)
    print("ready", flush=True)
    time.sleep(120)
""")


def test_a_killed_workers_lock_is_gone_for_every_other_process(
    store: Store, store_settings: Settings
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, "w-child"],
        env=env_for(store_settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert store.worker_alive("w-child") is True
        assert store.worker_alive("never-started") is False
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
    deadline = time.monotonic() + 20
    while store.worker_alive("w-child") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.worker_alive("w-child") is False


def test_migrations_are_idempotent_and_safe_to_run_at_once(make_store: MakeStore) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            make_store()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert make_store().migrate() == len(MIGRATIONS)


def test_a_writable_store_says_so(store: Store) -> None:
    assert store.writable() is None


def test_an_unreachable_store_is_unavailable_without_a_traceback_or_secret(
    tmp_path: Path, store_url: str | None
) -> None:
    if store_url is None:
        (tmp_path / "data").write_text("a file where the data dir should be")
        settings = Settings.load({}, data_dir=tmp_path / "data")
    else:
        settings = Settings.load(
            {},
            data_dir=tmp_path / "data",
            database_url="postgresql://deployhook:hunter2@127.0.0.1:9/x",
        )
    with pytest.raises(StoreUnavailable) as caught:  # at the open, or at the first use
        store = open_store(settings)
        try:
            store.submit(push("site", 1))
        finally:
            store.close()
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_backend_answers_in_json_shapes(store: Store) -> None:
    """Answers round-trip through the ledger as JSON on every backend."""
    store.submit(push("site", 1, delivery="j"))
    with store.read() as tx:
        answer = tx.value("SELECT answer FROM deliveries WHERE delivery_id = 'j'")
    assert json.loads(answer)["job"]["status"] == "queued"


@pytest.mark.postgres
def test_a_read_only_database_answers_503_not_a_traceback(tmp_path: Path) -> None:
    with fresh_schema() as url:
        open_store(Settings.load({}, database_url=url)).close()  # the schema, migrated
        read_only = url.replace("options=", "options=-cdefault_transaction_read_only%3Don%20")
        registry = Registry(
            write_registry(tmp_path / "repos.yml", {"site": {"path": str(tmp_path / "site")}})
        )
        registry.refresh(force=True)
        settings = Settings.load(
            {},
            registry=tmp_path / "repos.yml",
            secret=SECRET,
            data_dir=tmp_path / "data",
            database_url=read_only,
        )
        svc = Service(settings, registry, Store(PostgresBackend(read_only)))
        try:
            client = create_app(settings, service_=svc, configure_logging=False).test_client()
            body = gitea_push_body(sha=sha(1))
            resp = client.post("/deploy/site", data=body, headers=gitea_headers(body))
            assert resp.status_code == 503
            assert "read-only" in resp.get_json()["error"]
            health = client.get("/healthz")
            assert health.status_code == 503
        finally:
            svc.close()


def _enqueue_in_child(store: Store) -> None:
    store.enqueue(repo="from-child", sha=sha(2), ref=None, trigger=Trigger.PUSH, node="")


def test_a_forked_child_opens_its_own_connections_and_leaves_the_parents(store: Store) -> None:
    """gunicorn forks its web processes: a child must not use or end the parent's."""
    import multiprocessing

    store.enqueue(repo="before", sha=sha(1), ref=None, trigger=Trigger.PUSH, node="")
    postgres = store.backend.name == "postgres"
    with store.read() as tx:
        before = tx.value("SELECT pg_backend_pid()") if postgres else None
    child = multiprocessing.get_context("fork").Process(target=_enqueue_in_child, args=(store,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    if postgres:  # the parent's session survived the child
        with store.read() as tx:
            assert (
                tx.value("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = :pid", pid=before) == 1
            )
    store.enqueue(repo="after", sha=sha(3), ref=None, trigger=Trigger.PUSH, node="")
    assert [len(store.jobs(r)) for r in ("before", "from-child", "after")] == [1, 1, 1]


@pytest.mark.postgres
def test_sessions_the_server_ended_are_replaced_without_a_failed_delivery(tmp_path: Path) -> None:
    """A PostgreSQL restart ends every pooled session: the next transaction still works."""
    import psycopg

    # A database of its own: ending its sessions must not end other tests' (in parallel).
    with fresh_database() as url:
        store = open_store(Settings.load({}, data_dir=tmp_path, database_url=url))
        waiter = store.waiter()
        try:
            store.submit(push("a", 1))
            with psycopg.connect(url, autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE"
                    " application_name = 'deployhook' AND pid <> pg_backend_pid()"
                    " AND datname = current_database()"
                ).fetchone()
            assert ended is not None and ended[0] >= 2  # the pool's and the listener's
            assert store.submit(push("a", 2)).outcome == Outcome.COALESCED
            assert store.writable() is None
            waiter.wait(0.1)  # notices its session is gone; listens again on the next wait
            waiter.wait(0.1)
            store.enqueue(repo="b", sha=sha(3), ref=None, trigger=Trigger.PUSH, node="")
            assert waiter.wait(30) is True
        finally:
            waiter.close()
            store.close()
