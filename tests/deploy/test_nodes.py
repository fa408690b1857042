"""Node-pinned work: a worker deploys only its node's repos, on its own checkouts.

The first tests run on both store backends. The last one is the scale-out proof on one
PostgreSQL: two nodes (real `deployhook worker` processes with their own registry copy
and checkout root) and two receivers, 100 pushes, one node's worker killed mid-deploy.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Job, Status
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.databases import fresh_schema
from tests.helpers import SECRET, FakeDocker, Remote, gitea_headers, gitea_push_body, make_remote


def push(client: Any, repo: str, sha: str) -> dict[str, Any]:
    body = gitea_push_body(sha=sha, full_name=f"jeff/{repo}")
    resp = client.post(f"/deploy/{repo}", data=body, headers=gitea_headers(body))
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


@pytest.fixture
def two_repos(tmp_path: Path, settings: Settings) -> tuple[Remote, Remote]:
    gpu, plain = make_remote(tmp_path, "gpu-site"), make_remote(tmp_path, "plain-site")
    write_registry(
        settings.registry,
        {
            "gpu-site": {"path": str(gpu.checkout), "node": "gpu-box", "health_timeout": 0},
            "plain-site": {"path": str(plain.checkout), "health_timeout": 0},
        },
    )
    return gpu, plain


def test_a_node_worker_deploys_only_the_repos_pinned_to_it(
    open_service: Callable[[Settings], Service],
    settings: Settings,
    two_repos: tuple[Remote, Remote],
    fake_docker: FakeDocker,
) -> None:
    gpu, plain = two_repos
    web = open_service(settings)
    client = create_app(settings, service_=web, configure_logging=False).test_client()
    gpu_job = push(client, "gpu-site", gpu.commit_and_push({"index.html": "gpu\n"}))["job"]
    plain_job = push(client, "plain-site", plain.commit_and_push({"index.html": "p\n"}))["job"]
    gpu_worker = open_service(dataclasses.replace(settings, node="gpu-box"))
    Worker(gpu_worker).work(burst=True)
    assert web.store.job(gpu_job).status == Status.SUCCEEDED
    assert web.store.job(plain_job).status == Status.QUEUED
    assert [c["cwd"] for c in fake_docker.ups()] == [str(gpu.checkout)]
    Worker(web).work(burst=True)
    assert web.store.job(plain_job).status == Status.SUCCEEDED
    assert [c["cwd"] for c in fake_docker.ups()] == [str(gpu.checkout), str(plain.checkout)]


def test_healthz_is_degraded_for_a_node_whose_repos_have_no_live_worker(
    open_service: Callable[[Settings], Service],
    settings: Settings,
    two_repos: tuple[Remote, Remote],
) -> None:
    svc = open_service(settings)
    client = create_app(settings, service_=svc, configure_logging=False).test_client()
    svc.store.register_worker(worker="default-worker", node="", slots=2)
    problems = svc.problems()
    assert [p for p in problems if "gpu-box" in p] == [
        "no live worker for node 'gpu-box': its repos' jobs wait"
    ]
    assert not any("default node" in p for p in problems)
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    svc.store.register_worker(worker="gpu-worker", node="gpu-box", slots=1)
    assert not any("gpu-box" in p for p in svc.problems())


def test_api_workers_shows_each_nodes_repos_workers_and_heartbeat(
    open_service: Callable[[Settings], Service],
    settings: Settings,
    two_repos: tuple[Remote, Remote],
) -> None:
    svc = open_service(settings)
    client = create_app(settings, service_=svc, configure_logging=False).test_client()
    svc.store.register_worker(worker="w-default", node="", slots=2)
    nodes = client.get("/api/workers").get_json()["nodes"]
    assert [(n["node"], n["repos"], n["alive"]) for n in nodes] == [
        (None, ["plain-site"], True),
        ("gpu-box", ["gpu-site"], False),
    ]
    [worker] = nodes[0]["workers"]
    assert (worker["id"], worker["slots"], worker["alive"]) == ("w-default", 2, True)
    assert worker["heartbeat_at"].endswith("Z")
    assert nodes[1]["workers"] == []


# -- two nodes, two receivers, one PostgreSQL ----------------------------------------------

RECORDING_DOCKER = textwrap.dedent("""\
    #!{python}
    # A fake `docker` for one node: records each compose call's start and end (job id,
    # cwd, checkout HEAD); sleeps as control.json says (longer for one sha prefix).
    import json, os, subprocess, sys, time
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    if args[:2] == ["compose", "version"]:
        print("Docker Compose version v2.99.0-fake"); sys.exit(0)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True
                          ).stdout.strip()
    try:
        ctl = json.load(open(os.path.join(here, "control.json")))
    except OSError:
        ctl = {{}}
    def note(event):
        with open(os.path.join(here, "calls.jsonl"), "a") as fh:
            fh.write(json.dumps({{"event": event, "job": os.environ.get("DEPLOYHOOK_JOB_ID"),
                                 "cwd": os.getcwd(), "head": head, "t": time.time(),
                                 "argv": args}}) + "\\n")
    note("start")
    slow = ctl.get("slow_sha")
    time.sleep(float(ctl.get("slow", 30)) if slow and head.startswith(slow)
               else float(ctl.get("sleep", 0)))
    note("end")
""")


@dataclass
class Node:
    name: str
    root: Path
    registry: Path
    docker: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def control(self, **values: Any) -> None:
        (self.docker.parent / "control.json").write_text(json.dumps(values))

    def calls(self) -> list[dict[str, Any]]:
        path = self.docker.parent / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def start(self) -> None:
        log = (self.root / "worker.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deployhook", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


def make_node(
    name: str, root: Path, *, url: str, repos: dict[str, str], remotes: dict[str, Remote]
) -> Node:
    """A node: its own checkouts, registry copy (all repos, paths on this node), docker."""
    root.mkdir(parents=True)
    docker = root / "bin" / "docker"
    docker.parent.mkdir()
    docker.write_text(RECORDING_DOCKER.format(python=sys.executable))
    docker.chmod(docker.stat().st_mode | stat.S_IEXEC)
    entries = {}
    for repo, node in repos.items():
        checkout = root / "checkouts" / repo
        if node == name:
            subprocess.run(
                ["git", "clone", "-q", str(remotes[repo].origin), str(checkout)], check=True
            )
        entries[repo] = {
            "path": str(checkout),
            "node": node,
            "source": f"jeff/{repo}",
            "health_timeout": 0,
            "rollback": False,
        }
    registry = write_registry(root / "repos.yml", entries)
    env = {
        **os.environ,
        "DEPLOYHOOK_DATABASE_URL": url,
        "DEPLOYHOOK_NODE": name,
        "DEPLOYHOOK_REGISTRY": str(registry),
        "DEPLOYHOOK_DATA_DIR": str(root / "data"),
        "DEPLOYHOOK_COMPOSE": f"{docker} compose",
        "DEPLOYHOOK_WORKERS": "2",
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_SECRET": SECRET,
        "DEPLOYHOOK_LOG_FORMAT": "json",
        "DEPLOYHOOK_STOP_GRACE": "5",
    }
    return Node(name, root, registry, docker, env)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_schema() as url:
        yield url


@pytest.mark.postgres
@pytest.mark.slow
def test_two_nodes_and_two_receivers_share_one_postgres(tmp_path: Path, pg_url: str) -> None:
    repos = {f"{node}-{n}": node for node in ("alpha", "beta") for n in range(3)}
    (tmp_path / "forge").mkdir()
    remotes = {repo: make_remote(tmp_path / "forge", repo) for repo in repos}
    nodes = {
        name: make_node(name, tmp_path / name, url=pg_url, repos=repos, remotes=remotes)
        for name in ("alpha", "beta")
    }
    for node in nodes.values():
        node.control(sleep=0.2)
    receivers = []
    for node in nodes.values():
        svc = Service.open(
            Settings.load(
                {},
                registry=node.registry,
                data_dir=node.root / "web",
                secret=SECRET,
                database_url=pg_url,
                reconcile_interval=0,
            )
        )
        receivers.append(
            (svc, create_app(svc.settings, service_=svc, configure_logging=False).test_client())
        )
    store = receivers[0][0].store
    newest: dict[str, str] = {}
    try:
        for node in nodes.values():
            node.start()
        wait_for(
            "both workers", lambda: {w.node for w in store.workers(since=0)} == {"alpha", "beta"}
        )

        # 100 pushes across 6 repos, alternating receivers.
        for n in range(100):
            repo = list(repos)[n % len(repos)]
            newest[repo] = remotes[repo].commit_and_push({"index.html": f"{n}\n"})
            push(receivers[n % 2][1], repo, newest[repo])
        wait_for(
            "every repo deployed at its newest push",
            lambda: all(_settled(store.jobs(r, limit=200), newest[r]) for r in repos),
        )

        # Kill alpha's worker in the middle of a deploy; beta goes on deploying.
        alpha, beta = nodes["alpha"], nodes["beta"]
        slow = remotes["alpha-0"].commit_and_push({"index.html": "slow\n"})
        alpha.control(sleep=0.2, slow_sha=slow, slow=60)
        victim = push(receivers[0][1], "alpha-0", slow)["job"]
        wait_for(
            "the slow deploy to start", lambda: any(c["job"] == str(victim) for c in alpha.calls())
        )
        alpha.kill()
        killed_at = time.time()
        # /healthz on the other receiver: degraded (still 200), naming the node.
        problem = "no live worker for node 'alpha': its repos' jobs wait"
        health = wait_for(
            "healthz to name alpha",
            lambda: next(
                (
                    r
                    for r in [receivers[1][1].get("/healthz")]
                    if problem in r.get_json()["problems"]
                ),
                None,
            ),
        )
        assert health.status_code == 200
        assert health.get_json()["status"] == "degraded"
        for round_ in range(2):
            for repo in ("beta-0", "beta-1", "beta-2"):
                newest[repo] = remotes[repo].commit_and_push({"index.html": f"b{round_}\n"})
                push(receivers[1][1], repo, newest[repo])
            wait_for(
                "beta to deploy while alpha is down",
                lambda: all(
                    _settled(store.jobs(r, limit=200), newest[r])
                    for r in ("beta-0", "beta-1", "beta-2")
                ),
            )
        wait_for(
            "the victim to be interrupted", lambda: store.job(victim).status == Status.INTERRUPTED
        )
        [retry] = [j for j in store.jobs("alpha-0", limit=5) if j.id > victim]
        assert (retry.trigger, retry.sha, retry.status) == ("retry", slow, Status.QUEUED)
        beta_during_outage = [c for c in beta.calls() if c["event"] == "end" and c["t"] > killed_at]
        assert len(beta_during_outage) >= 3

        alpha.control(sleep=0.2)
        alpha.start()
        wait_for(
            "the retry to succeed on alpha", lambda: store.job(retry.id).status == Status.SUCCEEDED
        )
        newest["alpha-0"] = slow
    finally:
        for node in nodes.values():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
                try:
                    node.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    node.kill()
        jobs_now = {r: store.jobs(r, limit=500) for r in repos}
        for svc, _client in receivers:
            svc.close()

    _check_records(nodes, repos, store_jobs=jobs_now, victim=victim, retry=retry.id)


def _settled(jobs: list[Job], sha: str) -> bool:
    return (
        bool(jobs)
        and all(j.status.ended for j in jobs)
        and jobs[0].sha == sha
        and jobs[0].status == Status.SUCCEEDED
    )


def _check_records(
    nodes: dict[str, Node],
    repos: dict[str, str],
    *,
    store_jobs: dict[str, list[Job]],
    victim: int,
    retry: int,
) -> None:
    by_job: dict[int, list[dict[str, Any]]] = {}
    for node in nodes.values():
        for call in node.calls():
            call["node"] = node.name
            by_job.setdefault(int(call["job"]), []).append(call)
    jobs = {j.id: j for js in store_jobs.values() for j in js}
    for job_id, calls in by_job.items():
        job = jobs[job_id]
        node = nodes[repos[job.repo]]
        # Every compose call ran on the repo's node, in that node's own checkout.
        assert {c["node"] for c in calls} == {node.name}, job
        assert {c["cwd"] for c in calls} == {str(node.root / "checkouts" / job.repo)}
        assert all(c["head"] == job.sha for c in calls)
        # None twice: one start (and one end, unless its worker was killed).
        assert [c["event"] for c in calls] == (
            ["start"] if job_id == victim else ["start", "end"]
        ), job
    succeeded = [j.id for j in jobs.values() if j.status == Status.SUCCEEDED]
    assert sorted(succeeded) == sorted(k for k in by_job if k != victim)
    assert jobs[victim].status == Status.INTERRUPTED
    assert jobs[retry].worker != jobs[victim].worker
    for repo in repos:
        spans = sorted(
            (calls[0]["t"], calls[-1]["t"] if len(calls) == 2 else jobs[job_id].finished_at or 0)
            for job_id, calls in by_job.items()
            if jobs[job_id].repo == repo
        )
        assert spans, repo
        assert all(a_end <= b_start for (_a, a_end), (b_start, _b) in itertools.pairwise(spans)), (
            repo
        )


def test_a_deploy_first_stops_what_an_earlier_job_left_running_in_its_checkout(
    service: Service, client: Any, remote: Remote
) -> None:
    """A compose left behind by a worker killed on this host, its job ended elsewhere."""

    def sleeper(**env: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["sleep", "60"], cwd=remote.checkout, start_new_session=True, env={**os.environ, **env}
        )

    orphan = sleeper(DEPLOYHOOK_JOB_ID="424242")
    bystander = sleeper()  # an admin's own process in the checkout: not ours to stop
    # Reap the orphan at once, as init would for a real one (no zombie to wait out).
    reaper = threading.Thread(target=orphan.wait)
    reaper.start()
    try:
        job_id = push(client, "site", remote.commit_and_push({"index.html": "v2\n"}))["job"]
        Worker(service).work(burst=True)
        assert service.store.job(job_id).status == Status.SUCCEEDED
        reaper.join(timeout=20)
        assert orphan.returncode == -signal.SIGTERM
        assert bystander.poll() is None
    finally:
        for proc in (orphan, bystander):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
