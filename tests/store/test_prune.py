"""Retention: the last N jobs per repo with their output, never the last good one, and N
ledger rows per repo; counters in /metrics survive it."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.errors import BadSignature, UnknownRepo
from deployhook.models import DeliveryKind, Status, StepStatus, Trigger
from deployhook.service import Service
from deployhook.store import CheckedDelivery, Store, open_store
from deployhook.web import create_app
from deployhook.web.answers import decision_status


def finished_job(store: Store, repo: str, status: Status, *, n: int) -> int:
    """A job that ran one step and printed a line, then ended with status."""
    job, _ = store.enqueue(
        repo=repo, sha=f"{n:040x}", ref="refs/heads/main", trigger=Trigger.PUSH, node=""
    )
    claimed = store.claim(worker="test-worker", node="", lease_s=30)
    assert claimed is not None and claimed.id == job.id
    idx = store.start_step(job.id, "compose")
    store.append_log(job.id, [(time.time(), f"output of job {job.id}")])
    store.finish_step(job.id, idx, status=StepStatus.SUCCEEDED)
    store.finish(job.id, status=status, error=None if status == Status.SUCCEEDED else "boom")
    return job.id


def delivery(store: Store, repo: str, *, kind: str = "ignored") -> None:
    store.submit(
        CheckedDelivery(
            repo=repo,
            kind=DeliveryKind(kind),
            received_at=time.time(),
            status_of=decision_status,
            reason="test",
            error=BadSignature("test") if kind == "rejected" else None,
        )
    )


def counts(store: Store, job_id: int) -> tuple[int, int]:
    with store.read() as tx:
        return (
            int(tx.value("SELECT COUNT(*) FROM job_log WHERE job_id = :id", id=job_id)),
            int(tx.value("SELECT COUNT(*) FROM job_steps WHERE job_id = :id", id=job_id)),
        )


def job_ids(store: Store, repo: str) -> list[int]:
    return [j.id for j in store.jobs(repo, limit=1000)]


def test_prune_keeps_last_n_jobs_with_output_and_the_last_good(service: Service) -> None:
    store = service.store
    good = finished_job(store, "site", Status.SUCCEEDED, n=1)
    failed = [finished_job(store, "site", Status.FAILED, n=i) for i in range(2, 8)]
    removed = store.prune(repos=["site"], keep_jobs=3, keep_deliveries=100)
    assert removed == 3
    assert job_ids(store, "site") == [*failed[-3:][::-1], good]
    assert counts(store, good) == (1, 1)
    for kept in failed[-3:]:
        assert counts(store, kept) == (1, 1)
        assert store.job(kept).steps[0].name == "compose"
    for gone in failed[:3]:
        assert counts(store, gone) == (0, 0)
    assert service.store.newest_good_sha("site") == f"{1:040x}"


def test_prune_never_touches_queued_or_running_jobs(service: Service) -> None:
    store = service.store
    for i in range(4):
        finished_job(store, "site", Status.FAILED, n=i)
    running, _ = store.enqueue(repo="site", sha="a" * 40, ref=None, trigger=Trigger.PUSH, node="")
    store.claim(worker="w", node="", lease_s=30)
    queued, _ = store.enqueue(repo="site", sha="b" * 40, ref=None, trigger=Trigger.PUSH, node="")
    store.prune(repos=["site"], keep_jobs=0, keep_deliveries=100)
    assert job_ids(store, "site") == [queued.id, running.id]


def test_prune_is_per_repo(service: Service) -> None:
    store = service.store
    site = [finished_job(store, "site", Status.FAILED, n=i) for i in range(3)]
    other = [finished_job(store, "other", Status.FAILED, n=i) for i in range(3)]
    store.prune(repos=["site", "other"], keep_jobs=2, keep_deliveries=100)
    assert job_ids(store, "site") == site[:0:-1]
    assert job_ids(store, "other") == other[:0:-1]


def test_prune_keeps_n_ledger_rows_per_repo_and_n_for_unknown_names(service: Service) -> None:
    store = service.store
    for _ in range(5):
        delivery(store, "site")
        delivery(store, "other")
        delivery(store, "no-such-repo", kind="rejected")
        delivery(store, "another-stranger", kind="rejected")
    store.prune(repos=["site", "other"], keep_jobs=100, keep_deliveries=3)
    assert len(store.deliveries("site", limit=100)) == 3
    assert len(store.deliveries("other", limit=100)) == 3
    strangers = store.deliveries("no-such-repo", limit=100) + store.deliveries(
        "another-stranger", limit=100
    )
    assert len(strangers) == 3


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = client.get("/metrics").data.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_do_not_go_back_when_rows_are_pruned(client: Any, service: Service) -> None:
    store = service.store
    finished_job(store, "site", Status.SUCCEEDED, n=0)
    for i in range(1, 6):
        finished_job(store, "site", Status.FAILED, n=i)
    for _ in range(6):
        delivery(store, "site")
        delivery(store, "stranger", kind="rejected")
    before = scrape(client)
    assert before[("deployhook_jobs_total", (("repo", "site"), ("status", "failed")))] == 5
    assert before[("deployhook_deliveries_total", (("outcome", "ignored"), ("repo", "site")))] == 6
    assert (
        before[("deployhook_deliveries_total", (("outcome", "rejected"), ("repo", "_other")))] == 6
    )
    assert store.prune(repos=["site"], keep_jobs=1, keep_deliveries=2) > 0
    after = scrape(client)
    counters = {
        k: v for k, v in before.items() if k[0].endswith(("_total", "_bucket", "_count", "_sum"))
    }
    assert counters
    for key, value in counters.items():
        assert after[key] == value, key


def test_worker_prunes_with_configured_retention(
    settings: Settings, open_service: Callable[[Settings], Service]
) -> None:
    svc = open_service(dataclasses.replace(settings, keep_jobs=2, keep_deliveries=2))
    ids = [finished_job(svc.store, "site", Status.FAILED, n=i) for i in range(5)]
    for _ in range(4):
        delivery(svc.store, "site")
    Worker(svc).duties(force=True)
    assert job_ids(svc.store, "site") == ids[:2:-1]
    assert len(svc.store.deliveries("site", limit=100)) == 2
    app = create_app(svc.settings, service_=svc, configure_logging=False)
    metrics = scrape(app.test_client())
    assert metrics[("deployhook_jobs_total", (("repo", "site"), ("status", "failed")))] == 5


# -- finding 5: history grew between prunes (every 600 s) ---------------------------------


def stranger(store: Store, name: str) -> None:
    store.record_rejection(
        CheckedDelivery(
            repo=name,
            kind=DeliveryKind.REJECTED,
            received_at=time.time(),
            status_of=decision_status,
            reason=f"no repo named {name!r}",
            error=UnknownRepo("no such repo"),
            known=False,
        )
    )


def rows(store: Store, where: str = "1 = 1") -> int:
    with store.read() as tx:
        return int(tx.value(f"SELECT COUNT(*) FROM deliveries WHERE {where}"))  # noqa: S608


def test_finding_5_the_ledger_keeps_its_bound_as_rows_arrive(
    settings: Settings, open_service: Callable[[Settings], Service]
) -> None:
    """11,939 ledger rows were held against 5 x 200 configured: pruning ran every 600 s.
    Now each repo (and unknown names together) is pruned as its rows arrive."""
    svc = open_service(
        dataclasses.replace(settings, keep_deliveries=200, rejected_per_minute=100_000)
    )
    store = svc.store
    for n in range(700):
        delivery(store, "site")
        delivery(store, "other")
        stranger(store, f"no-such-repo-{n % 7}")
        if n % 100 == 99:  # the bound holds all along, not only at the end
            assert rows(store, "repo = 'site'") <= 202
            assert rows(store, "stranger = 1") <= 202
    assert 200 <= rows(store, "repo = 'site'") <= 202
    assert 200 <= rows(store, "repo = 'other'") <= 202
    assert 200 <= rows(store, "stranger = 1") <= 202
    metrics = scrape(create_app(svc.settings, service_=svc, configure_logging=False).test_client())
    assert (
        metrics[("deployhook_deliveries_total", (("outcome", "ignored"), ("repo", "site")))] == 700
    )
    assert (
        metrics[("deployhook_deliveries_total", (("outcome", "rejected"), ("repo", "_other")))]
        == 700
    )


def test_finding_5_jobs_are_pruned_as_each_job_ends(
    settings: Settings, open_service: Callable[[Settings], Service]
) -> None:
    svc = open_service(dataclasses.replace(settings, keep_jobs=2, prune_interval=0))
    worker = Worker(svc)
    for n in range(6):
        svc.store.enqueue(
            repo="site", sha=f"{n + 1:040x}", ref=None, trigger=Trigger.MANUAL, node=""
        )
        claimed = svc.store.claim(worker=worker.id, node="", lease_s=30)
        assert claimed is not None
        svc.store.finish(claimed.id, status=Status.FAILED, error="boom", worker=worker.id)
        worker._prune_jobs("site")  # what the worker does when a job of it ends
        assert len(job_ids(svc.store, "site")) <= 2


def test_finding_5_a_pruned_sqlite_store_gives_its_space_back(
    settings: Settings, open_service: Callable[[Settings], Service]
) -> None:
    """The database file never shrank after a prune: freed pages stayed in it, and the
    WAL kept its high-water size. Now pruning ends with an incremental vacuum and a WAL
    checkpoint that truncates it; an older store is switched to incremental auto-vacuum
    at open (one VACUUM)."""
    svc = open_service(
        dataclasses.replace(settings, keep_deliveries=100_000, rejected_per_minute=100_000)
    )
    store = svc.store
    if store.backend.name != "sqlite":
        return  # PostgreSQL's autovacuum reuses the space; nothing to give back here
    db = settings.database_path
    for _ in range(40):
        with store.write() as tx:  # 40 x 100 rows of 2 KB reasons
            for _ in range(100):
                tx.run(
                    "INSERT INTO deliveries (repo, received_at, outcome, reason, http_status)"
                    " VALUES ('site', 0, 'ignored', :r, 200)",
                    r="x" * 2000,
                )
    store.backend.compact()
    full = db.stat().st_size
    assert full > 8_000_000
    assert store.prune(repos=["site"], keep_jobs=100, keep_deliveries=10) == 3990
    assert db.stat().st_size < full / 10
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    with store.read() as tx:
        assert tx.value("PRAGMA auto_vacuum") == 2


def test_an_older_sqlite_store_is_switched_to_incremental_auto_vacuum(tmp_path: Path) -> None:
    settings = Settings.load({}, data_dir=tmp_path / "data")
    open_store(settings).close()
    conn = sqlite3.connect(settings.database_path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = NONE")
    conn.execute("VACUUM")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    conn.close()
    store = open_store(settings)
    try:
        with store.read() as tx:
            assert tx.value("PRAGMA auto_vacuum") == 2
    finally:
        store.close()
