"""What deployhook adds to a deploy, and how fast an idle worker picks a job up.

1. Overhead, on the real Docker engine (DOCKER_HOST): a no-change deploy of a busybox
   web stack through deployhook (signed push to the Flask app, then a burst worker:
   fetch, checkout, compose up -d --build, health through the Docker SDK) against the
   same work by hand (`git fetch` + `git merge --ff-only`, `docker compose up -d --build`,
   then `docker ps -q` by project label + `docker inspect` until healthy), alternating,
   N times each. Target: median within 1.2x.
2. Pickup latency: a real `Worker.work()` thread waits idle (its own Service, as a
   separate process would); each signed push's 202 is timed against the first step's
   `started_at` in the store. Compose is the recording fake docker of tests/helpers.py.
   Target: under 100 ms.

    python bench/deploy_overhead.py [--runs 10] [--pushes 30] [--compose "docker compose"]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from docker.client import DockerClient  # noqa: E402

from deployhook import log  # noqa: E402
from deployhook.config import Settings  # noqa: E402
from deployhook.deploy import compose  # noqa: E402
from deployhook.deploy.worker import Worker  # noqa: E402
from deployhook.models import Status  # noqa: E402
from deployhook.service import Service  # noqa: E402
from deployhook.web import create_app  # noqa: E402
from tests.e2e.conftest import make_stack  # noqa: E402
from tests.helpers import (  # noqa: E402
    SECRET,
    gitea_headers,
    gitea_push_body,
    make_fake_docker,
    make_remote,
)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def settings_for(
    tmp: Path, checkout: Path, *, compose_cmd: str | None, health_timeout: int
) -> Settings:
    registry = tmp / "repos.yml"
    registry.write_text(
        yaml.safe_dump(
            {
                "repos": {
                    "site": {
                        "path": str(checkout),
                        "health_timeout": health_timeout,
                        "rollback": False,
                    }
                }
            }
        )
    )
    return Settings.load(
        {},
        registry=registry,
        data_dir=tmp / "data",
        secret=SECRET,
        reconcile_interval=0,
        stop_grace=5,
        compose=compose_cmd,
    )


def push(client: Any, sha: str) -> tuple[int, float, float]:
    """POST a signed push; return (job id, time sent, time the 202 arrived)."""
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    headers = gitea_headers(body)
    sent = time.time()
    resp = client.post("/deploy/site", data=body, headers=headers)
    answered = time.time()
    assert resp.status_code == 202, resp.get_json()
    return int(resp.get_json()["job"]), sent, answered


def by_hand(checkout: Path, base: tuple[str, ...], project: str) -> None:
    """The same deploy as a shell script would do it."""

    def run(*argv: str) -> str:
        return subprocess.run(argv, cwd=checkout, check=True, capture_output=True, text=True).stdout

    run("git", "fetch", "--prune", "--no-tags", "origin", "main")
    run("git", "merge", "--ff-only", "-q", "origin/main")
    run(*base, "up", "-d", "--build")
    ids = run(
        "docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"
    ).split()
    while True:
        states = run(
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            *ids,
        ).split("\n")
        if all(s.strip() in {"running healthy", "running"} for s in states if s.strip()):
            return
        time.sleep(0.5)


def overhead(tmp: Path, *, runs: int, compose_cmd: str | None) -> dict[str, float]:
    client = DockerClient.from_env(timeout=120)
    stack = make_stack(tmp, client)
    settings = settings_for(tmp, stack.remote.checkout, compose_cmd=compose_cmd, health_timeout=60)
    stack.compose = base = compose.command(settings.compose)
    service = Service.open(settings)
    web = create_app(settings, service_=service, configure_logging=False).test_client()
    sha = stack.remote.deployed()
    try:
        job_id, _, _ = push(web, sha)  # the first deploy builds the image
        Worker(service).work(burst=True)
        first = service.store.job(job_id)
        assert first.status == Status.SUCCEEDED, first.error
        by_hand(stack.remote.checkout, base, stack.project)  # warm the by-hand path too
        ours: list[float] = []
        hand: list[float] = []
        for _ in range(runs):
            started = time.monotonic()
            job_id, _, _ = push(web, sha)
            Worker(service).work(burst=True)
            ours.append(time.monotonic() - started)
            job = service.store.job(job_id)
            assert job.status == Status.SUCCEEDED, job.error
            started = time.monotonic()
            by_hand(stack.remote.checkout, base, stack.project)
            hand.append(time.monotonic() - started)
        steps = {s.name: (s.finished_at or 0) - (s.started_at or 0) for s in job.steps}
    finally:
        service.close()
        stack.down()
        client.close()
    print(f"\n== no-change deploy, {shlex.join(base)}, {runs} runs each (seconds)")
    print(f"{'':12} {'median':>8} {'p90':>8} {'min':>8}")
    for name, values in (("deployhook", ours), ("by hand", hand)):
        print(
            f"{name:12} {statistics.median(values):8.3f} {pct(values, 90):8.3f} {min(values):8.3f}"
        )
    ratio = statistics.median(ours) / statistics.median(hand)
    print(f"ratio of medians: {ratio:.2f}x (target <= 1.2x)")
    print("last deployhook job's steps: " + ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    return {
        "ours_median": statistics.median(ours),
        "ours_p90": pct(ours, 90),
        "hand_median": statistics.median(hand),
        "hand_p90": pct(hand, 90),
        "ratio": ratio,
    }


def pickup(tmp: Path, *, pushes: int) -> dict[str, float]:
    remote = make_remote(tmp, "pickup")
    fake = make_fake_docker(tmp / "fake-docker")
    settings = settings_for(
        tmp, remote.checkout, compose_cmd=f"{fake.path} compose", health_timeout=0
    )
    web_service = Service.open(settings)
    worker_service = Service.open(settings)  # as the separate worker process has its own
    web = create_app(settings, service_=web_service, configure_logging=False).test_client()
    worker = Worker(worker_service)
    thread = threading.Thread(target=worker.work, name="bench-worker", daemon=True)
    thread.start()
    from_202: list[float] = []
    from_sent: list[float] = []
    try:
        time.sleep(0.5)  # let the worker reach its idle wait
        for n in range(pushes):
            sha = remote.commit_and_push({"index.html": f"v{n}\n"})
            time.sleep(0.2)  # an idle worker, not one finishing the previous job
            job_id, sent, answered = push(web, sha)
            end = time.monotonic() + 30
            while time.monotonic() < end:
                job = web_service.store.job(job_id)
                if job.status.ended:
                    break
                time.sleep(0.01)
            assert job.status == Status.SUCCEEDED, job.error
            first = job.steps[0].started_at
            assert first is not None
            from_202.append((first - answered) * 1000)
            from_sent.append((first - sent) * 1000)
    finally:
        worker.stop()
        thread.join(timeout=30)
        web_service.close()
        worker_service.close()
    print(
        f"\n== idle-worker pickup, {pushes} pushes (ms; negative: the worker started "
        "before the 202 reached the client)"
    )
    print(f"{'':24} {'p50':>8} {'p99':>8} {'max':>8}")
    for name, values in (("202 -> first step", from_202), ("request -> first step", from_sent)):
        print(f"{name:24} {pct(values, 50):8.1f} {pct(values, 99):8.1f} {max(values):8.1f}")
    return {
        "p50": pct(from_202, 50),
        "p99": pct(from_202, 99),
        "sent_p50": pct(from_sent, 50),
        "sent_p99": pct(from_sent, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pushes", type=int, default=30)
    parser.add_argument(
        "--compose", default=None, help="compose command (default: auto-detect, as deployhook does)"
    )
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    log.configure(fmt="json", level="error", stream=sys.stderr)
    for role in ("AUTHOR", "COMMITTER"):
        os.environ.setdefault(f"GIT_{role}_NAME", "Bench")
        os.environ.setdefault(f"GIT_{role}_EMAIL", "bench@example.com")
    with tempfile.TemporaryDirectory(prefix="dh-bench-") as tmp:
        for part in ("overhead", "pickup"):
            (Path(tmp) / part).mkdir()
        if not args.skip_overhead:
            overhead(Path(tmp) / "overhead", runs=args.runs, compose_cmd=args.compose)
        pickup(Path(tmp) / "pickup", pushes=args.pushes)


if __name__ == "__main__":
    main()
