"""deployhook against adnanh/webhook (and a bare Flask floor), side by side, on loopback.

Every server gets the same job: signed 3 KB Gitea pushes whose deploy is a fake compose
(a busybox script that records its start, sleeps --deploy-seconds, records its end).

- webhook (/usr/bin/webhook): one hook per repo, trigger rule `payload-hmac-sha256` on
  X-Gitea-Signature, command = the fake compose with repo, sha and delivery id as args.
- deployhook: `deployhook serve` (gunicorn + its deploy worker) over real checkouts (bare
  origins and clones made here; every pushed sha exists, so fetch and checkout succeed),
  DEPLOYHOOK_COMPOSE = the same fake compose, which reads the sha from the checkout.
- bare Flask (bench/bare_app.py): the same gunicorn settings answering 202, doing nothing.

Measured, one server at a time: accept throughput and p50/p99 with wrk at each concurrency
(10 s each; every request a fresh delivery id); honesty (how many 2xx answers led to a
deploy command that ran with that push's sha or a newer one); a burst of 50 pushes to
one repo within a second (commands run, overlaps, time until the last sha is live);
the answer to a wrong signature; resident memory of every process of the server (idle,
peak during the load including the commands it ran, and after the load settled).

Each server runs in its own pids cgroup limited to 15% of pid_max, the limit systemd's
DefaultTasksMax gives a service: it bounds what webhook's per-request processes can do to
a shared machine, as on a real host.

    python bench/compare_webhook.py [--seconds 10] [--concurrency 1,16,64]
                                    [--deploy-seconds 1] [--wait-load 1.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    SECRET,
    Sampler,
    env_with,
    free_port,
    push_body,
    run_wrk,
    sign,
    tool_version,
    wait_http,
    wrk_script,
)

from deployhook.config import Settings

REPOS = ["site-a", "site-b", "site-c"]
BURST_REPO = "burst"
BURST_PUSHES = 50
CGROUP_ROOT = Path("/sys/fs/cgroup/pids")

FAKE_COMPOSE = """#!/bin/busybox sh
# The benchmark's fake `compose up`: one record line when it starts, one when it ends.
# deployhook runs it as `fake-compose compose up -d --build` in the checkout;
# webhook as `fake-compose webhook REPO SHA DELIVERY`.
if [ "$1" = webhook ]; then
  repo=$2; sha=$3; delivery=$4
else
  repo=${{PWD##*/}}; sha=$(git rev-parse HEAD); delivery=-
fi
echo "start $repo $sha $delivery $$ $EPOCHREALTIME" >> {record}
sleep {sleep}
echo "end $repo $sha $delivery $$ $EPOCHREALTIME" >> {record}
"""


# -- the fake compose's records ------------------------------------------------------


@dataclass
class Command:
    repo: str
    sha: str
    delivery: str
    pid: int
    start: float
    end: float | None = None


def read_commands(record: Path) -> list[Command]:
    """Every command that started, with its end if it ended, in start order."""
    if not record.exists():
        return []
    found: dict[tuple[str, int, str], Command] = {}
    for line in record.read_text().splitlines():
        parts = line.split()
        if len(parts) != 6:
            continue
        phase, repo, sha, delivery, pid, ts = parts
        key = (repo, int(pid), delivery)
        if phase == "start":
            found[key] = Command(repo, sha, delivery, int(pid), float(ts))
        elif key in found:
            found[key].end = float(ts)
    return sorted(found.values(), key=lambda c: c.start)


def overlaps(commands: list[Command]) -> tuple[int, int]:
    """(pairs of commands of one repo running at the same time, most at once)."""
    pairs, most = 0, 0
    for repo in {c.repo for c in commands}:
        mine = sorted((c for c in commands if c.repo == repo), key=lambda c: c.start)
        for i, a in enumerate(mine):
            end = a.end if a.end is not None else float("inf")
            pairs += sum(1 for b in mine[i + 1 :] if b.start < end)
        events = sorted(
            [(c.start, 1) for c in mine]
            + [(c.end if c.end is not None else float("inf"), -1) for c in mine]
        )
        running = 0
        for _ts, step in events:
            running += step
            most = max(most, running)
    return pairs, most


# -- processes: a pids cgroup per server, memory of all its processes -----------------


class Cgroup:
    """A pids cgroup (v1) holding one server and everything it starts."""

    def __init__(self, name: str) -> None:
        self.path: Path | None = CGROUP_ROOT / f"dh-bench-{name}-{os.getpid()}"
        try:
            self.path.mkdir()
            pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
            self.limit = int(pid_max * 0.15)
            (self.path / "pids.max").write_text(str(self.limit))
        except OSError:
            self.path, self.limit = None, 0

    def wrap(self, argv: list[str]) -> list[str]:
        if self.path is None:
            return argv
        return ["/bin/sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh", *argv]

    def pids(self, root: int) -> list[int]:
        if self.path is not None:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        return [root, *descendants(root)]

    def limit_hits(self) -> int | None:
        """How often a fork was refused for the pids limit (pids.events `max`)."""
        if self.path is None:
            return None
        events = dict(
            line.split()
            for line in (self.path / "pids.events").read_text().splitlines()
            if line.strip()
        )
        return int(events.get("max", 0))

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):
            left = self.pids(0)
            if not left:
                break
            for pid in left:  # only processes we started live in this cgroup
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(OSError):
            self.path.rmdir()


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def memory_mb(pids: list[int]) -> tuple[float, float]:
    """(RSS, PSS) of these processes together, in MB.

    RSS counts a page shared by N processes N times; PSS counts 1/N of it in each, so
    its sum is what the processes really occupy together.
    """
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


# -- the servers ---------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    cgroup: Cgroup
    record: Path | None = None
    db: Path | None = None
    checkouts: dict[str, Path] = field(default_factory=dict)

    def pids(self) -> list[int]:
        return self.cgroup.pids(self.proc.pid)

    def memory(self) -> tuple[float, float]:
        return memory_mb(self.pids())

    def settle(self, timeout: float = 180.0) -> None:
        """Wait until every deploy this server took on has ended."""
        end = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < end:
            busy = self._busy()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                return
            time.sleep(0.2)
        print(f"  ! {self.name} did not settle within {timeout:.0f} s", file=sys.stderr)

    def _busy(self) -> bool:
        if self.db is not None:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as c:
                if c.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')"
                ).fetchone()[0]:
                    return True
        if self.record is not None:
            if any(c.end is None for c in read_commands(self.record)):
                return True
            if self.db is None and len(self.pids()) > 1:  # webhook forks before the record
                return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.cgroup.remove()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, name: str, commits: int) -> tuple[Path, list[str]]:
    """A bare origin with `commits` commits on main, and a deploy checkout of the first."""
    origin, dev, checkout = root / f"{name}.git", root / f"{name}-dev", root / "deploy" / name
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    git(root, "init", "-q", "-b", "main", str(dev))
    shas = []
    for n in range(commits + 1):
        (dev / "index.html").write_text(f"{name} version {n}\n")
        git(dev, "add", "-A")
        git(dev, "commit", "-q", "-m", f"version {n}")
        shas.append(git(dev, "rev-parse", "HEAD"))
        if n == 0:
            git(dev, "push", "-q", str(origin), "HEAD:refs/heads/main")
            checkout.parent.mkdir(parents=True, exist_ok=True)
            git(root, "clone", "-q", str(origin), str(checkout))
    git(dev, "push", "-q", str(origin), "HEAD:refs/heads/main")
    return checkout, shas[1:]


def fake_compose(tmp: Path, sleep: float) -> tuple[Path, Path]:
    record = tmp / "commands.log"
    script = tmp / "fake-compose"
    script.write_text(FAKE_COMPOSE.format(record=record, sleep=sleep))
    script.chmod(0o755)
    return script, record


def start_bare(tmp: Path, *, processes: int, threads: int, **_: Any) -> Server:
    port = free_port()
    cgroup = Cgroup("bare")
    proc = subprocess.Popen(
        cgroup.wrap(
            [
                sys.executable,
                str(ROOT / "bench" / "bare_app.py"),
                f"127.0.0.1:{port}",
                str(processes),
                str(threads),
            ]
        ),
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server("bare flask", f"http://127.0.0.1:{port}", proc, cgroup)
    wait_http(server.url + "/nothing")
    return server


def start_webhook(tmp: Path, *, sleep: float, **_: Any) -> Server:
    home = tmp / "webhook"
    home.mkdir()
    script, record = fake_compose(home, sleep)
    hooks = [
        {
            "id": name,
            "execute-command": str(script),
            "command-working-directory": str(home),
            "pass-arguments-to-command": [
                {"source": "string", "name": "webhook"},
                {"source": "string", "name": name},
                {"source": "payload", "name": "after"},
                {"source": "header", "name": "X-Gitea-Delivery"},
            ],
            "success-http-response-code": 202,
            "trigger-rule": {
                "match": {
                    "type": "payload-hmac-sha256",
                    "secret": SECRET,
                    "parameter": {"source": "header", "name": "X-Gitea-Signature"},
                }
            },
        }
        for name in [*REPOS, BURST_REPO]
    ]
    (home / "hooks.json").write_text(json.dumps(hooks, indent=2))
    port = free_port()
    cgroup = Cgroup("webhook")
    proc = subprocess.Popen(
        cgroup.wrap(
            [
                "/usr/bin/webhook",
                "-hooks",
                str(home / "hooks.json"),
                "-ip",
                "127.0.0.1",
                "-port",
                str(port),
                "-urlprefix",
                "deploy",
            ]
        ),
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "webhook.log", "wb"),  # noqa: SIM115 - the server keeps it
    )
    server = Server("webhook", f"http://127.0.0.1:{port}", proc, cgroup, record=record)
    wait_http(server.url + "/deploy/none")
    return server


def start_deployhook(
    tmp: Path,
    *,
    sleep: float,
    processes: int | None,
    threads: int | None,
    repos: dict[str, Path],
    name: str = "deployhook",
    env: dict[str, str] | None = None,
    **_: Any,
) -> Server:
    """`deployhook serve` in tmp/name; processes/threads None: its defaults; env: more
    variables (PYTHONPATH=another tree's checkout runs that tree's code)."""
    home = tmp / name
    home.mkdir()
    script, record = fake_compose(home, sleep)
    registry = home / "repos.yml"
    registry.write_text(
        "repos:\n"
        + "".join(
            f"  {name}:\n    path: {path}\n    health_timeout: 0\n" for name, path in repos.items()
        )
    )
    port = free_port()
    extra = {
        **({"DEPLOYHOOK_WEB_PROCESSES": str(processes)} if processes else {}),
        **({"DEPLOYHOOK_WEB_THREADS": str(threads)} if threads else {}),
        **(env or {}),
    }
    env = env_with(
        DEPLOYHOOK_REGISTRY=str(registry),
        DEPLOYHOOK_DATA_DIR=str(home / "data"),
        DEPLOYHOOK_SECRET=SECRET,
        DEPLOYHOOK_RECONCILE_INTERVAL="0",
        DEPLOYHOOK_COMPOSE=f"{script} compose",
        DEPLOYHOOK_LOG_FORMAT="json",
        DEPLOYHOOK_STOP_GRACE="10",
        # Nothing pruned while the ledger is checked afterwards.
        DEPLOYHOOK_KEEP_JOBS="1000000",
        DEPLOYHOOK_KEEP_DELIVERIES="1000000",
        **extra,
    )
    cgroup = Cgroup(name)
    proc = subprocess.Popen(
        cgroup.wrap([sys.executable, "-m", "deployhook", "serve", "--bind", f"127.0.0.1:{port}"]),
        env=env,
        cwd=home,
        stdout=subprocess.DEVNULL,
        stderr=open(home / "serve.log", "wb"),  # noqa: SIM115 - the server keeps it
    )
    server = Server(
        name,
        f"http://127.0.0.1:{port}",
        proc,
        cgroup,
        record=record,
        db=home / "data" / "deployhook.sqlite3",
        checkouts=repos,
    )
    wait_http(server.url + "/healthz")
    return server


# -- honesty -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Honesty:
    answered_2xx: int  # what the client counted
    accepted: int  # what the server says it accepted (deployhook: its ledger)
    honoured: int  # of those, deliveries whose push (or a newer one) was deployed
    commands: int  # deploy commands that ran


def honesty_webhook(server: Server, nonce: str, ok2xx: int) -> Honesty:
    assert server.record is not None
    mine = [c for c in read_commands(server.record) if c.delivery.startswith(nonce + "-")]
    ran = len({c.delivery for c in mine})
    # A request in flight when wrk stopped may have run without wrk counting its answer.
    return Honesty(ok2xx, ok2xx, min(ran, ok2xx), len(mine))


def honesty_deployhook(server: Server, nonce: str, ok2xx: int, since: float) -> Honesty:
    assert server.db is not None and server.record is not None
    with contextlib.closing(sqlite3.connect(f"file:{server.db}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT id, repo, sha, job_id FROM deliveries WHERE http_status ="
            " 202 AND delivery_id LIKE ? ORDER BY id",
            (nonce + "-%",),
        ).fetchall()
        jobs = {
            r[0]: (r[1], r[2], r[3], r[4])
            for r in conn.execute("SELECT id, repo, sha, status, started_at FROM jobs")
        }
    newest: dict[int, str] = {}
    for _id, _repo, sha, job in rows:
        newest[job] = sha  # rows come in ledger order: the last joined is the newest
    ran = {(c.repo, c.sha, c.start) for c in read_commands(server.record) if c.end}
    honoured = 0
    for _id, repo, _sha, job in rows:
        if job not in jobs:
            continue
        jrepo, jsha, status, started = jobs[job]
        # The job carries this push's sha or a newer one, it succeeded, and the fake
        # compose really ran in that repo's checkout with that sha after it started.
        if (
            jrepo == repo
            and jsha == newest[job]
            and status == "succeeded"
            and any(r == repo and s == jsha and st >= started - 0.01 for r, s, st in ran)
        ):
            honoured += 1
    commands = [c for c in read_commands(server.record) if c.start >= since]
    return Honesty(ok2xx, len(rows), honoured, len(commands))


# -- loads ---------------------------------------------------------------------------


class PeakRss(Sampler):
    """Samples the resident size of all a server's processes while a load runs."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.peak = (0.0, 0.0)
        self.most_pids = 0

    def sample(self) -> None:
        pids = self.server.pids()
        self.most_pids = max(self.most_pids, len(pids))
        rss, pss = memory_mb(pids)
        self.peak = (max(self.peak[0], rss), max(self.peak[1], pss))


def post(
    url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        if own:
            conn.close()


def push_headers(body: bytes, delivery: str, signature: str | None = None) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": "push",
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Signature": signature or sign(body),
    }


def burst(server: Server, shas: list[str]) -> dict[str, Any]:
    """50 signed pushes to one repo within a second; then what ran, and when."""
    assert server.record is not None
    before = len(read_commands(server.record))
    bodies = [push_body(sha, repo=BURST_REPO) for sha in shas]
    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    statuses = []
    gap = 1.0 / len(shas)
    first = time.time()
    for n, body in enumerate(bodies):
        target = first + n * gap
        time.sleep(max(0.0, target - time.time()))
        status, _ = post(
            server.url,
            f"/deploy/{BURST_REPO}",
            body,
            push_headers(body, f"burst-{secrets.token_hex(4)}-{n}"),
            conn,
        )
        statuses.append(status)
    sent = time.time() - first
    conn.close()
    server.settle()
    commands = [c for c in read_commands(server.record)[before:] if c.repo == BURST_REPO]
    pairs, most = overlaps(commands)
    last = shas[-1]
    last_end = max((c.end for c in commands if c.sha == last and c.end), default=None)
    final = max(commands, key=lambda c: c.end or 0.0) if commands else None
    live = final.sha if final else None
    checkout = server.checkouts.get(BURST_REPO)
    if checkout is not None:  # deployhook: what the checkout is on is what is live
        live = git(checkout, "rev-parse", "HEAD")
    return {
        "sent_in_s": round(sent, 3),
        "answers_2xx": sum(200 <= s < 300 for s in statuses),
        "commands": len(commands),
        "overlapping_pairs": pairs,
        "most_at_once": most,
        "last_sha_live": live == last,
        "last_live_after_s": round(last_end - first, 2) if last_end else None,
        "shas_deployed": len({c.sha for c in commands}),
    }


def wrong_signature(server: Server) -> str:
    body = push_body(secrets.token_hex(20), repo=REPOS[0])
    status, answer = post(
        server.url,
        f"/deploy/{REPOS[0]}",
        body,
        push_headers(body, f"wrong-{secrets.token_hex(4)}", "0" * 64),
    )
    return f"{status} {answer.decode(errors='replace').strip()[:60]}"


def measure(
    server: Server, args: argparse.Namespace, script: Path, burst_shas: list[str] | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"levels": []}
    time.sleep(2)
    result["rss_idle_mb"], result["pss_idle_mb"] = (round(v, 1) for v in server.memory())
    result["wrong_signature"] = wrong_signature(server)
    run_wrk(server.url + "/", script, connections=4, seconds=2, nonce="warmup")
    server.settle()
    sampler = PeakRss(server)
    with sampler.running():
        for conc in args.levels:
            nonce = secrets.token_hex(6)
            since = time.time()
            res = run_wrk(
                server.url + "/", script, connections=conc, seconds=args.seconds, nonce=nonce
            )
            load = os.getloadavg()[0]
            server.settle()
            level: dict[str, Any] = {
                "concurrency": conc,
                "rps": round(res.rps),
                "p50_ms": round(res.p50_ms, 1),
                "p99_ms": round(res.p99_ms, 1),
                "errors": res.errors,
                "ok2xx": res.ok2xx,
                "requests": res.requests,
                "load_1m_after": round(load, 2),
            }
            honesty = None
            if server.db is not None:
                honesty = honesty_deployhook(server, nonce, res.ok2xx, since)
            elif server.record is not None:
                honesty = honesty_webhook(server, nonce, res.ok2xx)
            if honesty is not None:
                level.update(
                    accepted=honesty.accepted,
                    honoured=honesty.honoured,
                    commands=honesty.commands,
                    honoured_rps=round(res.rps * honesty.honoured / max(honesty.accepted, 1)),
                )
            result["levels"].append(level)
            print(f"  {server.name} c={conc}: {level}", flush=True)
        if burst_shas is not None:
            result["burst"] = burst(server, burst_shas)
            print(f"  {server.name} burst: {result['burst']}", flush=True)
    result["rss_peak_mb"], result["pss_peak_mb"] = (round(v, 1) for v in sampler.peak)
    result["most_processes"] = sampler.most_pids
    server.settle()
    time.sleep(1)
    result["rss_after_mb"], result["pss_after_mb"] = (round(v, 1) for v in server.memory())
    result["pids_limit"] = server.cgroup.limit
    result["pids_limit_hits"] = server.cgroup.limit_hits()
    return result


# -- the run -------------------------------------------------------------------------


def wait_for_quiet(limit: float, max_wait: float) -> float:
    """Poll the 1-minute load average every minute until it is under limit."""
    end = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        if load < limit or time.monotonic() >= end:
            return load
        print(f"# load average {load:.2f} >= {limit}: waiting a minute", flush=True)
        time.sleep(60)


def versions(args: argparse.Namespace) -> dict[str, str]:
    from importlib.metadata import version

    return {
        "wrk": tool_version(["wrk", "-v"]).split(" [")[0],
        "webhook": tool_version(["/usr/bin/webhook", "-version"]),
        "python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "flask": version("flask"),
        "sqlite": sqlite3.sqlite_version,
        "git": tool_version(["git", "--version"]),
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "nofile": "{} soft, {} hard".format(*resource.getrlimit(resource.RLIMIT_NOFILE)),
        "gunicorn_setup": f"gthread {args.processes} processes x {args.threads} threads",
    }


def table(results: dict[str, dict[str, Any]], levels: list[int]) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]

    def row(label: str, fmt: Callable[[dict[str, Any]], str]) -> None:
        cells = []
        for name in names:
            try:
                cells.append(fmt(results[name]))
            except (KeyError, TypeError, IndexError):
                cells.append("—")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for i, conc in enumerate(levels):
        row(f"c={conc}: accepted req/s", lambda r, i=i: str(r["levels"][i]["rps"]))
        row(
            f"c={conc}: p50 / p99 ms",
            lambda r, i=i: f"{r['levels'][i]['p50_ms']} / {r['levels'][i]['p99_ms']}",
        )
        row(
            f"c={conc}: 2xx honoured",
            lambda r, i=i: (
                f"{r['levels'][i]['honoured']} of {r['levels'][i]['accepted']} "
                f"({100 * r['levels'][i]['honoured'] / max(r['levels'][i]['accepted'], 1):.1f}%)"
            ),
        )
        row(f"c={conc}: honoured deliveries/s", lambda r, i=i: str(r["levels"][i]["honoured_rps"]))
        row(f"c={conc}: deploy commands run", lambda r, i=i: str(r["levels"][i]["commands"]))
    row("burst of 50: 2xx answers", lambda r: str(r["burst"]["answers_2xx"]))
    row("burst of 50: deploy commands", lambda r: str(r["burst"]["commands"]))
    row(
        "burst of 50: overlapping pairs (most at once)",
        lambda r: f"{r['burst']['overlapping_pairs']} ({r['burst']['most_at_once']})",
    )
    row(
        "burst of 50: last sha live after",
        lambda r: (
            f"{r['burst']['last_live_after_s']} s"
            + ("" if r["burst"]["last_sha_live"] else " (then overwritten: stale)")
        ),
    )
    row("wrong signature answer", lambda r: r["wrong_signature"].split(" ", 1)[0])
    row("memory idle: RSS / PSS, MB", lambda r: f"{r['rss_idle_mb']} / {r['pss_idle_mb']}")
    row(
        "memory peak under load: RSS / PSS, MB (processes)",
        lambda r: f"{r['rss_peak_mb']} / {r['pss_peak_mb']} ({r['most_processes']})",
    )
    row(
        "memory after the load: RSS / PSS, MB",
        lambda r: f"{r['rss_after_mb']} / {r['pss_after_mb']}",
    )
    row(
        "forks refused by the pids limit",
        lambda r: f"{r['pids_limit_hits']} (limit {r['pids_limit']})",
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--deploy-seconds", type=float, default=1.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=Settings().web_threads)
    parser.add_argument("--servers", default="bare flask,webhook,deployhook")
    parser.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="first wait (up to --wait-max s) for a 1-minute load under this",
    )
    parser.add_argument("--wait-max", type=float, default=1200.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    args.levels = [int(c) for c in args.concurrency.split(",")]
    if not shutil.which("wrk") or not Path("/usr/bin/webhook").exists():
        sys.exit("needs wrk and webhook (apt-get install wrk webhook)")
    load_start = (
        wait_for_quiet(args.wait_load, args.wait_max) if args.wait_load else os.getloadavg()[0]
    )
    info = versions(args)
    info["load_1m_at_start"] = f"{load_start:.2f}"
    print("# " + "; ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    starters = {"bare flask": start_bare, "webhook": start_webhook, "deployhook": start_deployhook}
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dh-vs-webhook-") as raw:
        tmp = Path(raw)
        repos, shas = {}, {}
        for name in REPOS:
            repos[name], shas[name] = make_repo(tmp, name, 20)
        repos[BURST_REPO], burst_shas = make_repo(tmp, BURST_REPO, BURST_PUSHES)
        script = wrk_script(tmp / "push.lua", repos=REPOS, shas=shas)
        for name in args.servers.split(","):
            print(f"# {name}", flush=True)
            server = starters[name](
                tmp,
                sleep=args.deploy_seconds,
                processes=args.processes,
                threads=args.threads,
                repos=repos,
            )
            try:
                results[name] = measure(server, args, script, burst_shas if server.record else None)
            finally:
                server.stop()
    info["load_1m_at_end"] = f"{os.getloadavg()[0]:.2f}"
    print(
        f"\n# load average (1 min): {info['load_1m_at_start']} at start, "
        f"{info['load_1m_at_end']} at end\n"
    )
    print(table(results, args.levels))
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=2))


if __name__ == "__main__":
    main()
