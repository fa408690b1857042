"""The data dir full or read-only under a running `deployhook serve` (root: real mounts).

CONTRACT §3: 503 only for server-side conditions; /healthz 503 only when deliveries
cannot be accepted. The server must not crash, must keep serving status, and must
accept deliveries again once the disk is usable.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

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
from tests.helpers import Remote, make_fake_docker, make_remote
from tests.server import Served, serve

pytestmark = pytest.mark.slow


def world(tmp: Path, data: Path) -> tuple[Remote, dict[str, str]]:
    remote = make_remote(tmp, "site")
    fake = make_fake_docker(tmp / "fake")
    registry = write_registry(tmp / "repos.yml", {
        "site": {"path": str(remote.checkout), "health_timeout": 0}})
    return remote, serve_env(tmp, registry, fake, DEPLOYHOOK_DATA_DIR=str(data))


def assert_refuses_clearly(served: Served, remote: Remote, *, tries: int = 20) -> list[Answer]:
    """While the store cannot be written: 503 with a reason, status still served."""
    sha = remote.commit_and_push({"index.html": "while broken\n"})
    answers = [push(served.url, "site", sha) for _ in range(tries)]
    for answer in answers:
        assert answer.status == 503, (answer.status, answer.body)
        assert "store not writable" in answer.json()["error"], answer.body
    for _ in range(10):  # every web thread and process, not only the first one asked
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
    wait_for(lambda: call(served.url, "/healthz").status == 200, timeout=30,
             what="/healthz to recover")
    sha = remote.commit_and_push({"index.html": "recovered\n"})
    answer = push(served.url, "site", sha)
    assert answer.status == 202, answer.body
    wait_for(lambda: settled(db), timeout=30, what="the deploy after recovery")
    assert remote.deployed() == sha
    assert jobs_table(db)[-1]["status"] == "succeeded"


def no_unhandled_errors(*logs: Path) -> None:
    for log in logs:
        text = log.read_text(errors="replace")
        assert "Exception on /" not in text, f"an unhandled exception (a 500) in {log}"


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
        assert len(refused) == 20
        no_unhandled_errors(tmp_path / "serve.log")


def test_data_dir_read_only_at_start_answers_503_then_recovers_in_place(
        tmp_path: Path) -> None:
    """The disk came back read-only after a reboot: deployhook must still come up."""
    source = tmp_path / "data-source"
    remote, env = world(tmp_path, source)
    with serve(env, cwd=tmp_path, log_name="first.log") as served:  # a store with history
        assert push(served.url, "site", remote.commit_and_push({"index.html": "v2\n"})
                    ).status == 202
        wait_for(lambda: settled(source / "deployhook.sqlite3"), what="the first deploy")
    data = tmp_path / "data"
    env["DEPLOYHOOK_DATA_DIR"] = str(data)
    with read_only_bind(source, data) as set_writable, serve(env, cwd=tmp_path) as served:
        assert_refuses_clearly(served, remote)
        set_writable(True)
        accepts_again(served, remote, data / "deployhook.sqlite3")
    no_unhandled_errors(tmp_path / "serve.log")


def test_disk_turning_read_only_mid_run_answers_503_and_recovers_after_repair(
        tmp_path: Path) -> None:
    """ext4 with errors=remount-ro: the kernel makes it read-only under open files."""
    data = tmp_path / "data"
    with ext4_disk(tmp_path, data) as disk:
        remote, env = world(tmp_path, data)
        db = data / "deployhook.sqlite3"
        with serve(env, cwd=tmp_path) as served:
            before = push(served.url, "site", remote.commit_and_push({"index.html": "v2\n"}))
            assert before.status == 202
            wait_for(lambda: settled(db), what="the first deploy")
            disk.fail()
            assert_refuses_clearly(served, remote)
            served.proc.send_signal(signal.SIGTERM)
            served.proc.wait(timeout=60)
        disk.repair()  # what an admin does: unmount, fsck, mount, start again
        with serve(env, cwd=tmp_path, log_name="serve-repaired.log") as served:
            assert get_json(served.url, f"/jobs/{before.json()['job']}")["status"] == \
                "succeeded"
            accepts_again(served, remote, db)
    no_unhandled_errors(tmp_path / "serve.log", tmp_path / "serve-repaired.log")
