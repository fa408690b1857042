"""`deployhook status [NAME]` and `deployhook logs JOB [--follow]` against a real store."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from deployhook.cli import main
from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.conftest import write_registry
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
    service.store.migrate()  # a server has started: the store exists, empty
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
    # The failure stays visible: the repo is rolled back, and says from what.
    assert lines[1].split()[:5] == ["site", "main", "rolled", "back", good[:10]]
    assert "held" in lines[1].split()
    assert " ago " in lines[1]
    assert lines[2] == (
        f"site: rolled back to {good[:10]} (job {failed.id + 1}) after job {failed.id} "
        f"failed to deploy {bad[:10]}"
    )
    assert lines[3] == "site: compose up exited with 1"

    one = cli(env, "status", "site")
    assert one.exit_code == 0
    text = one.stdout.splitlines()
    assert text[0].startswith(f"site (main): deployed {good[:10]}")
    assert ", held" in text[0]
    assert text[1:4] == [
        "state: rolled back",
        lines[2].removeprefix("site: "),
        "error: compose up exited with 1",
    ]
    jobs = [line.split() for line in text[5:]]
    assert [j[1] for j in jobs] == ["succeeded", "failed", "succeeded"]
    assert [j[2] for j in jobs] == ["rollback", "manual", "push"]
    assert text[5].endswith(f"(rollback of job {failed.id})")
    assert text[6].endswith(f"compose up exited with 1 (rolled back by job {failed.id + 1})")

    # A good deploy of a newer commit clears it.
    service.store.release("site", node="")
    fake_docker.set()
    service.run("site", sha=remote.commit_and_push({"index.html": "v4\n"}))
    Worker(service).work(burst=True)
    after = cli(env, "status").stdout.splitlines()
    assert after[1].split()[2] == "succeeded"
    assert len(after) == 2  # no rollback, no error left to show


def test_status_with_no_repos_says_how_to_add_one(env: dict[str, str], service: Service) -> None:
    service.store.migrate()
    service.settings.registry.write_text("repos: {}\n")
    result = cli(env, "status")
    assert result.exit_code == 0
    assert result.stdout == (
        f"no repos in {service.settings.registry} yet: add one with "
        "`deployhook repos add NAME --path /path/to/checkout`\n"
    )


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
    service.store.migrate()
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


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    """`python -m deployhook ARGS` in cwd, with no DEPLOYHOOK_* but env's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    return subprocess.run(
        [sys.executable, "-m", "deployhook", *args],
        cwd=cwd,
        env={**clean, "DEPLOYHOOK_LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_finds_the_servers_registry_and_store_from_any_directory(
    tmp_path: Path, remote: Remote, fake_docker: FakeDocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkout of deployhook with its live registry in config/, as docs/settings.md says."""
    home = tmp_path / "deployhook"
    (home / "config").mkdir(parents=True)
    (home / "repos.yml").write_text("repos: {}\n")  # the tracked example: not the live one
    live = write_registry(
        home / "config" / "repos.yml",
        {"site": {"path": str(remote.checkout), "health_timeout": 0}},
    )
    # The server's side, started in its directory: one deploy.
    monkeypatch.chdir(home)
    settings = Settings.load({}, compose=(str(fake_docker.path), "compose"), reconcile_interval=0)
    assert (settings.registry, settings.data_dir) == (live, home / "config" / "data")
    svc = Service.open(settings)
    job, _ = svc.run("site", sha=remote.deployed())
    Worker(svc).work(burst=True)
    svc.close()

    here = run_cli(home, "status")
    assert here.returncode == 0, here.stderr
    assert here.stdout.splitlines()[1].split()[:3] == ["site", "main", "succeeded"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    named = run_cli(elsewhere, "status", "site", env={"DEPLOYHOOK_REGISTRY": str(live)})
    assert named.returncode == 0, named.stderr
    assert f"\n{job.id}    succeeded  manual" in named.stdout  # the same store, beside it

    if not Path("/etc/deployhook/repos.yml").exists():
        lost = run_cli(elsewhere, "status")
        assert lost.returncode == 2
        assert lost.stderr.startswith("deployhook: no registry found (looked for ")
        assert str(elsewhere / "config" / "repos.yml") in lost.stderr
        assert lost.stdout == ""
        add = run_cli(elsewhere, "repos", "add", "x", "--path", str(remote.checkout))
        assert (add.returncode, add.stderr) == (2, lost.stderr)  # nothing created either
    # A registry here but no store: said so, and nothing is created.
    (elsewhere / "repos.yml").write_text(live.read_text())
    store = elsewhere / "data" / "deployhook.sqlite3"
    for args in (("status",), ("status", "site"), ("logs", str(job.id))):
        result = run_cli(elsewhere, *args)
        assert result.returncode == 2, args
        assert result.stderr.startswith(f"deployhook: no store yet at {store}: "), result.stderr
    listed = run_cli(elsewhere, "repos", "list")
    assert listed.returncode == 0
    assert listed.stdout.split()[0] == "site"
    assert "never deployed (no store yet)" in listed.stdout
    assert sorted(p.name for p in elsewhere.iterdir()) == ["repos.yml"]


def test_logs_of_a_repo_name_is_its_latest_job(env: dict[str, str], service: Service) -> None:
    older, _ = service.store.enqueue(
        repo="site", sha="a" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    service.store.append_log(older.id, [(time.time(), "the older job")])
    service.store.cancel(older.id)
    newer, _ = service.store.enqueue(
        repo="site", sha="b" * 40, ref=None, trigger=Trigger.MANUAL, node=""
    )
    service.store.append_log(newer.id, [(time.time(), "the newest job")])
    by_name = cli(env, "logs", "site")
    assert by_name.exit_code == 0, by_name.output
    assert by_name.stdout.split(" ", 1)[1] == "the newest job\n"
    assert cli(env, "logs", str(older.id)).stdout.split(" ", 1)[1] == "the older job\n"


def test_logs_of_a_repo_without_jobs_or_unknown_exit_2(
    env: dict[str, str], service: Service
) -> None:
    assert service.store.jobs("site") == []  # the store exists (the server made it), empty
    none_yet = cli(env, "logs", "site")
    assert none_yet.exit_code == 2
    assert none_yet.stderr == "deployhook: repo site has no jobs yet\n"
    unknown = cli(env, "logs", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr == "deployhook: no repo named 'nope' in the registry\n"


def test_status_json_is_the_apis(
    env: dict[str, str], client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    job = push(client, remote.deployed())
    Worker(service).work(burst=True)
    everything = json.loads(cli(env, "status", "--json").stdout)
    api = client.get("/api/overview").get_json()
    assert set(everything) == {"repos", "generated_at", "registry_error"}
    everything.pop("generated_at"), api.pop("generated_at")
    assert everything == api
    one = cli(env, "status", "site", "--json", "--limit", "1")
    assert one.exit_code == 0
    doc = json.loads(one.stdout)
    jobs = doc.pop("jobs")
    assert doc == client.get("/deploy/site").get_json()
    assert jobs == client.get("/deploy/site/jobs?limit=1").get_json()["jobs"]
    assert jobs[0]["id"] == job and jobs[0]["status"] == "succeeded"
    unknown = cli(env, "status", "nope", "--json")
    assert unknown.exit_code == 2 and unknown.stdout == ""
