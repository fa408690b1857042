"""The data dir full or read-only under a running `deployhook serve` (root: real mounts).

docs/webhooks.md: 503 only for server-side conditions; /healthz 503 only when deliveries
cannot be accepted. The server must not crash, must keep serving status, and must
accept deliveries again once the disk is usable.
"""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from deployhook.service import Service
from tests.conftest import write_registry
from tests.hardening.support import (
    Answer,
    call,
    ext4_disk,
    fill,
    get_json,
    jobs_table,
    ledger,
    push,
    read_only_bind,
    serve_env,
    settled,
    tmpfs,
    unfill,
    wait_for,
)
from tests.helpers import Remote, gitea_headers, gitea_push_body, make_fake_docker, make_remote
from tests.server import Served, serve


def world(tmp: Path, data: Path) -> tuple[Remote, dict[str, str]]:
    remote = make_remote(tmp, "site")
    fake = make_fake_docker(tmp / "fake")
    registry = write_registry(
        tmp / "repos.yml", {"site": {"path": str(remote.checkout), "health_timeout": 0}}
    )
    return remote, serve_env(tmp, registry, fake, DEPLOYHOOK_DATA_DIR=str(data))


def assert_refuses_clearly(served: Served, remote: Remote, *, tries: int = 64) -> list[Answer]:
    """While the store cannot be written: 503 with a reason, status still served."""
    sha = remote.commit_and_push({"index.html": "while broken\n"})
    with ThreadPoolExecutor(max_workers=16) as pool:  # many threads, each its connection
        answers = list(pool.map(lambda _: push(served.url, "site", sha), range(tries)))
    statuses = Counter(a.status for a in answers)
    assert set(statuses) == {503}, f"answers while the store is broken: {dict(statuses)}"
    for answer in answers:
        assert "store not writable" in answer.json()["error"], answer.body
    for _ in range(30):  # every web thread and process, not only the first one asked
        health = call(served.url, "/healthz")
        assert health.status == 503, (health.status, health.body)
        assert health.json()["status"] == "unavailable"
        assert any("store not writable" in p for p in health.json()["problems"])
    for path in ("/deploy/site", "/deploy/site/jobs", "/", "/metrics"):
        answer = call(served.url, path)
        assert answer.status == 200, (path, answer.status, answer.body[:300])
    assert served.proc.poll() is None, "serve exited"
    return answers


def accepts_again(served: Served, remote: Remote, db: Path) -> None:
    wait_for(
        lambda: call(served.url, "/healthz").status == 200, timeout=30, what="/healthz to recover"
    )
    sha = remote.commit_and_push({"index.html": "recovered\n"})
    # Each web process notices on its own (the one that answered /healthz may be first).
    answer = wait_for(
        lambda: (a := push(served.url, "site", sha)).status == 202 and a,
        timeout=5,
        what="a delivery accepted again",
    )
    assert answer.status == 202, answer.body
    wait_for(lambda: settled(db), timeout=30, what="the deploy after recovery")
    assert remote.deployed() == sha
    assert jobs_table(db)[-1]["status"] == "succeeded"


def no_unhandled_errors(*logs: Path) -> None:
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Exception on /" not in text, f"an unhandled exception (a 500) in {log}"


@pytest.mark.slow
def test_full_data_dir_answers_503_keeps_serving_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", size="4m") as data:
        remote, env = world(tmp_path, data)
        db = data / "deployhook.sqlite3"
        with serve(env, cwd=tmp_path) as served:
            before = push(served.url, "site", remote.commit_and_push({"index.html": "v2\n"}))
            assert before.status == 202
            wait_for(lambda: settled(db), what="the first deploy")
            fill(data)
            # SQLite reuses free pages in its WAL first: deliveries that still fit are
            # accepted (and must be kept). Past that, 503.
            sha = remote.commit_and_push({"index.html": "filling\n"})
            answers = []
            for _ in range(400):
                answers.append(push(served.url, "site", sha))
                if answers[-1].status != 202:
                    break
            assert answers[-1].status == 503, "the full disk never refused a delivery"
            assert "full" in answers[-1].json()["error"], answers[-1].body
            refused = assert_refuses_clearly(served, remote)
            unfill(data)
            accepts_again(served, remote, db)
            kept = {r["delivery_id"]: r for r in ledger(db)}
        accepted = [a for a in [before, *answers] if a.status == 202]
        for answer in accepted:
            assert answer.json()["job"] in {j["id"] for j in jobs_table(db)}
        assert len(kept) >= len(accepted)
        assert len(refused) == 64
        no_unhandled_errors(tmp_path / "serve.log")


@pytest.mark.slow
def test_data_dir_read_only_at_start_answers_503_then_recovers_in_place(tmp_path: Path) -> None:
    """The disk came back read-only after a reboot: deployhook must still come up."""
    source = tmp_path / "data-source"
    remote, env = world(tmp_path, source)
    with serve(env, cwd=tmp_path, log_name="first.log") as served:  # a store with history
        assert (
            push(served.url, "site", remote.commit_and_push({"index.html": "v2\n"})).status == 202
        )
        wait_for(lambda: settled(source / "deployhook.sqlite3"), what="the first deploy")
    data = tmp_path / "data"
    env["DEPLOYHOOK_DATA_DIR"] = str(data)
    with read_only_bind(source, data) as set_writable, serve(env, cwd=tmp_path) as served:
        assert_refuses_clearly(served, remote)
        set_writable(True)
        accepts_again(served, remote, data / "deployhook.sqlite3")
    no_unhandled_errors(tmp_path / "serve.log")


@pytest.mark.slow
def test_disk_turning_read_only_mid_run_answers_503_and_recovers_after_repair(
    tmp_path: Path,
) -> None:
    """ext4 with errors=remount-ro: the kernel makes it read-only under open files."""
    data = tmp_path / "data"
    with ext4_disk(tmp_path, data) as disk:
        remote, env = world(tmp_path, data)
        db = data / "deployhook.sqlite3"
        with serve(env, cwd=tmp_path) as served:
            before = push(served.url, "site", remote.commit_and_push({"index.html": "v2\n"}))
            assert before.status == 202
            # Many request threads of every web process have written, and hold their
            # connection and files open, as on a busy server.
            with ThreadPoolExecutor(max_workers=16) as pool:
                warm = list(
                    pool.map(lambda _: push(served.url, "site", remote.deployed()), range(64))
                )
            assert {a.status for a in warm} == {202}
            wait_for(lambda: settled(db), what="the first deploy")
            disk.fail()
            assert_refuses_clearly(served, remote, tries=192)
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(timeout=60)
        disk.repair()  # what an admin does: unmount, fsck, mount, start again
        with serve(env, cwd=tmp_path, log_name="serve-repaired.log") as served:
            assert get_json(served.url, f"/jobs/{before.json()['job']}")["status"] == "succeeded"
            accepts_again(served, remote, db)
    no_unhandled_errors(tmp_path / "serve.log", tmp_path / "serve-repaired.log")


def test_a_write_statement_failing_for_lack_of_space_answers_503_with_the_reason(
    client: Any, service: Service, remote: Remote
) -> None:
    """SQLite reports a full disk at any statement, not only at COMMIT.

    A deterministic stand-in for the disk filling up mid-transaction: cap the database
    at its current size (PRAGMA max_page_count) on the connection the requests use (the
    test client runs them one at a time, so the backend keeps just one). The error is
    SQLite's own SQLITE_FULL, raised by the INSERT that needs a new page.
    """
    fault, reason = "full", "full"
    backend = service.store.backend
    conn = backend._take()  # type: ignore[attr-defined]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    backend._give(conn)  # type: ignore[attr-defined]
    statuses: Counter[int] = Counter()
    last: dict[str, Any] = {}
    for n in range(200):
        body = gitea_push_body(sha=remote.deployed(), full_name="jeff/site", pad_to=3072)
        resp = client.post(
            "/deploy/site",
            data=body,
            headers=gitea_headers(body, delivery=f"{fault}-{n}-" + "x" * 100),
        )
        statuses[resp.status_code] += 1
        if resp.status_code != 202:
            last = resp.get_json()
            break
    assert set(statuses) <= {202, 503}, f"answers once the store is {fault}: {dict(statuses)}"
    assert statuses[503] == 1
    assert reason in last["error"], f"503 without the reason: {last['error']!r}"
