"""Retention: the last N jobs per repo with their output, never the last good one, and N
ledger rows per repo; counters in /metrics survive it."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.errors import BadSignature
from deployhook.models import DeliveryKind, Status, StepStatus, Trigger
from deployhook.service import Service
from deployhook.store import CheckedDelivery, Store
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
