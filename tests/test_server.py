"""Against a real `deployhook serve`: gunicorn with several processes, and its deploy worker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_registry
from tests.helpers import (
    SECRET,
    FakeDocker,
    Remote,
    gitea_headers,
    gitea_push_body,
    make_fake_docker,
    make_remote,
)
from tests.server import Served, serve

pytestmark = pytest.mark.slow


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def env_for(tmp: Path, registry: Path, fake: FakeDocker, **extra: str) -> dict[str, str]:
    return {
        "DEPLOYHOOK_REGISTRY": str(registry),
        "DEPLOYHOOK_DATA_DIR": str(tmp / "data"),
        "DEPLOYHOOK_SECRET": SECRET,
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_COMPOSE": f"{fake.path} compose",
        "DEPLOYHOOK_STOP_GRACE": "5",
        **extra,
    }


def deliver(served: Served, repo: str, sha: str, delivery: str) -> tuple[int, dict[str, Any]]:
    body = gitea_push_body(sha=sha, full_name=f"jeff/{repo}", pad_to=3072)
    return post(f"{served.url}/deploy/{repo}", body, gitea_headers(body, delivery=delivery))


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_200_deliveries_from_16_threads_each_202_has_job_and_ledger_row(tmp_path: Path) -> None:
    remotes = {name: make_remote(tmp_path, name) for name in ("alpha", "beta", "gamma")}
    fake = make_fake_docker(tmp_path / "fake")
    fake.set(sleep=0.2)
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            name: {"path": str(r.checkout), "health_timeout": 0, "rollback": False}
            for name, r in remotes.items()
        },
    )
    shas = {
        name: [r.commit({"index.html": f"{n}\n"}) for n in range(5)] for name, r in remotes.items()
    }
    for r in remotes.values():
        r.push()
    db = tmp_path / "data" / "deployhook.sqlite3"
    violations: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        # Sampled while the load runs: never two queued (or running) jobs for one repo.
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        while not stop.is_set():
            try:
                rows = conn.execute(
                    "SELECT repo, status, COUNT(*) FROM jobs WHERE status IN"
                    " ('queued', 'running') GROUP BY repo, status"
                    " HAVING COUNT(*) > 1"
                ).fetchall()
            except sqlite3.OperationalError:
                rows = []
            violations.extend(str(r) for r in rows)
            time.sleep(0.01)
        conn.close()

    with serve(
        env_for(tmp_path, registry, fake, DEPLOYHOOK_WEB_PROCESSES="3"), cwd=tmp_path
    ) as served:
        watcher = threading.Thread(target=watch)
        watcher.start()
        work = [
            (name, shas[name][n % 5], f"delivery-{n}")
            for n in range(200)
            for name in [("alpha", "beta", "gamma")[n % 3]]
        ]
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda w: (w, deliver(served, *w)), work))
        wait_for(
            lambda: all(
                j["status"] not in ("queued", "running")
                for name in remotes
                for j in get(f"{served.url}/deploy/{name}/jobs")["jobs"]
            ),
            what="all jobs to end",
        )
        stop.set()
        watcher.join()
        ledger = {
            name: {
                d["id"]: d
                for d in get(f"{served.url}/deploy/{name}/deliveries?limit=1000")["deliveries"]
            }
            for name in remotes
        }
        for (name, _sha, delivery), (status, answer) in answers:
            assert status == 202, answer
            job = get(f"{served.url}/jobs/{answer['job']}")
            assert job["repo"] == name
            row = ledger[name][delivery]
            assert row["job"] == answer["job"]
            assert row["outcome"] in ("queued", "coalesced")
        for name, r in remotes.items():
            assert r.deployed() == get(f"{served.url}/deploy/{name}")["deployed_sha"]
    assert violations == []
    assert all(
        not s["others"]
        or all(o["cwd"] != s["cwd"] for o in fake.starts() if o["pid"] in s["others"])
        for s in fake.starts()
    )


def test_sigkill_mid_deploy_then_restart_interrupts_and_retries(tmp_path: Path) -> None:
    remote = make_remote(tmp_path, "site")
    fake = make_fake_docker(tmp_path / "fake")
    registry = write_registry(
        tmp_path / "repos.yml", {"site": {"path": str(remote.checkout), "health_timeout": 0}}
    )
    env = env_for(tmp_path, registry, fake)
    sha = remote.commit_and_push({"index.html": "v2\n"})
    fake.set(sleep=60)
    with serve(env, cwd=tmp_path) as served:
        status, answer = deliver(served, "site", sha, "d-1")
        assert status == 202
        wait_for(fake.starts, what="compose to start")
        orphan = fake.starts()[0]["pid"]
        os.killpg(served.proc.pid, signal.SIGKILL)  # supervisor, gunicorn and worker at once
        served.proc.wait()
    os.kill(orphan, 0)  # compose runs in its own group: it survived its worker
    fake.set(sleep=0)
    with serve(env, cwd=tmp_path, log_name="serve2.log") as served:
        wait_for(
            lambda: get(f"{served.url}/jobs/{answer['job']}")["status"] == "interrupted",
            what="the job to be interrupted",
        )
        jobs = get(f"{served.url}/deploy/site/jobs")["jobs"]
        wait_for(
            lambda: get(f"{served.url}/deploy/site/jobs")["jobs"][0]["status"] == "succeeded",
            what="the retry to succeed",
        )
        jobs = get(f"{served.url}/deploy/site/jobs")["jobs"]
    assert [(j["trigger"], j["status"], j["sha"]) for j in jobs] == [
        ("retry", "succeeded", sha),
        ("push", "interrupted", sha),
    ]
    with pytest.raises(ProcessLookupError):
        os.kill(orphan, 0)  # the restarted worker stopped the dead worker's compose
    assert all(s["others"] == [] for s in fake.starts())  # nothing ran twice at once
    assert remote.deployed() == sha


def test_web_process_killed_leaves_running_deploy_untouched(tmp_path: Path) -> None:
    remote: Remote = make_remote(tmp_path, "site")
    fake = make_fake_docker(tmp_path / "fake")
    registry = write_registry(
        tmp_path / "repos.yml", {"site": {"path": str(remote.checkout), "health_timeout": 0}}
    )
    sha = remote.commit_and_push({"index.html": "v2\n"})
    fake.set(sleep=3)
    with serve(env_for(tmp_path, registry, fake), cwd=tmp_path) as served:
        status, answer = deliver(served, "site", sha, "d-1")
        assert status == 202
        wait_for(fake.starts, what="compose to start")
        web_workers = served.pids_of("web")
        assert len(web_workers) == 2
        for pid in web_workers:
            os.kill(pid, signal.SIGKILL)  # gunicorn replaces them; the deploy must not notice
        wait_for(fake.calls, what="compose to finish")
        wait_for(
            lambda: get(f"{served.url}/jobs/{answer['job']}")["status"] == "succeeded",
            what="the job to succeed",
        )
    job_status = (
        sqlite3.connect(tmp_path / "data" / "deployhook.sqlite3")
        .execute("SELECT status FROM jobs WHERE id = ?", (answer["job"],))
        .fetchone()[0]
    )
    assert job_status == "succeeded"
    assert remote.deployed() == sha
