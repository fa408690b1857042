"""/healthz tells the truth about the worker, and stays cheap (docs/status.md, issue 13).

The soak found a worker wedged for minutes (every repo with a job stuck `running`, no
waiting job claimed, the descriptor limit reached) while /healthz said ok; and /healthz
wrote and fsynced 64 KB per call, so a flood of it slowed the webhooks down.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from deployhook.models import Status, Trigger
from deployhook.service import Service
from deployhook.store.sqlite import SqliteBackend
from tests.helpers import Remote, gitea_headers, gitea_push_body


def problems(client: Any) -> list[str]:
    resp = client.get("/healthz")
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["problems"]  # type: ignore[no-any-return]


def test_healthz_is_degraded_by_a_job_stuck_past_its_timeout(
    client: Any, service: Service, remote: Remote
) -> None:
    store = service.store
    store.register_worker(worker="w", node="", slots=2)
    job, _ = store.enqueue(
        repo="site", sha=remote.deployed(), ref=None, trigger=Trigger.MANUAL, node=""
    )
    assert store.claim(worker="w", node="", lease_s=60) is not None
    assert not any("stuck" in p for p in problems(client))
    with store.write() as tx:  # started before its timeout (900 s) and the grace
        tx.run("UPDATE jobs SET started_at = :t WHERE id = :id", t=time.time() - 1000, id=job.id)
    [stuck] = [p for p in problems(client) if "stuck" in p]
    assert stuck.startswith(f"a deploy is stuck: job {job.id} of site has run 1000 s")
    assert client.get("/healthz").get_json()["status"] == "degraded"


def test_healthz_is_degraded_by_a_waiting_job_no_worker_picks_up(
    client: Any, service: Service, remote: Remote
) -> None:
    store = service.store
    store.register_worker(worker="w", node="", slots=2)
    job, _ = store.enqueue(
        repo="site", sha=remote.deployed(), ref=None, trigger=Trigger.MANUAL, node=""
    )
    assert not any("picked up" in p for p in problems(client))  # just queued
    with store.write() as tx:
        tx.run("UPDATE jobs SET created_at = :t WHERE id = :id", t=time.time() - 45, id=job.id)
    [waiting] = [p for p in problems(client) if "picked up" in p]
    assert waiting.startswith(f"a queued job is not picked up: job {job.id} of site has waited")
    # Waiting for its repo's running job is no problem.
    with store.write() as tx:
        tx.run(
            "INSERT INTO jobs (repo, status, trigger, sha, created_at, started_at, node, worker)"
            " VALUES ('site', 'running', 'manual', :sha, :t, :t, '', 'w')",
            sha=remote.deployed(),
            t=time.time(),
        )
    assert not any("picked up" in p for p in problems(client))
    assert store.job(job.id).status == Status.QUEUED


def test_healthz_is_degraded_by_a_worker_near_its_descriptor_limit(
    client: Any, service: Service
) -> None:
    store = service.store
    store.register_worker(worker="w", node="", slots=2)
    store.heartbeat("w", fds=120, fd_limit=1024)
    assert not any("descriptor" in p for p in problems(client))
    store.heartbeat("w", fds=900, fd_limit=1024)
    [near] = [p for p in problems(client) if "descriptor" in p]
    assert near == "a deploy worker is near its file descriptor limit: w has 900 of 1024 open"


class CountingBackend(SqliteBackend):
    """The real SQLite backend, counting writability probes."""

    probes = 0

    def writable(self) -> str | None:
        CountingBackend.probes += 1
        return super().writable()


def test_healthz_flood_costs_about_one_probe_a_second(tmp_path: Path) -> None:
    from deployhook.store import Store

    store = Store(CountingBackend(tmp_path / "data" / "deployhook.sqlite3"))
    store.migrate()
    started = time.monotonic()
    answers = [store.writable() for _ in range(500)]
    elapsed = time.monotonic() - started
    assert answers == [None] * 500
    assert CountingBackend.probes <= elapsed + 2
    store.close()


def test_healthz_turns_503_on_the_first_failed_write_without_waiting_for_a_probe(
    client: Any, service: Service, remote: Remote
) -> None:
    assert client.get("/healthz").status_code == 200  # a probe: fresh for a second
    backend = service.store.backend
    conn = backend._take()  # type: ignore[attr-defined]
    conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
    backend._give(conn)  # type: ignore[attr-defined]
    for n in range(200):
        body = gitea_push_body(sha=remote.deployed(), full_name="jeff/site", pad_to=3072)
        resp = client.post(
            "/deploy/site", data=body, headers=gitea_headers(body, delivery=f"d{n}-" + "x" * 90)
        )
        if resp.status_code == 503:
            break
    assert resp.status_code == 503
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.get_json()["status"] == "unavailable"
