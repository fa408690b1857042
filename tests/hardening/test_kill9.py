"""SIGKILL of the whole `deployhook serve` while 500 signed deliveries arrive, then restart.

docs/deploys.md rule 7: a job is durable from the moment its 202 is sent; a job whose worker died
ends `interrupted` and is retried (unless a newer job is queued); nothing of one repo
ever runs twice at once.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_registry
from tests.hardening.support import (
    Answer,
    get_json,
    jobs_table,
    ledger,
    push,
    serve_env,
    settled,
    wait_for,
)
from tests.helpers import make_fake_docker, make_remote
from tests.server import serve

pytestmark = pytest.mark.slow

REPOS = ("alpha", "beta", "gamma")
DELIVERIES = 500


class Target:
    """Where the senders post: the live server's URL, or None while it is down."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.url: str | None = None

    def set(self, url: str | None) -> None:
        with self._cond:
            self.url = url
            self._cond.notify_all()

    def wait(self, timeout: float = 60.0) -> str:
        with self._cond:
            assert self._cond.wait_for(lambda: self.url is not None, timeout), "no server"
            assert self.url is not None
            return self.url


def send(target: Target, repo: str, sha: str, delivery: str) -> list[Answer | str]:
    """Deliver once; if the server was down or died mid-request, deliver again after it is
    back, with the same delivery id (as a sender's retry would). Returns every attempt."""
    attempts: list[Answer | str] = []
    while len(attempts) < 20:
        url = target.wait()
        try:
            attempts.append(push(url, repo, sha, delivery=delivery))
            return attempts
        except ConnectionRefusedError:
            attempts.append("refused")  # never reached the server
        except (
            ConnectionResetError,
            BrokenPipeError,
            http.client.HTTPException,
            TimeoutError,
        ) as exc:  # HTTPException: cut off mid-answer (IncompleteRead)
            attempts.append(f"cut: {type(exc).__name__}")  # may or may not have been taken
        time.sleep(0.05)
    return attempts


def test_sigkill_under_load_keeps_every_202_and_retries_interrupted_jobs(tmp_path: Path) -> None:
    remotes = {name: make_remote(tmp_path, name) for name in REPOS}
    shas = {
        name: [r.commit({"index.html": f"{name} {n}\n"}) for n in range(8)]
        for name, r in remotes.items()
    }
    for r in remotes.values():
        r.push()
    fake = make_fake_docker(tmp_path / "fake")
    fake.set(sleep=0.3)  # deploys are running when the kill comes
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            name: {"path": str(r.checkout), "health_timeout": 0, "rollback": False}
            for name, r in remotes.items()
        },
    )
    env = serve_env(tmp_path, registry, fake)
    db = tmp_path / "data" / "deployhook.sqlite3"
    work = [
        (REPOS[n % 3], shas[REPOS[n % 3]][(n // 3) % 8], f"kill9-{n}") for n in range(DELIVERIES)
    ]
    target = Target()
    answered = 0
    lock = threading.Lock()

    def one(item: tuple[str, str, str]) -> tuple[tuple[str, str, str], list[Answer | str]]:
        nonlocal answered
        attempts = send(target, *item)
        with lock:
            answered += 1
        return item, attempts

    with ThreadPoolExecutor(max_workers=16) as pool:
        with serve(env, cwd=tmp_path) as first:
            target.set(first.url)
            futures = [pool.submit(one, item) for item in work]

            def compose_running() -> bool:
                ended = {c["pid"] for c in fake.calls()}
                return any(s["pid"] not in ended for s in fake.starts())

            wait_for(
                lambda: answered >= DELIVERIES * 0.3 and compose_running(),
                timeout=60,
                what="load with a deploy running",
            )
            target.set(None)
            os.killpg(first.proc.pid, signal.SIGKILL)  # supervisor, gunicorn, worker at once
            first.proc.wait()
            at_kill = jobs_table(db)
        running = [j for j in at_kill if j["status"] == "running"]
        queued = {j["repo"] for j in at_kill if j["status"] == "queued"}
        assert running, "the kill was meant to hit a running deploy"
        with serve(env, cwd=tmp_path, log_name="serve-after-kill.log") as second:
            target.set(second.url)
            results = [f.result(timeout=120) for f in futures]
            wait_for(lambda: settled(db), timeout=90, what="every job to end")
            health = get_json(second.url, "/healthz")
            jobs = {j["id"]: j for j in jobs_table(db)}
            rows = ledger(db)
            api_jobs = {j: get_json(second.url, f"/jobs/{j}") for j in jobs}

    cut_attempts = sum(
        1
        for _item, attempts in results
        for a in attempts
        if isinstance(a, str) and a.startswith("cut")
    )
    final = {item: attempts[-1] for item, attempts in results}
    assert all(isinstance(a, Answer) for a in final.values()), "a delivery never got through"
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_delivery.setdefault(row["delivery_id"], []).append(row)

    # Every delivery answered 202 has its ledger row and its job, before or after the kill.
    # One whose first answer was cut and whose resend is a duplicate answers 200, with
    # the first answer's body (docs/webhooks.md).
    for (repo, _sha, delivery), answer in final.items():
        assert isinstance(answer, Answer)
        expected = 200 if answer.json().get("duplicate") else 202
        assert answer.status == expected, (delivery, answer.status, answer.body)
        job_id = answer.json()["job"]
        assert job_id in jobs, f"{delivery} was answered with job {job_id}, which is gone"
        assert api_jobs[job_id]["repo"] == repo
        first_row = by_delivery[delivery][0]
        assert first_row["job_id"] == job_id and first_row["http_status"] == 202
        assert first_row["outcome"] in ("queued", "coalesced")

    # Every job running at the kill ended interrupted, and was retried (or a newer queued
    # job of its repo took over, docs/deploys.md rule 7).
    for job in running:
        after = jobs[job["id"]]
        assert after["status"] == "interrupted", after
        retried = any(
            j["repo"] == job["repo"]
            and j["trigger"] == "retry"
            and j["sha"] == job["sha"]
            and j["id"] > job["id"]
            for j in jobs.values()
        )
        # A newer job already queued when it was interrupted (at the kill, or by a push
        # to the restarted server before its worker looked) takes over instead.
        superseded = job["repo"] in queued or any(
            j["repo"] == job["repo"]
            and j["id"] > job["id"]
            and j["created_at"] <= after["finished_at"]
            for j in jobs.values()
        )
        assert retried or superseded, f"job {job['id']} was neither retried nor superseded"

    # Nothing of one checkout ran twice at once, across the kill and the restart.
    starts = fake.starts()
    by_pid = {s["pid"]: s for s in starts}
    for start in starts:
        clash = [o for o in start["others"] if o in by_pid and by_pid[o]["cwd"] == start["cwd"]]
        assert not clash, f"compose {start['pid']} overlapped {clash} in {start['cwd']}"

    # In the end each repo runs its branch head, and all is well: every accepted push
    # named a commit on the branch, and a push deploys the head once the branch has moved
    # past its commit (docs/deploys.md rule 3), so no late push moves a repo back.
    for name, remote in remotes.items():
        last = max(
            (
                r
                for r in rows
                if r["repo"] == name
                and r["http_status"] == 202
                and r["outcome"] in ("queued", "coalesced")
            ),
            key=lambda r: r["id"],
        )
        newest = max((j for j in jobs.values() if j["repo"] == name), key=lambda j: j["id"])
        assert newest["status"] == "succeeded", newest
        assert last["sha"] in shas[name]
        assert remote.deployed() == newest["sha"] == shas[name][-1]
    assert health["status"] == "ok", health
    print(
        f"\nkill -9 under load: {len(running)} running job(s) interrupted, "
        f"{cut_attempts} request(s) cut by the kill and sent again, "
        f"{len(jobs)} jobs, {len(starts)} compose runs"
    )
