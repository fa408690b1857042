"""Group commit: many threads, few transactions, each its own answer; one bad item alone fails."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from deployhook.models import DeliveryKind
from deployhook.store import CheckedDelivery
from deployhook.store.group import GroupCommit
from deployhook.store.sqlite import SqliteBackend
from deployhook.web.answers import decision_status


class CountingBackend(SqliteBackend):
    """The real SQLite backend, counting write transactions."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions = 0

    def write(self) -> Any:
        self.transactions += 1
        return super().write()


def push(n: int, repo: str = "site") -> CheckedDelivery:
    return CheckedDelivery(
        repo=repo,
        kind=DeliveryKind.PUSH,
        received_at=time.time(),
        status_of=decision_status,
        delivery_id=f"d-{n}",
        event="push",
        sha=f"{n:040x}",
        ref="refs/heads/main",
    )


@pytest.fixture
def backend(tmp_path: Path) -> Any:
    backend = CountingBackend(tmp_path / "store.sqlite3")
    backend.migrate()
    backend.transactions = 0
    yield backend
    backend.close()


def test_concurrent_submits_share_transactions_and_get_their_own_answers(backend: Any) -> None:
    woken = []
    group = GroupCommit(backend, on_job=lambda: woken.append(1))
    slow_write = backend.write

    def write() -> Any:  # a slow disk lets deliveries pile up behind the leader
        time.sleep(0.01)
        return slow_write()

    backend.write = write
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda n: (n, group.submit(push(n, f"repo-{n % 4}"))), range(400)))
    assert backend.transactions < 200
    for n, answer in answers:
        assert decision_status(answer) == 202
        assert answer.job is not None and answer.job.repo == f"repo-{n % 4}"
    with backend.read() as tx:
        rows = tx.all("SELECT delivery_id, job_id FROM deliveries")
        queued = tx.all("SELECT repo, sha FROM jobs WHERE status = 'queued'")
    assert len(rows) == 400
    assert len({r["delivery_id"] for r in rows}) == 400
    assert sorted(r["repo"] for r in queued) == [f"repo-{i}" for i in range(4)]
    assert woken


def test_one_failing_item_fails_alone(backend: Any) -> None:
    group = GroupCommit(backend, on_job=lambda: None)
    barrier = threading.Barrier(8)

    def submit(n: int) -> Any:
        # d-13 breaks a constraint of the schema (as a bug would): only it may fail.
        item = (
            push(n)
            if n != 13
            else CheckedDelivery(
                repo=None,  # type: ignore[arg-type]
                kind=DeliveryKind.PUSH,
                received_at=time.time(),
                status_of=decision_status,
                delivery_id="d-13",
                sha="1" * 40,
                ref="refs/heads/main",
            )
        )
        barrier.wait()
        try:
            return group.submit(item)
        except sqlite3.IntegrityError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(submit, range(10, 18)))
    assert [isinstance(r, sqlite3.IntegrityError) for r in results] == [
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        False,
    ]
    with backend.read() as tx:
        assert tx.value("SELECT COUNT(*) FROM deliveries") == 7
