"""Accept throughput of signed 3 KB Gitea pushes: deployhook vs a bare Flask floor.

Both run under the same gunicorn settings (gthread, the deployhook defaults for processes
and threads unless given) on loopback; wrk drives them at concurrency 1, 16 and 64 with
pre-signed pushes to 3 repos, each request carrying a fresh delivery id. deployhook runs
as `deployhook serve`, with its deploy worker, over real checkouts of bare origins, and a
fake compose that takes --deploy-seconds (the same servers as bench/compare_webhook.py,
without webhook). Prints requests/s, p50/p99 and deployhook's share of the floor.

    python bench/intake.py [--seconds 10] [--processes 2] [--threads 32]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path

from common import WrkResult, run_wrk, tool_version, wrk_script
from compare_webhook import Server, make_repo, start_bare, start_deployhook

from deployhook.config import Settings

REPOS = ["site-a", "site-b", "site-c"]


def measure(server: Server, script: Path, *, levels: list[int], seconds: int) -> list[WrkResult]:
    run_wrk(server.url + "/", script, connections=4, seconds=2, nonce="warmup")
    server.settle()
    results = []
    for conc in levels:
        results.append(run_wrk(server.url + "/", script, connections=conc, seconds=seconds))
        server.settle()
    return results


def main() -> None:
    defaults = Settings()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", type=int, default=defaults.web_processes)
    parser.add_argument("--threads", type=int, default=defaults.web_threads)
    parser.add_argument("--deploy-seconds", type=float, default=1.0)
    parser.add_argument("--concurrency", default="1,16,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"# {tool_version(['wrk', '-v'])}; python {sys.version.split()[0]}; "
        f"sqlite {sqlite3.sqlite_version}; gunicorn gthread {args.processes}x{args.threads}"
    )
    with tempfile.TemporaryDirectory(prefix="dh-intake-") as raw:
        tmp = Path(raw)
        made = {name: make_repo(tmp, name, commits=20) for name in REPOS}
        script = wrk_script(
            tmp / "push.lua", repos=REPOS, shas={n: shas for n, (_, shas) in made.items()}
        )
        options = {
            "processes": args.processes,
            "threads": args.threads,
            "sleep": args.deploy_seconds,
            "repos": {n: path for n, (path, _) in made.items()},
        }
        results = {}
        for name, start in (("bare flask", start_bare), ("deployhook", start_deployhook)):
            server = start(tmp, **options)
            try:
                results[name] = measure(server, script, levels=levels, seconds=args.seconds)
            finally:
                server.stop()
    print(
        f"\n{'concurrency':>11} | {'bare req/s':>10} {'p50':>7} {'p99':>7} | "
        f"{'deployhook req/s':>16} {'p50':>7} {'p99':>7} | {'ratio':>5} | errors"
    )
    for i, conc in enumerate(levels):
        b, d = results["bare flask"][i], results["deployhook"][i]
        print(
            f"{conc:>11} | {b.rps:>10.0f} {b.p50_ms:>6.1f}m {b.p99_ms:>6.1f}m | "
            f"{d.rps:>16.0f} {d.p50_ms:>6.1f}m {d.p99_ms:>6.1f}m | "
            f"{d.rps / b.rps:>5.2f} | {b.errors}/{d.errors}"
        )


if __name__ == "__main__":
    main()
