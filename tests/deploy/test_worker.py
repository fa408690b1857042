"""The worker with real git (a bare origin, real pushes) and a recording fake compose."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.conftest import write_registry
from tests.helpers import FakeDocker, Remote, git, gitea_headers, gitea_push_body, overlapping


def push(client: Any, sha: str, repo: str = "site") -> dict[str, Any]:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    resp = client.post(f"/deploy/{repo}", data=body, headers=gitea_headers(body))
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def burst(service: Service) -> None:
    Worker(service).work(burst=True)


def test_push_deploys_exact_sha_and_stays_on_branch(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    old = remote.deployed()
    sha = remote.commit_and_push({"index.html": "v2\n"})
    job_id = push(client, sha)["job"]
    burst(service)
    job = service.store.job(job_id)
    assert job.status == Status.SUCCEEDED, job.error
    assert [s.name for s in job.steps] == ["fetch", "checkout", "compose"]
    assert job.previous_sha == old
    assert remote.deployed() == sha
    assert git(remote.checkout, "symbolic-ref", "--short", "HEAD") == "main"
    assert (remote.checkout / "index.html").read_text() == "v2\n"
    [call] = fake_docker.ups()
    assert call["argv"] == ["compose", "up", "-d", "--build"]
    assert call["head"] == sha
    log = "\n".join(r.line for r in service.store.log_lines(job_id))
    assert "fake compose: compose up -d --build" in log


def test_compose_argv_follows_registry(
    open_service: Any, tmp_path: Path, remote: Remote, fake_docker: FakeDocker, settings: Settings
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "compose_files": ["a.yml", "b.yml"],
                "project_name": "mysite",
                "services": ["web", "worker"],
                "remove_orphans": True,
                "health_timeout": 0,
            }
        },
    )
    svc = open_service(settings)
    svc.run("site")
    burst(svc)
    [call] = fake_docker.ups()
    assert call["argv"] == [
        "compose",
        "-f",
        "a.yml",
        "-f",
        "b.yml",
        "-p",
        "mysite",
        "up",
        "-d",
        "--build",
        "--remove-orphans",
        "--",
        "web",
        "worker",
    ]


def test_force_push_moves_checkout(client: Any, service: Service, remote: Remote) -> None:
    first = remote.commit_and_push({"index.html": "v2\n"})
    push(client, first)
    burst(service)
    git(remote.dev, "reset", "-q", "--hard", "HEAD~1")
    rewritten = remote.commit({"index.html": "v2-rewritten\n"})
    remote.push(force=True)
    job_id = push(client, rewritten)["job"]
    burst(service)
    assert service.store.job(job_id).status == Status.SUCCEEDED
    assert remote.deployed() == rewritten
    assert git(remote.checkout, "symbolic-ref", "--short", "HEAD") == "main"


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("index.html", "local changes to tracked files: index.html"),  # tracked, edited
        ("config.local", "Untracked working tree file 'config.local' would be overwritten"),
    ],
)
def test_local_files_in_the_way_fail_the_job_and_stay_intact(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker, name: str, error: str
) -> None:
    (remote.checkout / name).write_text("the server's own\n")
    sha = remote.commit_and_push({name: "from the repo\n"})
    job_id = push(client, sha)["job"]
    burst(service)
    job = service.store.job(job_id)
    assert job.status == Status.FAILED
    assert error in (job.error or "")
    assert (remote.checkout / name).read_text() == "the server's own\n"
    assert fake_docker.ups() == []


def test_untracked_env_file_is_byte_for_byte_intact(
    client: Any, service: Service, remote: Remote
) -> None:
    env = b"SECRET=\x00\xff binary-ish\r\nDB=postgres://u:p@db/x\n"
    (remote.checkout / ".env").write_bytes(env)
    (remote.checkout / "certs").mkdir()
    (remote.checkout / "certs" / "key.pem").write_bytes(b"-----key-----")
    for n in range(3):
        push(client, remote.commit_and_push({"index.html": f"v{n + 2}\n"}))
        burst(service)
    assert (remote.checkout / ".env").read_bytes() == env
    assert (remote.checkout / "certs" / "key.pem").read_bytes() == b"-----key-----"


def test_failure_rolls_back_to_last_good(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    good = remote.commit_and_push({"index.html": "good\n"})
    push(client, good)
    burst(service)
    bad = remote.commit_and_push({"index.html": "bad\n"})
    fake_docker.set(fail_sha=bad)
    job_id = push(client, bad)["job"]
    burst(service)
    failed = service.store.job(job_id)
    assert failed.status == Status.FAILED
    assert "exited with 1" in (failed.error or "")
    jobs = service.store.jobs("site")
    assert jobs[0].trigger == Trigger.ROLLBACK
    assert jobs[0].status == Status.SUCCEEDED
    assert jobs[0].sha == good
    assert remote.deployed() == good
    assert (remote.checkout / "index.html").read_text() == "good\n"
    # Each links to the other, in the store and in the JOB JSON.
    rollback = jobs[0]
    assert (rollback.rollback_of, failed.rolled_back_by) == (job_id, rollback.id)
    assert client.get(f"/jobs/{job_id}").get_json()["rolled_back_by"] == rollback.id
    assert client.get(f"/jobs/{rollback.id}").get_json()["rollback_of"] == job_id
    assert jobs[1].rolled_back_by == rollback.id  # the history reads it too


def test_failed_rollback_does_not_roll_back(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    push(client, remote.commit_and_push({"index.html": "good\n"}))
    burst(service)
    push(client, remote.commit_and_push({"index.html": "bad\n"}))
    fake_docker.set(fail=True)
    burst(service)
    triggers = [(j.trigger, j.status) for j in service.store.jobs("site")]
    assert triggers[:2] == [(Trigger.ROLLBACK, Status.FAILED), (Trigger.PUSH, Status.FAILED)]
    assert len(triggers) == 3
    rollback, failed = service.store.jobs("site")[:2]
    assert (rollback.rollback_of, failed.rolled_back_by) == (failed.id, rollback.id)
    assert rollback.rolled_back_by is None


def test_no_rollback_when_a_newer_push_is_queued(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    push(client, remote.commit_and_push({"index.html": "good\n"}))
    burst(service)
    bad = remote.commit_and_push({"index.html": "bad\n"})
    fake_docker.set(fail_sha=bad, sleep=1.0)
    push(client, bad)
    worker = Worker(service)
    thread = threading.Thread(target=worker.work, kwargs={"burst": True})
    thread.start()
    while not fake_docker.record.exists() and not _running(service):
        time.sleep(0.02)
    fix = remote.commit_and_push({"index.html": "fixed\n"})
    push(client, fix)
    thread.join()
    burst(service)
    assert [j.trigger for j in service.store.jobs("site")][:2] == [Trigger.PUSH, Trigger.PUSH]
    assert remote.deployed() == fix


def _running(service: Service) -> bool:
    return bool(service.store.running_jobs())


def test_burst_of_20_pushes_costs_at_most_3_compose_runs(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    fake_docker.set(sleep=1.0)
    shas = [remote.commit({"index.html": f"v{n}\n"}) for n in range(20)]
    remote.push()  # the remote has all 20 commits; their webhooks arrive in a burst
    worker = Worker(service)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    for sha in shas:
        push(client, sha)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = service.store.jobs("site")
        if jobs and all(j.status.ended for j in jobs) and jobs[0].sha == shas[-1]:
            break
        time.sleep(0.05)
    worker.stop()
    thread.join(timeout=30)
    ups = fake_docker.ups()
    assert 1 <= len(ups) <= 3
    assert overlapping(ups) == []
    assert ups[-1]["head"] == shas[-1]
    assert remote.deployed() == shas[-1]


def test_timeout_kills_the_whole_group(
    open_service: Any, settings: Settings, remote: Remote, fake_docker: FakeDocker
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "timeout": 2,
                "health_timeout": 0,
                "rollback": False,
            }
        },
    )
    fake_docker.set(sleep=30)
    svc = open_service(settings)
    job, _ = svc.run("site")
    started = time.monotonic()
    burst(svc)
    assert time.monotonic() - started < 15
    ended = svc.store.job(job.id)
    assert ended.status == Status.FAILED
    assert ended.error == "timed out after 2 s"
    # -ww: whole command lines, whatever COLUMNS says (ps cuts them to it otherwise)
    ps = subprocess.run(["ps", "-eww", "-o", "args="], capture_output=True, text=True).stdout
    assert str(fake_docker.path) not in ps


def test_cancel_running_job_stops_it_without_rollback(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    push(client, remote.commit_and_push({"index.html": "good\n"}))
    burst(service)
    fake_docker.set(sleep=30)
    job_id = push(client, remote.commit_and_push({"index.html": "slow\n"}))["job"]
    worker = Worker(service)
    thread = threading.Thread(target=worker.work, daemon=True)
    thread.start()
    while service.store.job(job_id).status != Status.RUNNING or "compose" not in [
        s.name for s in service.store.job(job_id).steps
    ]:
        time.sleep(0.05)
    auth = {"Authorization": "Bearer admin-token-for-tests"}
    resp = client.post(f"/jobs/{job_id}/cancel", headers=auth)
    assert resp.status_code == 200
    while not service.store.job(job_id).status.ended:
        time.sleep(0.05)
    worker.stop()
    thread.join(timeout=30)
    assert service.store.job(job_id).status == Status.CANCELLED
    assert service.store.jobs("site")[0].id == job_id  # no rollback queued
    assert client.post(f"/jobs/{job_id}/cancel", headers=auth).status_code == 409


def test_cancel_queued_job(client: Any, service: Service, remote: Remote) -> None:
    job_id = push(client, remote.commit_and_push({"index.html": "x\n"}))["job"]
    resp = client.post(
        f"/jobs/{job_id}/cancel", headers={"Authorization": "Bearer admin-token-for-tests"}
    )
    assert resp.status_code == 200
    assert resp.get_json()["status"] == "cancelled"


def test_reconcile_deploys_missed_push_and_keeps_rollback(
    open_service: Any, settings: Settings, remote: Remote, fake_docker: FakeDocker
) -> None:
    svc = open_service(settings)
    worker = Worker(svc)
    assert worker.reconcile() == []  # first sight only records the head
    missed = remote.commit_and_push({"index.html": "missed\n"})
    [job] = worker.reconcile()
    assert (job.trigger, job.sha) == (Trigger.RECONCILE, missed)
    burst(svc)
    assert remote.deployed() == missed
    newer = remote.commit_and_push({"index.html": "newer\n"})
    worker.reconcile()
    burst(svc)
    assert remote.deployed() == newer
    svc.rollback("site")
    burst(svc)
    assert remote.deployed() == missed
    assert worker.reconcile() == []
    assert remote.deployed() == missed


def test_retry_cap_after_three_interrupted_runs(service: Service, remote: Remote) -> None:
    sha = remote.commit_and_push({"index.html": "x\n"})
    service.run("site", sha=sha)
    for attempt in range(3):
        job = service.store.claim(worker="dead-worker", node="", lease_s=30)
        assert job is not None, attempt
        retry = service.store.interrupt(job, reason="interrupted: its worker died")
        assert (retry is None) == (attempt == 2)
    assert service.store.claim(worker="w", node="", lease_s=30) is None
    status = service.repo_status("site")
    assert "interrupted 3 times" in status["problem"]


def test_interrupt_does_not_retry_when_newer_job_is_queued(
    service: Service, remote: Remote
) -> None:
    first = remote.commit_and_push({"index.html": "1\n"})
    service.run("site", sha=first)
    job = service.store.claim(worker="dead", node="", lease_s=30)
    assert job is not None
    second = remote.commit_and_push({"index.html": "2\n"})
    service.run("site", sha=second)
    assert service.store.interrupt(job, reason="died") is None


def test_jobs_of_one_repo_never_overlap_across_workers(
    open_service: Any, settings: Settings, remote: Remote, fake_docker: FakeDocker, client: Any
) -> None:
    fake_docker.set(sleep=0.3)
    services = [open_service(settings) for _ in range(3)]
    workers = [Worker(s) for s in services]
    threads = [threading.Thread(target=w.work, daemon=True) for w in workers]
    for t in threads:
        t.start()
    last = None
    for n in range(8):
        last = remote.commit_and_push({"index.html": f"{n}\n"})
        push(client, last)
        time.sleep(0.1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = services[0].store.jobs("site")
        if all(j.status.ended for j in jobs) and jobs[0].sha == last:
            break
        time.sleep(0.05)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(timeout=30)
    assert overlapping(fake_docker.ups()) == []
    assert remote.deployed() == last


@pytest.mark.parametrize("flag", [True, False])
def test_repo_removed_from_registry_fails_its_job(
    open_service: Any, settings: Settings, remote: Remote, flag: bool
) -> None:
    svc = open_service(settings)
    job, _ = svc.run("site")
    if flag:
        write_registry(settings.registry, {})
    burst(svc)
    ended = svc.store.job(job.id)
    assert (ended.status == Status.FAILED) == flag


def test_compose_never_sees_deployhook_or_repo_secrets(
    settings: Settings,
    remote: Remote,
    fake_docker: FakeDocker,
    open_service: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "secret_env": "SITE_SECRET",
                "notify_env": "SITE_NOTIFY",
            }
        },
    )
    monkeypatch.setenv("DEPLOYHOOK_ADMIN_TOKEN", "admin-token-in-env")
    monkeypatch.setenv("DEPLOYHOOK_SECRET", "default-secret-in-env")
    monkeypatch.setenv("SITE_SECRET", "site-secret-in-env")
    monkeypatch.setenv("SITE_NOTIFY", "json://user:pass@127.0.0.1/")
    monkeypatch.setenv("SITE_DOMAIN", "example.org")  # an ordinary variable compose may use
    script = fake_docker.path.read_text().replace(
        "start = time.time()\n",
        "start = time.time()\nopen(record + '.env', 'w').write(json.dumps(dict(os.environ)))\n",
        1,
    )
    fake_docker.path.write_text(script)
    svc = open_service(settings)
    svc.run("site")
    burst(svc)
    import json

    seen = json.loads(Path(str(fake_docker.record) + ".env").read_text())
    assert seen["SITE_DOMAIN"] == "example.org"
    for name in ("DEPLOYHOOK_ADMIN_TOKEN", "DEPLOYHOOK_SECRET", "SITE_SECRET", "SITE_NOTIFY"):
        assert name not in seen
    assert "secret-in-env" not in json.dumps(seen)


def test_job_output_is_stored_with_secrets_masked(
    settings: Settings,
    remote: Remote,
    fake_docker: FakeDocker,
    open_service: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {"path": str(remote.checkout), "health_timeout": 0},
            "other": {"path": str(remote.checkout.parent / "x"), "secret_env": "OTHER_SECRET"},
        },
    )
    monkeypatch.setenv("OTHER_SECRET", "other-repo-webhook-secret")
    script = fake_docker.path.read_text().replace(
        'print("fake compose: "',
        'print("leak: other-repo-webhook-secret admin-token-for-tests", flush=True)\n'
        'print("fake compose: "',
        1,
    )
    fake_docker.path.write_text(script)
    svc = open_service(settings)
    job, _ = svc.run("site")
    burst(svc)
    stored = "\n".join(r.line for r in svc.store.log_lines(job.id))
    assert "leak: [redacted] [redacted]" in stored
    assert "other-repo-webhook-secret" not in stored


def test_on_local_changes_reset_discards_tracked_edits_and_keeps_untracked(
    settings: Settings, remote: Remote, fake_docker: FakeDocker, open_service: Any
) -> None:
    write_registry(
        settings.registry,
        {"site": {"path": str(remote.checkout), "health_timeout": 0, "on_local_changes": "reset"}},
    )
    (remote.checkout / "index.html").write_text("hand edit on the server\n")
    (remote.checkout / ".env").write_text("KEEP=me\n")
    sha = remote.commit_and_push({"index.html": "v2\n"})
    svc = open_service(settings)
    job, _ = svc.run("site", sha=sha)
    burst(svc)
    assert svc.store.job(job.id).status == Status.SUCCEEDED
    assert (remote.checkout / "index.html").read_text() == "v2\n"
    assert (remote.checkout / ".env").read_text() == "KEEP=me\n"
    log = "\n".join(r.line for r in svc.store.log_lines(job.id))
    assert "discarding local changes to tracked files: index.html" in log


def test_submodules_are_updated_when_the_repo_asks(
    settings: Settings,
    remote: Remote,
    tmp_path: Path,
    fake_docker: FakeDocker,
    open_service: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Local file:// submodules need git's explicit consent (real ones use https or ssh).
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "protocol.file.allow")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "always")
    from tests.helpers import make_remote

    (tmp_path / "themes").mkdir()
    theme = make_remote(tmp_path / "themes", "theme", files={"style.css": "body{}\n"})
    git(remote.dev, "submodule", "add", "-q", theme.origin.as_uri(), "theme")
    sha = remote.commit_and_push({"index.html": "with a theme\n"})
    write_registry(
        settings.registry,
        {"site": {"path": str(remote.checkout), "health_timeout": 0, "submodules": True}},
    )
    svc = open_service(settings)
    job, _ = svc.run("site", sha=sha)
    burst(svc)
    assert svc.store.job(job.id).status == Status.SUCCEEDED, svc.store.job(job.id).error
    assert (remote.checkout / "theme" / "style.css").read_text() == "body{}\n"
