"""The two store backends side by side: accept throughput and pickup latency.

Accept throughput: signed 3 KB Gitea pushes to 3 repos against a real
`deployhook serve --no-worker` (gunicorn gthread), driven by wrk at concurrency 16 and 64,
each request with a fresh delivery id. Pickup latency: with a `deployhook worker` idle
beside it, one push at a time; the time from the delivery's arrival (the job's
created_at) to its first step starting (the worker woke, claimed and began), read back
from GET /jobs/ID.

PostgreSQL: --database-url, else DEPLOYHOOK_TEST_DATABASE_URL, else `.ci/postgres.sh
start`. Each run uses a fresh schema, dropped at the end.

    python bench/store_backends.py [--seconds 10] [--pickups 30]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path

import psycopg
from common import (
    ROOT,
    SECRET,
    WrkResult,
    env_with,
    free_port,
    push_body,
    run_wrk,
    sign,
    stop,
    tool_version,
    wait_http,
    wrk_script,
)

from deployhook.config import Settings

REPOS = ["site-a", "site-b", "site-c"]
LEVELS = (16, 64)


def postgres_server(given: str | None) -> str:
    url = given or os.environ.get("DEPLOYHOOK_TEST_DATABASE_URL")
    if url:
        return url
    out = subprocess.run(
        ["bash", str(ROOT / ".ci" / "postgres.sh"), "start"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


def with_schema(url: str, schema: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = [*urllib.parse.parse_qsl(parts.query), ("options", f"-csearch_path={schema}")]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def write_registry(tmp: Path) -> Path:
    # The checkouts don't exist: a claimed job fails at once in `fetch`, after its first
    # step started, which is all the pickup measurement needs.
    registry = tmp / "repos.yml"
    registry.write_text(
        "repos:\n"
        + "".join(
            f"  {name}:\n    path: {tmp / 'checkouts' / name}\n    health_timeout: 0\n"
            f"    rollback: false\n"
            for name in REPOS
        )
    )
    return registry


def base_env(tmp: Path, database_url: str | None) -> dict[str, str]:
    extra = {
        "DEPLOYHOOK_REGISTRY": str(write_registry(tmp)),
        "DEPLOYHOOK_DATA_DIR": str(tmp / "data"),
        "DEPLOYHOOK_SECRET": SECRET,
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_LOG_LEVEL": "warning",
        "DEPLOYHOOK_LOG_FORMAT": "json",
        "DEPLOYHOOK_WEB_PROCESSES": "2",
        "DEPLOYHOOK_WEB_THREADS": str(Settings().web_threads),
    }
    if database_url:
        extra["DEPLOYHOOK_DATABASE_URL"] = database_url
    return env_with(**extra)


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "deployhook", *argv],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )


def throughput(tmp: Path, env: dict[str, str], *, seconds: int) -> list[WrkResult]:
    port = free_port()
    proc = start(["serve", "--no-worker", "--bind", f"127.0.0.1:{port}"], env, tmp / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz")
        script = wrk_script(tmp / "push.lua", repos=REPOS)
        run_wrk(url + "/", script, connections=4, seconds=2)  # warm-up
        return [run_wrk(url + "/", script, connections=c, seconds=seconds) for c in LEVELS]
    finally:
        stop(proc)


def _when(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def pickups(tmp: Path, env: dict[str, str], *, count: int) -> list[float]:
    port = free_port()
    web = start(["serve", "--no-worker", "--bind", f"127.0.0.1:{port}"], env, tmp / "serve.log")
    worker = start(["worker"], env, tmp / "worker.log")
    url = f"http://127.0.0.1:{port}"
    found: list[float] = []
    try:
        wait_http(url + "/healthz")
        time.sleep(2)  # the worker registered and sits idle, waiting for a wake-up
        for n in range(count + 3):
            sha = secrets.token_hex(20)
            body = push_body(sha, repo=REPOS[n % len(REPOS)])
            request = urllib.request.Request(
                f"{url}/deploy/{REPOS[n % len(REPOS)]}",
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Gitea-Event": "push",
                    "X-Gitea-Delivery": secrets.token_hex(8),
                    "X-Gitea-Signature": sign(body),
                },
            )
            with urllib.request.urlopen(request, timeout=10) as resp:
                job_id = json.load(resp)["job"]
            end = time.monotonic() + 30
            while time.monotonic() < end:
                with urllib.request.urlopen(f"{url}/jobs/{job_id}", timeout=10) as resp:
                    job = json.load(resp)
                if job["status"] not in ("queued", "running"):
                    break
                time.sleep(0.02)
            else:
                raise RuntimeError(f"job {job_id} did not end")
            if n >= 3 and job["steps"]:  # the first few warm the worker up
                found.append(_when(job["steps"][0]["started_at"]) - _when(job["created_at"]))
        return found
    finally:
        stop(worker)
        stop(web)


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000 * ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--pickups", type=int, default=30)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    server = postgres_server(args.database_url)
    schema = "bench_" + secrets.token_hex(5)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    print(
        f"# {tool_version(['wrk', '-v'])}; python {sys.version.split()[0]}; "
        f"sqlite {sqlite3.sqlite_version}; PostgreSQL {version} on loopback; "
        f"gunicorn gthread 2x{Settings().web_threads}; {os.cpu_count()} cores"
    )
    results: dict[str, tuple[list[WrkResult], list[float]]] = {}
    try:
        for name, url in (("sqlite", None), ("postgres", with_schema(server, schema))):
            with tempfile.TemporaryDirectory(prefix=f"dh-bench-{name}-") as raw:
                env = base_env(Path(raw), url)
                results[name] = (
                    throughput(Path(raw), env, seconds=args.seconds),
                    pickups(Path(raw), env, count=args.pickups),
                )
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"\n{'':>22} | {'SQLite':>24} | {'PostgreSQL':>24}")
    for i, c in enumerate(LEVELS):
        cells = []
        for name in ("sqlite", "postgres"):
            r = results[name][0][i]
            cells.append(f"{r.rps:>6.0f} req/s p99 {r.p99_ms:>5.1f} ms e{r.errors}")
        print(f"{'accept, concurrency ' + str(c):>22} | {cells[0]:>24} | {cells[1]:>24}")
    for label, q in (("pickup p50", 0.5), ("pickup p95", 0.95), ("pickup max", 1.0)):
        cells = [f"{ms(results[name][1], q):>8.1f} ms" for name in ("sqlite", "postgres")]
        print(f"{label:>22} | {cells[0]:>24} | {cells[1]:>24}")
    print(
        f"{'pickup samples':>22} | {len(results['sqlite'][1]):>24} | "
        f"{len(results['postgres'][1]):>24}"
    )


if __name__ == "__main__":
    main()
