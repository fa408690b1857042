"""`deployhook deploy | rollback | hold | release` against the shared store, with a real
Worker thread (as `deployhook serve` would run one) and the recording fake docker."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from deployhook.cli import main
from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.cli_logging import restore_logging  # noqa: F401 - an autouse fixture
from tests.helpers import FakeDocker, Remote, gitea_headers, gitea_push_body


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=settings.to_environ(), catch_exceptions=False)


@pytest.fixture
def worker(service: Service) -> Iterator[Worker]:
    """A deploy worker running in a thread beside the CLI, on the same store."""
    running = Worker(service)
    thread = threading.Thread(target=running.work, name="test-worker")
    thread.start()
    yield running
    running.stop()
    thread.join(timeout=30)
    assert not thread.is_alive()


def test_deploy_wait_follows_the_job_to_success(
    settings: Settings, worker: Worker, remote: Remote, fake_docker: FakeDocker, service: Service
) -> None:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    result = run(settings, "deploy", "site", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("queued job ")
    assert sha[:12] in lines[0]
    for expected in ("==> fetch", "==> compose", "fake compose: compose up -d --build"):
        assert expected in lines, result.stdout
    assert lines.index("==> fetch") < lines.index("==> compose")
    assert lines[-1].startswith(f"job {lines[0].split()[2].rstrip(':')} succeeded")
    assert "no deploy worker is alive" not in result.stderr
    assert remote.deployed() == sha
    [job] = service.store.jobs("site")
    assert (job.trigger, job.status, job.sha) == (Trigger.MANUAL, Status.SUCCEEDED, sha)


def test_deploy_wait_exits_1_when_the_deploy_fails(
    settings: Settings, worker: Worker, remote: Remote, fake_docker: FakeDocker, service: Service
) -> None:
    remote.commit_and_push({"index.html": "broken\n"})
    fake_docker.set(fail=True)
    result = run(settings, "deploy", "site", "--wait", "--timeout", "60")
    assert result.exit_code == 1, result.output
    assert "fake compose: failing as asked" in result.stdout
    assert "==> compose failed: " in result.stdout
    # (the worker thread shares this process's log setup: its JSON lines are skipped)
    [error] = [ln for ln in result.stderr.splitlines() if ln.startswith("deployhook:")]
    assert error.startswith("deployhook: job ")
    assert "exited with 1" in error


def test_deploy_without_a_worker_queues_and_says_so(
    settings: Settings, remote: Remote, service: Service
) -> None:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    result = run(settings, "deploy", "site")
    assert result.exit_code == 0, result.output
    assert "no deploy worker is alive" in result.stderr
    [job] = service.store.jobs("site")
    assert (job.status, job.sha, job.trigger) == (Status.QUEUED, sha, Trigger.MANUAL)


def test_deploy_wait_gives_up_after_its_timeout(settings: Settings, remote: Remote) -> None:
    result = run(settings, "deploy", "site", "--wait", "--timeout", "1")
    assert result.exit_code == 1
    assert "no deploy worker is alive" in result.stderr
    assert "is still queued after 1 s" in result.stderr


def test_deploy_joins_the_queued_job_and_follows_it(
    settings: Settings, remote: Remote, service: Service, fake_docker: FakeDocker
) -> None:
    first = remote.deployed()
    queued, _ = service.run("site", sha=first)
    newer = remote.commit_and_push({"index.html": "v3\n"})
    result = run(settings, "deploy", "site")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"joined job {queued.id}: manual of site at {newer[:12]}")
    # The worker starts while `deploy --wait` waits on the job it joined.
    late = Worker(service)
    starter = threading.Timer(1.0, late.work)
    starter.start()
    try:
        followed = run(settings, "deploy", "site", "--sha", newer, "--wait", "--timeout", "60")
    finally:
        late.stop()
        starter.join(timeout=30)
    assert followed.exit_code == 0, followed.output
    assert followed.stdout.startswith(f"joined job {queued.id}:")
    assert f"job {queued.id} succeeded" in followed.stdout
    assert remote.deployed() == newer
    assert [c["head"] for c in fake_docker.ups()] == [newer]


def test_deploy_a_given_sha(settings: Settings, remote: Remote, service: Service) -> None:
    old = remote.deployed()
    remote.commit_and_push({"index.html": "v2\n"})
    assert run(settings, "deploy", "site", "--sha", old.upper()).exit_code == 0
    assert service.store.jobs("site")[0].sha == old


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("deploy", "ghost"), "no repo named 'ghost'"),
        (("deploy", "site", "--sha", "abc123"), "not a full commit id"),
        (("rollback", "ghost"), "no repo named 'ghost'"),
        (("hold", "ghost"), "no repo named 'ghost'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    settings: Settings, args: tuple[str, ...], message: str
) -> None:
    result = run(settings, *args)
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line


def test_deploy_with_an_invalid_registry_exits_2_naming_the_file(settings: Settings) -> None:
    settings.registry.write_text("repos:\n  site:\n    path: /srv/site\n    brnach: main\n")
    result = run(settings, "deploy", "site")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert str(settings.registry) in line
    assert "repos.site.brnach" in line


def test_deploy_exits_1_when_the_remote_cannot_be_read(
    settings: Settings, remote: Remote, tmp_path: Any
) -> None:
    remote.origin.rename(tmp_path / "moved.git")
    result = run(settings, "deploy", "site")
    assert result.exit_code == 1
    assert "cannot read the head of main on origin" in result.stderr


def test_rollback_without_an_earlier_good_deploy_exits_1(settings: Settings) -> None:
    result = run(settings, "rollback", "site")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert "no earlier good deploy" in line


def test_rollback_wait_returns_to_the_previous_good_commit(
    settings: Settings, worker: Worker, remote: Remote, service: Service
) -> None:
    first = remote.commit_and_push({"index.html": "v2\n"})
    assert run(settings, "deploy", "site", "--wait", "--timeout", "60").exit_code == 0
    second = remote.commit_and_push({"index.html": "v3\n"})
    assert run(settings, "deploy", "site", "--wait", "--timeout", "60").exit_code == 0
    assert remote.deployed() == second
    result = run(settings, "rollback", "site", "--wait", "--timeout", "60")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("queued job ")
    assert f"rollback of site at {first[:12]}" in result.stdout
    assert remote.deployed() == first


def test_hold_then_release_queues_the_held_push(
    settings: Settings, client: Any, remote: Remote, service: Service
) -> None:
    result = run(settings, "hold", "site")
    assert result.exit_code == 0
    assert "site is on hold" in result.stdout
    sha = remote.commit_and_push({"index.html": "v2\n"})
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    answer = client.post("/deploy/site", data=body, headers=gitea_headers(body))
    assert answer.get_json()["status"] == "held"
    assert service.store.jobs("site") == []
    released = run(settings, "release", "site")
    assert released.exit_code == 0, released.output
    lines = released.stdout.splitlines()
    assert lines[0] == "site is released"
    assert lines[1].startswith("queued job ")
    assert sha[:12] in lines[1]
    [job] = service.store.jobs("site")
    assert (job.sha, job.status) == (sha, Status.QUEUED)


def test_release_without_a_held_push_queues_nothing(settings: Settings, service: Service) -> None:
    assert run(settings, "hold", "site").exit_code == 0
    result = run(settings, "release", "site")
    assert result.exit_code == 0
    assert result.stdout == "site is released\n"
    assert service.store.jobs("site") == []


def test_cancel_a_queued_job_then_again_exits_1(settings: Settings, service: Service) -> None:
    job, _ = service.store.enqueue(
        repo="site", sha="a" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    result = run(settings, "cancel", str(job.id))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cancelled job {job.id}: manual of site at {'a' * 12}\n"
    assert service.job(job.id).status == Status.CANCELLED
    again = run(settings, "cancel", str(job.id))
    assert again.exit_code == 1
    assert again.stderr == f"deployhook: job {job.id} already ended (cancelled)\n"


def test_cancel_a_running_job_stops_it(
    settings: Settings, worker: Worker, remote: Remote, fake_docker: FakeDocker, service: Service
) -> None:
    fake_docker.set(sleep=30)
    job, _ = service.run("site", sha=remote.deployed())
    for _ in range(300):
        if fake_docker.starts():
            break
        threading.Event().wait(0.05)
    result = run(settings, "cancel", str(job.id), "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["id"], shown["status"]) == (job.id, "running")  # as the endpoint answers
    for _ in range(400):
        if service.job(job.id).status.ended:
            break
        threading.Event().wait(0.05)
    assert service.job(job.id).status == Status.CANCELLED


def test_cancel_unknown_or_bad_job_exits_2(settings: Settings, service: Service) -> None:
    unknown = run(settings, "cancel", "999")
    assert (unknown.exit_code, unknown.stderr) == (2, "deployhook: no job 999\n")
    assert run(settings, "cancel", "abc").exit_code == 2


def test_deploy_from_a_git_hook_acts_on_the_checkout(
    settings: Settings, remote: Remote, service: Service
) -> None:
    """A push mirror's post-receive runs `deployhook deploy`: git exports GIT_DIR (the
    bare repository) to it, which must not become the checkout's repository."""
    import os
    import shlex
    import sys

    hook = remote.origin / "hooks" / "post-receive"
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.to_environ().items())
    hook.write_text(
        "#!/bin/sh\nwhile read -r old new ref; do\n"
        '  [ "$ref" = refs/heads/main ] && '
        f"env {env} PYTHONPATH={shlex.quote(os.getcwd())} "
        f"{shlex.quote(sys.executable)} -m deployhook deploy site\n"
        "done\nexit 0\n"
    )
    hook.chmod(0o755)
    sha = remote.commit_and_push({"index.html": "from the mirror\n"})
    [job] = service.jobs("site")
    assert (job.sha, job.trigger, job.status) == (sha, Trigger.MANUAL, Status.QUEUED)
