"""Issue 16 in one run: the accept path against the bare Flask floor, CPU per request, and
the memory of every process of the tree idle, under load and after.

Servers, all up at once on loopback, measured in turn (interleaved: for each repeat and
each concurrency, every server once, in an order that rotates), each in its own pids
cgroup (bench/compare_webhook.py):

- floor: bench/bare_app.py (Flask answering 202, doing nothing) under gunicorn gthread
  with --floor-processes x --floor-threads;
- deployhook: `deployhook serve` of this checkout at its defaults (or --processes /
  --threads), with its deploy worker deploying over real checkouts (fake compose of
  --deploy-seconds): the accept path is measured while deploys run;
- base (with --base DIR, a checkout of another commit, e.g. `git worktree add DIR main`
  or `git archive COMMIT | tar -x -C DIR`): the same, running DIR's code
  (PYTHONPATH=DIR) on this venv.

For each server and concurrency: requests/s, p50/p99 (wrk, closed loop), CPU per request
of the web side (user + system, from /proc, of every process of the tree but the deploy
worker and what it runs) and of the whole tree; the share of the floor. Memory: PSS and
RSS of each process (role, pid) idle after start, the peak under load, and after the
load settled. Honesty: every 202 a deployhook answered has its ledger row and a job that
deployed its sha or a newer one.

    python bench/lean.py [--seconds 10] [--repeat 2] [--base DIR] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common import Sampler, run_wrk, tool_version, wrk_script
from compare_webhook import Server, make_repo, start_bare, start_deployhook

REPOS = ["site-a", "site-b", "site-c"]
TICK = os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _stat(pid: int) -> tuple[int, int, int]:
    """(ppid, utime, stime) in clock ticks."""
    fields = _read(f"/proc/{pid}/stat").rsplit(")", 1)[-1].split()
    if len(fields) < 13:
        return 0, 0, 0
    return int(fields[1]), int(fields[11]), int(fields[12])


def role(pid: int, pids: set[int]) -> str:
    """What a process of a tree is: master, web, worker, supervisor, or a deploy's child."""
    comm = _read(f"/proc/{pid}/comm").strip()
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    ppid = _stat(pid)[0]
    parent_args = _read(f"/proc/{ppid}/cmdline").split("\0") if ppid in pids else []
    if comm.startswith(("deployhook-", "dh-")):  # named by the process itself (server.py)
        return {"dh-serve": "master"}.get(comm, comm.partition("-")[2])
    if "deployhook" in args and "-m" in args:
        sub = args[args.index("-m") + 2] if len(args) > args.index("-m") + 2 else ""
        if sub == "worker":
            return "worker"
        if sub == "serve":
            return "serve"
        if sub == "_web":
            return "web" if parent_args == args else "master"
    if any(a.endswith("bare_app.py") for a in args):
        return "web" if parent_args == args else "master"
    return "child:" + comm


def is_deploy_side(pid: int, roles: dict[int, str]) -> bool:
    """The deploy worker and everything under it (git, the fake compose)."""
    seen = 0
    while pid in roles and seen < 64:
        if roles[pid] == "worker":
            return True
        pid, seen = _stat(pid)[0], seen + 1
    return False


def memory(pid: int) -> tuple[float, float]:
    """(PSS, RSS) in MB."""
    pss = rss = 0
    for line in _read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Pss:"):
            pss = int(line.split()[1])
        elif line.startswith("Rss:"):
            rss = int(line.split()[1])
    return pss / 1024, rss / 1024


@dataclass
class Snapshot:
    """Memory of each process of a tree: role -> (PSS, RSS) MB, summed per role."""

    per_role: dict[str, tuple[float, float, int]] = field(default_factory=dict)

    @classmethod
    def take(cls, server: Server, *, with_children: bool = False) -> Snapshot:
        pids = server.pids()
        roles = {p: role(p, set(pids)) for p in pids}
        snap = cls()
        for pid, name in sorted(roles.items()):
            if name.startswith("child:") and not with_children:
                continue
            pss, rss = memory(pid)
            key = "deploy children" if name.startswith("child:") else name
            old = snap.per_role.get(key, (0.0, 0.0, 0))
            snap.per_role[key] = (old[0] + pss, old[1] + rss, old[2] + 1)
        return snap

    @property
    def total(self) -> tuple[float, float, int]:
        vals = list(self.per_role.values())
        return (sum(v[0] for v in vals), sum(v[1] for v in vals), sum(v[2] for v in vals))

    def peak(self, other: Snapshot) -> Snapshot:
        """Per role, whichever of the two had the larger PSS; the total kept consistent."""
        return other if other.total[0] > self.total[0] else self

    def line(self) -> str:
        parts = [
            f"{name} {n}x {pss:.1f}/{rss:.1f}"
            for name, (pss, rss, n) in sorted(self.per_role.items())
        ]
        pss, rss, n = self.total
        return f"total {n} procs {pss:.1f}/{rss:.1f} MB PSS/RSS  [" + ", ".join(parts) + "]"


def cpu_ticks(server: Server) -> tuple[int, int, int, int]:
    """(web user, web system, all user, all system) ticks of the tree's live processes."""
    pids = server.pids()
    roles = {p: role(p, set(pids)) for p in pids}
    wu = ws = au = as_ = 0
    for pid in pids:
        _, user, system = _stat(pid)
        au, as_ = au + user, as_ + system
        if not is_deploy_side(pid, roles) and not roles[pid].startswith("child:"):
            wu, ws = wu + user, ws + system
    return wu, ws, au, as_


class PeakMemory(Sampler):
    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.peak = Snapshot()

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.peak = self.peak.peak(Snapshot.take(self.server))


# -- the run --------------------------------------------------------------------------


@dataclass
class Level:
    rps: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)
    cpu_web_ms: list[tuple[float, float]] = field(default_factory=list)  # user, sys / req
    cpu_all_ms: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    answered_2xx: int = 0
    accepted: int = 0
    honoured: int = 0


@dataclass
class Result:
    server: Server
    idle: Snapshot = field(default_factory=Snapshot)
    peak: Snapshot = field(default_factory=Snapshot)
    after: Snapshot = field(default_factory=Snapshot)
    levels: dict[int, Level] = field(default_factory=dict)


def one_load(result: Result, script: Path, conc: int, seconds: int) -> None:
    server = result.server
    nonce = secrets.token_hex(6)
    before = cpu_ticks(server)
    sampler = PeakMemory(server)
    with sampler.running():
        res = run_wrk(server.url + "/", script, connections=conc, seconds=seconds, nonce=nonce)
    after = cpu_ticks(server)
    result.peak = result.peak.peak(sampler.peak)
    level = result.levels.setdefault(conc, Level())
    level.rps.append(res.rps)
    level.p50.append(res.p50_ms)
    level.p99.append(res.p99_ms)
    level.errors += res.errors
    per = 1000.0 / TICK / max(res.requests, 1)
    # CPU of processes that ended during the load (a deploy's git) is not counted.
    level.cpu_web_ms.append(((after[0] - before[0]) * per, (after[1] - before[1]) * per))
    level.cpu_all_ms.append(((after[2] - before[2]) * per, (after[3] - before[3]) * per))
    server.settle()
    if server.db is not None:
        accepted, honoured = honesty(server.db, nonce)
        level.answered_2xx += res.ok2xx
        level.accepted += accepted
        level.honoured += honoured
    print(
        f"  {server.name:<10} c={conc:<3} {res.rps:7.0f} req/s  p50 {res.p50_ms:5.1f}"
        f"  p99 {res.p99_ms:6.1f} ms  web cpu {level.cpu_web_ms[-1][0]:.2f}+"
        f"{level.cpu_web_ms[-1][1]:.2f} ms/req  errors {res.errors}",
        flush=True,
    )


def honesty(db: Path, nonce: str) -> tuple[int, int]:
    """(ledger rows answered 202 of this load, of those: with a job that succeeded).

    wrk's count of 2xx answers must not exceed the first: a 202 is stored before it is
    sent (a request in flight when wrk stops may be stored without being counted).
    """
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        accepted, honoured = conn.execute(
            "SELECT COUNT(*), COUNT(j.id) FROM deliveries d LEFT JOIN jobs j"
            " ON j.id = d.job_id AND j.repo = d.repo AND j.status = 'succeeded'"
            " WHERE d.http_status = 202 AND d.delivery_id LIKE ?",
            (nonce + "-%",),
        ).fetchone()
    return int(accepted), int(honoured)


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def span(values: list[float], fmt: str = "{:.0f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def report(results: dict[str, Result], levels: list[int]) -> None:
    floor = results["floor"]
    print("\n## Accept path (ranges over repeats; share = median req/s / the floor's median)")
    print(
        f"{'server':<10} {'c':>3} | {'req/s':>11} {'p50 ms':>11} {'p99 ms':>11} | "
        f"{'share':>5} | {'web cpu ms/req u+s':>18} | {'tree cpu u+s':>12} | honest"
    )
    for conc in levels:
        base_rps = median(floor.levels[conc].rps)
        for name, res in results.items():
            lv = res.levels[conc]
            cw = (median([c[0] for c in lv.cpu_web_ms]), median([c[1] for c in lv.cpu_web_ms]))
            ca = (median([c[0] for c in lv.cpu_all_ms]), median([c[1] for c in lv.cpu_all_ms]))
            honest = (
                f"{lv.honoured}/{lv.accepted} (2xx {lv.answered_2xx})"
                if res.server.db is not None
                else "-"
            )
            print(
                f"{name:<10} {conc:>3} | {span(lv.rps):>11} {span(lv.p50, '{:.1f}'):>11} "
                f"{span(lv.p99, '{:.1f}'):>11} | {median(lv.rps) / base_rps:>5.2f} | "
                f"{cw[0]:>8.2f} + {cw[1]:.2f} | {ca[0]:.2f} + {ca[1]:.2f} | {honest}"
            )
    print("\n## Memory: PSS/RSS MB, per role (count x)")
    for name, res in results.items():
        print(f"{name:<10} idle : {res.idle.line()}")
        print(f"{'':<10} peak : {res.peak.line()}")
        print(f"{'':<10} after: {res.after.line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--processes", type=int, help="deployhook's web processes [default]")
    parser.add_argument("--threads", type=int, help="deployhook's web threads [default]")
    parser.add_argument("--floor-processes", type=int, default=2)
    parser.add_argument("--floor-threads", type=int, default=32)
    parser.add_argument("--deploy-seconds", type=float, default=1.0)
    parser.add_argument("--base", type=Path, help="a checkout of the base commit to compare")
    parser.add_argument("--base-env", action="append", default=[], help="KEY=VALUE for base")
    parser.add_argument("--keep", type=Path, help="work in this (new) directory, kept")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for deployhook")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"# {tool_version(['wrk', '-v'])}; python {sys.version.split()[0]}; sqlite "
        f"{sqlite3.sqlite_version}; floor gthread {args.floor_processes}x{args.floor_threads}; "
        f"load {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="dh-lean-") as raw:
        tmp = args.keep or Path(raw)
        tmp.mkdir(exist_ok=True)
        made = {name: make_repo(tmp, name, commits=20) for name in REPOS}
        script = wrk_script(
            tmp / "push.lua", repos=REPOS, shas={n: shas for n, (_, shas) in made.items()}
        )
        repos = {n: path for n, (path, _) in made.items()}
        starters: dict[str, Callable[[], Server]] = {
            "floor": lambda: start_bare(
                tmp, processes=args.floor_processes, threads=args.floor_threads
            )
        }
        if args.base:
            base_env = {"PYTHONPATH": str(args.base.resolve())}
            base_env.update(kv.split("=", 1) for kv in args.base_env)
            starters["base"] = lambda: start_deployhook(
                tmp,
                sleep=args.deploy_seconds,
                processes=args.processes,
                threads=args.threads,
                repos={n: tmp / "deploy-base" / n for n in repos},
                name="base",
                env=base_env,
            )
            for n, p in repos.items():  # its own checkouts, cloned from the same origins
                _clone(p, tmp / "deploy-base" / n)
        starters["deployhook"] = lambda: start_deployhook(
            tmp,
            sleep=args.deploy_seconds,
            processes=args.processes,
            threads=args.threads,
            repos=repos,
            env=dict(kv.split("=", 1) for kv in args.env),
        )
        results: dict[str, Result] = {}
        try:
            for name, start in starters.items():
                results[name] = Result(start())
            time.sleep(3)
            for res in results.values():
                res.idle = Snapshot.take(res.server)
                print(f"  {res.server.name:<10} idle: {res.idle.line()}", flush=True)
            for res in results.values():  # warm up: first requests, first deploy
                run_wrk(res.server.url + "/", script, connections=4, seconds=2, nonce="warmup")
                res.server.settle()
            order = list(results)
            for rep in range(args.repeat):
                for conc in levels:
                    for name in order:
                        one_load(results[name], script, conc, args.seconds)
                    order = order[1:] + order[:1]
                print(f"# repeat {rep + 1} done, load {os.getloadavg()[0]:.2f}", flush=True)
            time.sleep(2)
            for res in results.values():
                res.after = Snapshot.take(res.server)
        finally:
            for res in results.values():
                res.server.stop()
    report(results, levels)


def _clone(checkout: Path, to: Path) -> None:
    from compare_webhook import git

    origin = git(checkout, "remote", "get-url", "origin")
    to.parent.mkdir(exist_ok=True)
    git(to.parent, "clone", "-q", origin, str(to))


if __name__ == "__main__":
    main()
