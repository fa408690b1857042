"""Faults around a deploy: the remote unreachable or hanging, repos.yml rewritten live."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, StepStatus
from deployhook.service import Service
from tests.conftest import write_registry
from tests.hardening.support import call, push, serve_env
from tests.helpers import (
    SECRET,
    FakeDocker,
    Remote,
    git,
    gitea_headers,
    gitea_push_body,
    make_remote,
)
from tests.server import serve


def deliver(client: Any, sha: str) -> int:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    resp = client.post("/deploy/site", data=body, headers=gitea_headers(body))
    assert resp.status_code == 202, resp.get_json()
    return int(resp.get_json()["job"])


def run_worker(service: Service) -> float:
    started = time.monotonic()
    Worker(service).work(burst=True)
    return time.monotonic() - started


def test_remote_moved_away_fails_fetch_naming_it_and_next_push_recovers(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker, tmp_path: Path
) -> None:
    moved = tmp_path / "origin-moved-away.git"
    broken_sha = remote.commit_and_push({"index.html": "v2\n"})
    remote.origin.rename(moved)
    job = deliver(client, broken_sha)
    run_worker(service)
    failed = service.store.job(job)
    assert failed.status == Status.FAILED
    [fetch] = [s for s in failed.steps if s.status == StepStatus.FAILED]
    assert fetch.name == "fetch"
    assert "git fetch failed" in (failed.error or "")
    # Which remote failed, by name or by where it points: the admin's first question.
    assert "origin" in (failed.error or "") or str(remote.origin) in (failed.error or ""), (
        failed.error
    )
    assert fake_docker.ups() == []  # nothing deployed from a stale checkout

    moved.rename(remote.origin)
    fixed_sha = remote.commit_and_push({"index.html": "v3\n"})
    job = deliver(client, fixed_sha)
    run_worker(service)
    assert service.store.job(job).status == Status.SUCCEEDED
    assert remote.deployed() == fixed_sha


@pytest.fixture
def silent_remote() -> Iterator[str]:
    """An HTTP 'git server' that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/jeff/site.git"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_network_remote_fails_within_the_job_timeout(
    kind: str,
    settings: Settings,
    remote: Remote,
    *,
    open_service: Callable[..., Service],
    silent_remote: str,
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}/jeff/site.git"
    url = refused if kind == "refused" else silent_remote
    git(remote.checkout, "remote", "set-url", "origin", url)
    write_registry(
        settings.registry,
        {"site": {"path": str(remote.checkout), "health_timeout": 0, "timeout": 4}},
    )
    service = open_service(settings)
    from deployhook.web import create_app

    client = create_app(settings, service_=service, configure_logging=False).test_client()
    job = deliver(client, remote.commit_and_push({"index.html": "v2\n"}))
    took = run_worker(service)
    failed = service.store.job(job)
    assert failed.status == Status.FAILED
    assert failed.steps[0].name == "fetch" and failed.steps[0].status == StepStatus.FAILED
    assert failed.error and "fetch" in failed.error, failed.error
    assert took < 30, f"a hanging remote held the worker for {took:.0f} s"


# -- repos.yml rewritten while deliveries arrive ---------------------------------------------


def versions(tmp: Path, remotes: dict[str, Remote]) -> tuple[str, str]:
    def doc(names: list[str]) -> str:
        return yaml.safe_dump(
            {"repos": {n: {"path": str(remotes[n].checkout), "health_timeout": 0} for n in names}},
            sort_keys=False,
        )

    return doc(["alpha", "beta"]), doc(["alpha", "beta", "gamma"])


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_in_place(path: Path, text: str) -> None:
    """As `cat > repos.yml`, nano, or a slow network copy do: truncate, then write."""
    with open(path, "w") as fh:
        fh.flush()
        time.sleep(0.005)
        half = len(text) // 2
        fh.write(text[:half])
        fh.flush()
        time.sleep(0.01)
        fh.write(text[half:])


@pytest.mark.slow
@pytest.mark.parametrize("writer", [write_atomically, write_in_place], ids=["atomic", "in-place"])
def test_registry_rewritten_while_deliveries_arrive(
    writer: Callable[[Path, str], None], tmp_path: Path
) -> None:
    remotes = {n: make_remote(tmp_path, n) for n in ("alpha", "beta", "gamma")}
    shas = {n: r.commit_and_push({"index.html": "v2\n"}) for n, r in remotes.items()}
    registry = tmp_path / "repos.yml"
    a, b = versions(tmp_path, remotes)
    write_atomically(registry, a)
    stop = threading.Event()
    seen: dict[str, Counter[int]] = {n: Counter() for n in remotes}

    def rewrite() -> None:
        while not stop.is_set():
            for text in (b, a):
                writer(registry, text)
                time.sleep(0.02)

    def post(url: str, n: int) -> None:
        name = ("alpha", "beta", "gamma")[n % 3]
        while not stop.is_set():
            answer = push(url, name, shas[name])
            seen[name][answer.status] += 1

    # No worker: this is about the intake's view of the registry, not about deploys.
    env = serve_env(tmp_path, registry, None, DEPLOYHOOK_WEB_PROCESSES="2")
    with serve(env, cwd=tmp_path, args=("--no-worker",)) as served:
        threads = [threading.Thread(target=rewrite)] + [
            threading.Thread(target=post, args=(served.url, n)) for n in range(6)
        ]
        for thread in threads:
            thread.start()
        time.sleep(4)
        stop.set()
        for thread in threads:
            thread.join(30)
        health = call(served.url, "/healthz")
    print(f"\nregistry rewritten {writer.__name__}: {dict(seen)}")
    assert all(s < 500 for counts in seen.values() for s in counts), seen
    assert sum(seen["alpha"].values()) > 50 and seen["gamma"][202] > 0
    # alpha and beta are in both versions: every delivery to them is accepted; gamma
    # comes and goes.
    assert set(seen["alpha"]) == {202}, f"alpha, in every version, got {dict(seen['alpha'])}"
    assert set(seen["beta"]) == {202}, f"beta, in every version, got {dict(seen['beta'])}"
    assert set(seen["gamma"]) <= {202, 404}
    assert health.status == 200


def test_secret_missing_for_one_repo_answers_503_only_for_it(
    tmp_path: Path, remote: Remote
) -> None:
    """A server-side condition of one repo (its secret env var unset) is that repo's 503."""
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {"path": str(remote.checkout)},
            "other": {"path": str(tmp_path / "other"), "secret_env": "UNSET_SECRET_VAR"},
        },
    )
    settings = Settings.load({}, registry=registry, data_dir=tmp_path / "data", secret=SECRET)
    service = Service.open(settings)
    try:
        from deployhook.web import create_app

        client = create_app(settings, service_=service, configure_logging=False).test_client()
        body = gitea_push_body(sha="a" * 40, full_name="jeff/other")
        resp = client.post("/deploy/other", data=body, headers=gitea_headers(body))
        assert resp.status_code == 503 and "UNSET_SECRET_VAR" in resp.get_json()["error"]
        assert deliver(client, remote.deployed()) > 0
    finally:
        service.close()
