"""Accept throughput of signed 3 KB Gitea pushes: deployhook vs a bare Flask floor.

Both run under the same gunicorn settings (gthread, DEPLOYHOOK_WEB_PROCESSES processes,
DEPLOYHOOK_WEB_THREADS threads each) on loopback; wrk drives them at concurrency 1, 16
and 64 with pre-signed pushes to 3 repos, each request carrying a fresh delivery id.
deployhook runs with its deploy worker (the repos' checkouts don't exist, so each claimed
job fails fast at `fetch`: the worker writes to the store while the load runs).

    python bench/intake.py [--seconds 10] [--processes 2] [--threads 16]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    ROOT,
    SECRET,
    env_with,
    free_port,
    rss_mb,
    run_wrk,
    stop,
    tool_version,
    wait_http,
    wrk_script,
)

REPOS = ["site-a", "site-b", "site-c"]


def start_deployhook(
    tmp: Path, *, processes: int, threads: int
) -> tuple[subprocess.Popen[bytes], str]:
    registry = tmp / "repos.yml"
    registry.write_text(
        "repos:\n"
        + "".join(
            f"  {name}:\n    path: {tmp / 'checkouts' / name}\n    health_timeout: 0\n"
            for name in REPOS
        )
    )
    port = free_port()
    env = env_with(
        DEPLOYHOOK_REGISTRY=str(registry),
        DEPLOYHOOK_DATA_DIR=str(tmp / "data"),
        DEPLOYHOOK_SECRET=SECRET,
        DEPLOYHOOK_WEB_PROCESSES=str(processes),
        DEPLOYHOOK_WEB_THREADS=str(threads),
        DEPLOYHOOK_RECONCILE_INTERVAL="0",
        DEPLOYHOOK_LOG_LEVEL="warning",
        DEPLOYHOOK_LOG_FORMAT="json",
    )
    extra = ["--no-worker"] if os.environ.get("BENCH_NO_WORKER") else []
    with open(tmp / "serve.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployhook", "serve", "--bind", f"127.0.0.1:{port}", *extra],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    return proc, url


def start_bare(tmp: Path, *, processes: int, threads: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bare_app.py"),
            f"127.0.0.1:{port}",
            str(processes),
            str(threads),
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/nothing")
    return proc, url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"# {tool_version(['wrk', '-v'])}; python {sys.version.split()[0]}; "
        f"sqlite {sqlite3.sqlite_version}; gunicorn gthread {args.processes}x{args.threads}"
    )
    with tempfile.TemporaryDirectory(prefix="dh-bench-") as raw:
        tmp = Path(raw)
        script = wrk_script(tmp / "push.lua", repos=REPOS)
        results = {}
        for name, starter in (("bare flask", start_bare), ("deployhook", start_deployhook)):
            proc, url = starter(tmp, processes=args.processes, threads=args.threads)
            try:
                idle = rss_mb(proc.pid)
                run_wrk(url + "/", script, connections=4, seconds=2)  # warm-up
                results[name] = [
                    run_wrk(url + "/", script, connections=c, seconds=args.seconds) for c in levels
                ]
                results[name + " rss"] = (idle, rss_mb(proc.pid))
            finally:
                stop(proc)
        queued = 0
        db = tmp / "data" / "deployhook.sqlite3"
        with sqlite3.connect(db) as conn:
            rows = dict(conn.execute("SELECT outcome, COUNT(*) FROM deliveries GROUP BY outcome"))
            queued = rows.get("queued", 0) + rows.get("coalesced", 0)
        print(
            f"\n{'concurrency':>11} | {'bare req/s':>10} {'p50':>7} {'p99':>7} | "
            f"{'deployhook req/s':>16} {'p50':>7} {'p99':>7} | {'ratio':>5} | errors"
        )
        for i, c in enumerate(levels):
            b, d = results["bare flask"][i], results["deployhook"][i]
            print(
                f"{c:>11} | {b.rps:>10.0f} {b.p50_ms:>6.1f}m {b.p99_ms:>6.1f}m | "
                f"{d.rps:>16.0f} {d.p50_ms:>6.1f}m {d.p99_ms:>6.1f}m | "
                f"{d.rps / b.rps:>5.2f} | {b.errors}/{d.errors}"
            )
        for name in ("bare flask", "deployhook"):
            idle, after = results[name + " rss"]
            print(f"rss {name}: idle {idle:.0f} MB, after load {after:.0f} MB")
        total = sum(r.requests for r in results["deployhook"])
        print(
            f"deployhook ledger: {sum(rows.values())} rows, {queued} queued or coalesced "
            f"(wrk counted {total} requests in the measured runs plus warm-up)"
        )


if __name__ == "__main__":
    main()
