"""`deployhook status [NAME]` and `deployhook logs JOB [--follow]` against a real store."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from deployhook.cli import main
from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.helpers import FakeDocker, Remote, gitea_headers, gitea_push_body


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The CLI configures structlog for its process; a test run is one process."""
    handlers = logging.getLogger().handlers[:]
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


@pytest.fixture
def env(settings: Settings) -> dict[str, str]:
    return {**settings.to_environ(), "DEPLOYHOOK_LOG_FORMAT": "json"}


def cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def push(client: Any, sha: str) -> int:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    resp = client.post("/deploy/site", data=body, headers=gitea_headers(body))
    assert resp.status_code == 202
    return int(resp.get_json()["job"])


def test_status_table_before_any_deploy(env: dict[str, str], service: Service) -> None:
    result = cli(env, "status")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == [
        "REPO",
        "BRANCH",
        "STATUS",
        "DEPLOYED",
        "WHEN",
        "TOOK",
        "HELD",
        "QUEUED",
    ]
    assert row.split() == ["site", "main", "never", "-", "-", "-", "-", "-"]


def test_status_table_after_deploys(
    env: dict[str, str], client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    push(client, remote.commit_and_push({"index.html": "v2\n"}))
    Worker(service).work(burst=True)
    good = remote.deployed()
    bad = remote.commit_and_push({"index.html": "v3\n"})
    fake_docker.set(fail_sha=bad)
    service.store.hold("site")
    service.run("site", sha=bad)
    Worker(service).work(burst=True)  # fails; the rollback redeploys good
    failed = service.store.jobs("site", limit=3)[1]
    assert failed.status == Status.FAILED
    result = cli(env, "status")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    cells = lines[1].split()
    assert cells[:4] == ["site", "main", "succeeded", good[:10]]
    assert "held" in cells
    assert " ago " in lines[1]

    one = cli(env, "status", "site")
    assert one.exit_code == 0
    text = one.stdout
    assert text.splitlines()[0].startswith(f"site (main): deployed {good[:10]}")
    assert ", held" in text.splitlines()[0]
    jobs = [line.split() for line in text.splitlines()[2:]]
    assert [j[1] for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert [j[2] for j in jobs] == ["rollback", "manual", "push"]
    assert "compose up exited with 1" in text


def test_status_of_unknown_repo_is_one_line_and_exit_2(env: dict[str, str]) -> None:
    result = cli(env, "status", "nope")
    assert result.exit_code == 2
    assert result.stderr.strip() == "deployhook: no repo named 'nope' in the registry"
    assert result.stdout == ""


def test_logs_prints_the_whole_output(env: dict[str, str], service: Service) -> None:
    job, _ = service.store.enqueue(
        repo="site", sha="a" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    service.store.append_log(job.id, [(time.time(), "hello"), (time.time(), "world")])
    result = cli(env, "logs", str(job.id))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["hello", "world"]
    assert all(line[10] == "T" and line.split(" ")[0].endswith("Z") for line in lines)


def test_logs_strip_a_stacks_escape_sequences(env: dict[str, str], service: Service) -> None:
    """Trust finding 6: a stack's output cleared the admin's screen and set its title."""
    job, _ = service.store.enqueue(
        repo="site", sha="a" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    hostile = "\x1b[31mred\x1b[0m \x1b[2J\x1b[H\x1b]0;owned\x07\x1b]52;c;cHduZWQ=\x07done"
    service.store.append_log(job.id, [(time.time(), hostile)])
    result = cli(env, "logs", str(job.id))
    assert result.exit_code == 0
    assert result.stdout.split(" ", 1)[1] == "red done\n"  # not a terminal: no colours


@pytest.mark.parametrize("args", [["logs", "999"], ["logs", "999", "--follow"]])
def test_logs_of_unknown_job_is_exit_2(
    env: dict[str, str], service: Service, args: list[str]
) -> None:
    result = cli(env, *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == "deployhook: no job 999"


def test_logs_with_a_bad_job_id_is_a_usage_error(env: dict[str, str]) -> None:
    result = cli(env, "logs", "abc")
    assert result.exit_code == 2


def test_logs_follow_prints_until_the_job_ends(env: dict[str, str], service: Service) -> None:
    """A real process, so its output is read while it runs."""
    job, _ = service.store.enqueue(
        repo="site", sha="a" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    service.store.claim(worker="test-worker", node="", lease_s=300)
    service.store.append_log(job.id, [(time.time(), "starting")])
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployhook", "logs", str(job.id), "--follow"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().endswith(" starting\n")
        service.store.append_log(job.id, [(time.time(), "halfway")])
        assert proc.stdout.readline().endswith(" halfway\n")
        assert proc.poll() is None  # still following: the job runs
        service.store.finish(job.id, status=Status.SUCCEEDED, error=None)
        assert proc.wait(timeout=15) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
