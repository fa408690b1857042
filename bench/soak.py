"""Soak: a real `deployhook serve` under a steady stream of signed pushes for N minutes.

An operator's server, only faster. Set up in a temporary directory: --repos real git
repos (a bare origin, a developer clone pushing to it, a deploy checkout cloned from it),
a fake `docker` whose `compose up` takes 0.2-0.5 s, and `deployhook serve` as a
subprocess with its own data dir (SQLite) or --database-url (PostgreSQL). Then, for
--minutes:

- a committer pushes a new real commit to one origin every --commit-every s (round
  robin), so deliveries name real new commits and jobs really fetch, check out and run;
- the load sends --rate signed 3 KB Gitea pushes a second (open loop, a fresh delivery id
  and a new TCP connection each, spread round robin over the repos, each naming its
  repo's current head), and times every answer (--timeout s at most);
- the sampler reads, every 10 s, from /proc: RSS, PSS (smaps_rollup), open descriptors
  and threads of each process of the served tree (serve itself, gunicorn's master; each
  web process; the deploy worker, told apart by the name each gives itself), and from the store
  through a separate read-only connection: its size (data dir incl. WAL for SQLite,
  pg_total_relation_size for PostgreSQL), the row counts of jobs, job_log, job_steps and
  deliveries, jobs by status ("stuck": running longer than the repos' --job-timeout);
- the honesty check follows the load: for each 202, GET /jobs/ID must answer with that
  job, and GET /deploy/NAME/deliveries must list the delivery id (checked within seconds,
  before the worker's pruning could remove either; this is the status polling an
  operator's dashboard would do anyway).

Once a minute a block is printed (answers, latency, the store, every process). After the
load stops, a drain period (--drain s) must end with no job queued or running. The
summary gives each figure's least-squares slope per minute over the samples after the
warm-up (--warmup minutes), and a verdict:

    GROWS  when slope x measured minutes >= max(10 % of the figure's mean, a floor),
    flat   otherwise.

So a figure must grow by a tenth of its level within the window to count (a leak of
0.35 %/min over 30 minutes, 20 %/hour), and by at least the floor (5 descriptors,
2 threads, 2 MB, 50 rows, 10 ms), so noise on small numbers does not count.
The findings at the end say what a slope cannot: a process at its descriptor limit, minutes
in which no job finished while 202s were answered, stuck jobs, /healthz all along.
Note: a web process's threads rise until gthread's pool is full (DEPLOYHOOK_WEB_THREADS),
which a burst of slow answers (a store outage) reaches at once: bounded, not a leak.
Note: history is pruned as it grows (keep 100 jobs and 1000 deliveries a repo, the
defaults): row counts rise until each repo reaches its bound (about 3 minutes for jobs
at the default load, 4 for deliveries), then stay flat; use a warm-up past that.

--ulimit-nofile N applies RLIMIT_NOFILE N (soft and hard) to the whole served tree.
--database-url private starts a private PostgreSQL cluster (/tmp/soak-pg, port 55440,
a fresh database `soak`) and stops it at the end; --pg-restart-every S stops and starts
that cluster (never another) every S seconds, down for --pg-down s each time.

    python bench/soak.py [--minutes 30] [--rate 20] [--repos 5] [--commit-every 2]
                         [--processes 2] [--ulimit-nofile N] [--database-url URL|private]
                         [--pg-restart-every S] [--warmup 2] [--drain 120] [--quick]

Everything it starts (server, PostgreSQL, git and compose children) is stopped at the
end, also on Ctrl-C; load goes to 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import resource
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from common import ROOT, SECRET, env_with, free_port, push_body, sign, wait_http

SAMPLE_S = 10.0
SENDERS = 48
TABLES = ("jobs", "job_log", "job_steps", "deliveries")
PG_SCRIPT = ROOT / ".ci" / "postgres.sh"
PG_BASE = "/tmp/soak-pg"
PG_PORT = 55440
RELATIVE_GROWTH = 0.10
FLOORS = {"MB": 2.0, "fds": 5.0, "thr": 2.0, "rows": 50.0, "ms": 10.0}

FAKE_DOCKER = """#!/bin/sh
# The soak's fake docker: `compose version` at once, `compose ... up` takes 0.2-0.5 s.
case " $* " in *" version"*) echo "Docker Compose version v2.99.0-soak"; exit 0;; esac
case " $* " in *" up "*) sleep "0.$(( 200 + ($$ * 7919) % 301 ))";; esac
echo "fake docker: $*"
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


# -- the repos and their committer ---------------------------------------------------


class Origins:
    """Bare origins, developer clones and deploy checkouts; a commit every few seconds."""

    def __init__(self, root: Path, count: int) -> None:
        self.names = [f"soak-{chr(ord('a') + i)}" for i in range(count)]
        self.root = root
        self.heads: dict[str, str] = {}
        self.checkouts: dict[str, Path] = {}
        self.pushed = 0
        for name in self.names:
            origin, dev = root / f"{name}.git", root / f"{name}-dev"
            checkout = root / "deploy" / name
            git(root, "init", "-q", "--bare", "-b", "main", str(origin))
            git(root, "init", "-q", "-b", "main", str(dev))
            git(dev, "config", "user.email", "soak@example.com")
            git(dev, "config", "user.name", "soak")
            git(dev, "remote", "add", "origin", str(origin))
            (dev / "docker-compose.yml").write_text("services: {}\n")
            self.heads[name] = self._commit(name, 0)
            checkout.parent.mkdir(parents=True, exist_ok=True)
            git(root, "clone", "-q", str(origin), str(checkout))
            self.checkouts[name] = checkout

    def _commit(self, name: str, n: int) -> str:
        dev = self.root / f"{name}-dev"
        (dev / "index.html").write_text(f"{name} version {n}\n")
        git(dev, "add", "-A")
        git(dev, "commit", "-q", "-m", f"version {n}")
        git(dev, "push", "-q", "origin", "HEAD:refs/heads/main")
        return git(dev, "rev-parse", "HEAD")

    def run(self, every: float, stop: threading.Event) -> None:
        n = 0
        while not stop.wait(every):
            n += 1
            name = self.names[n % len(self.names)]
            try:
                self.heads[name] = self._commit(name, n)
                self.pushed += 1
            except subprocess.CalledProcessError as exc:
                print(f"  ! commit to {name} failed: {exc.stderr.strip()}", file=sys.stderr)


# -- the served tree -----------------------------------------------------------------


def _ppid_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry.name))
    return children


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@dataclass
class ProcStat:
    pid: int
    rss_mb: float
    pss_mb: float
    fds: int
    threads: int
    top_fd: str = ""  # the file most descriptors point at, and how many
    fd_limit: int = 0  # its soft RLIMIT_NOFILE


def proc_stat(pid: int) -> ProcStat | None:
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        fds = os.listdir(f"/proc/{pid}/fd")
        limits = Path(f"/proc/{pid}/limits").read_text()
    except OSError:
        return None
    nofile = next((x.split()[3] for x in limits.splitlines() if x.startswith("Max open f")), "0")
    mem = {
        line.split(":")[0]: int(line.split()[1])
        for line in rollup.splitlines()
        if line.startswith(("Rss:", "Pss:"))
    }
    threads = next(int(x.split()[1]) for x in status.splitlines() if x.startswith("Threads:"))
    targets: Counter[str] = Counter()
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            targets[target if target.startswith("/") else target.split(":")[0]] += 1
    top = targets.most_common(1)
    return ProcStat(
        pid,
        mem.get("Rss", 0) / 1024,
        mem.get("Pss", 0) / 1024,
        len(fds),
        threads,
        f"{top[0][1]}x {top[0][0]}" if top else "",
        int(nofile) if nofile.isdigit() else 0,
    )


class Served:
    """`deployhook serve` in its own session, its processes told apart by role."""

    def __init__(self, home: Path, args: argparse.Namespace, origins: Origins) -> None:
        self.home = home
        self.data = home / "data"
        fakebin = home / "bin"
        fakebin.mkdir(parents=True)
        docker = fakebin / "docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        self.registry = home / "repos.yml"
        self.registry.write_text(
            "repos:\n"
            + "".join(
                f"  {name}:\n    path: {path}\n    health_timeout: 0\n"
                f"    timeout: {args.job_timeout}\n"
                for name, path in origins.checkouts.items()
            )
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        extra = {
            "PATH": f"{fakebin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DEPLOYHOOK_REGISTRY": str(self.registry),
            "DEPLOYHOOK_DATA_DIR": str(self.data),
            "DEPLOYHOOK_SECRET": SECRET,
            "DEPLOYHOOK_WEB_PROCESSES": str(args.processes),
            "DEPLOYHOOK_COMPOSE": f"{docker} compose",
            "DEPLOYHOOK_LOG_FORMAT": "json",
            "DEPLOYHOOK_STOP_GRACE": "10",
        }
        if args.db_url:
            extra["DEPLOYHOOK_DATABASE_URL"] = args.db_url
        self.log = home / "serve.log"
        nofile = args.ulimit_nofile

        def limits() -> None:
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deployhook", "serve", "--bind", f"127.0.0.1:{self.port}"],
                env=env_with(**extra),
                cwd=home,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                preexec_fn=limits if nofile else None,  # noqa: PLW1509 - setrlimit only
            )
        wait_http(self.url + "/healthz", timeout=60)

    def roles(self) -> dict[str, int]:
        """master (serve itself, dh-serve), web1..webN (dh-web, by pid), worker
        (dh-worker): their pids now. serve forks them and each names itself (server.py)."""
        children = _ppid_map()
        found = {"master": self.proc.pid}
        webs = []
        for pid in children.get(self.proc.pid, []):
            comm = _comm(pid)
            if comm == "dh-web":
                webs.append(pid)
            elif comm == "dh-worker":
                found["worker"] = pid
        for i, web in enumerate(sorted(webs), start=1):
            found[f"web{i}"] = web
        return found

    def healthz(self) -> str:
        conn = http.client.HTTPConnection(f"127.0.0.1:{self.port}", timeout=5)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            doc = json.loads(resp.read() or b"{}")
            problems = "; ".join(str(x) for x in doc.get("problems", []))[:80]
            return f"{resp.status} {doc.get('status', '?')}" + (
                f" ({problems})" if problems else ""
            )
        except (OSError, ValueError) as exc:
            return f"no answer ({type(exc).__name__})"
        finally:
            conn.close()

    def log_counts(self) -> dict[str, int]:
        counts = {"errors": 0, "emfile": 0}
        with contextlib.suppress(OSError), self.log.open("rb") as fh:
            for line in fh:
                if b'"level": "error"' in line or b'"level":"error"' in line:
                    counts["errors"] += 1
                if b"Too many open files" in line:
                    counts["emfile"] += 1
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the session we started
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def kill_leftovers(root: Path) -> int:
    """SIGKILL, by pid, processes still working under our temp dir (git, fake docker)."""
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(str(root) + "/"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
    return killed


# -- the store, read-only ------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:  # removed meanwhile (a checkpointed WAL, a pruned lock file)
        return 0


class StoreReader:
    """Sizes, row counts and jobs by status, through a short read-only connection."""

    def __init__(self, data: Path, db_url: str | None, job_timeout: float) -> None:
        self.data, self.db_url, self.job_timeout = data, db_url, job_timeout

    @contextlib.contextmanager
    def _conn(self) -> Iterator[Any]:
        if self.db_url:
            import psycopg

            with psycopg.connect(self.db_url, autocommit=True, connect_timeout=3) as conn:
                conn.execute("SET default_transaction_read_only = on")
                yield conn
        else:
            db = self.data / "deployhook.sqlite3"
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                yield conn
            finally:
                conn.close()

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.db_url else sql

    def read(self) -> dict[str, Any]:
        now = time.time()
        out: dict[str, Any] = {}
        if not self.db_url:
            out["size_mb"] = sum(_size(p) for p in self.data.rglob("*")) / 1e6
            out["wal_mb"] = _size(self.data / "deployhook.sqlite3-wal") / 1e6
        try:
            with self._conn() as conn:
                for table in TABLES:
                    out[table] = conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
                out["by_status"] = dict(
                    conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
                )
                out["stuck"] = conn.execute(
                    self._q(
                        "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND started_at < ?"
                    ),
                    (now - self.job_timeout,),
                ).fetchone()[0]
                out["jobs_created"] = conn.execute("SELECT MAX(id) FROM jobs").fetchone()[0]
                oldest = conn.execute(
                    "SELECT MIN(created_at) FROM jobs WHERE status = 'queued'"
                ).fetchone()[0]
                out["oldest_queued_s"] = now - oldest if oldest else 0.0
                out["finished"] = dict(
                    conn.execute(
                        self._q(
                            "SELECT status, COUNT(*) FROM jobs WHERE finished_at >= ?"
                            " GROUP BY status"
                        ),
                        (now - 60,),
                    ).fetchall()
                )
                if self.db_url:
                    out["size_mb"] = (
                        float(
                            conn.execute(
                                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)"
                                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                                " WHERE c.relkind = 'r' AND n.nspname = current_schema()"
                            ).fetchone()[0]
                        )
                        / 1e6
                    )
        except Exception as exc:  # the store may be down (a PostgreSQL outage): say so
            out["error"] = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else "?"
        return out

    def pending(self) -> list[tuple[int, str, str]]:
        with self._conn() as conn:
            return conn.execute(
                "SELECT id, repo, status FROM jobs WHERE status IN ('queued', 'running')"
                " ORDER BY id"
            ).fetchall()


# -- the load ------------------------------------------------------------------------


@dataclass
class Minute:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class Load:
    """Signed pushes at a steady rate from a pool of senders; answers kept per minute."""

    def __init__(self, url: str, origins: Origins, rate: float, timeout: float) -> None:
        self.host = url.removeprefix("http://")
        self.origins, self.rate, self.timeout = origins, rate, timeout
        self.nonce = secrets.token_hex(4)
        self.t0 = 0.0
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self.accepted: queue.Queue[tuple[str, str, int, int, float]] = queue.Queue()
        self.sent_to: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._tickets: queue.Queue[tuple[int, float] | None] = queue.Queue()
        self._bodies: dict[tuple[str, str], tuple[bytes, str]] = {}

    def _body(self, repo: str, sha: str) -> tuple[bytes, str]:
        key = (repo, sha)
        if key not in self._bodies:
            body = push_body(sha, repo=repo)
            self._bodies = {k: v for k, v in self._bodies.items() if k[0] != repo}
            self._bodies[key] = (body, sign(body))
        return self._bodies[key]

    def run(self, stop: threading.Event, t0: float, end: float) -> None:
        self.t0 = t0
        senders = [threading.Thread(target=self._send_loop, daemon=True) for _ in range(SENDERS)]
        for s in senders:
            s.start()
        i = 0
        while not stop.is_set():
            due = t0 + i / self.rate
            if due >= end or stop.wait(max(0.0, due - time.monotonic())):
                break
            self._tickets.put((i, due))
            i += 1
        for _ in senders:
            self._tickets.put(None)
        for s in senders:
            s.join(timeout=self.timeout + 5)

    def _send_loop(self) -> None:
        while (ticket := self._tickets.get()) is not None:
            i, due = ticket
            minute = int((due - self.t0) // 60)
            if time.monotonic() - due > 2.0:  # all senders were stuck: the client is behind
                with self._lock:
                    self.minutes[minute].statuses["behind"] += 1
                continue
            repo = self.origins.names[i % len(self.origins.names)]
            body, digest = self._body(repo, self.origins.heads[repo])
            delivery = f"soak-{self.nonce}-{i}"
            with self._lock:
                self.sent_to[repo] += 1
                seq = self.sent_to[repo]
            status, answer, ms = self._post(repo, body, digest, delivery)
            with self._lock:
                bucket = self.minutes[minute]
                bucket.statuses[status] += 1
                if status not in {"timeout", "error"}:
                    bucket.latencies_ms.append(ms)
            if status == "202":
                job = json.loads(answer).get("job")
                self.accepted.put((repo, delivery, int(job), seq, time.monotonic()))

    def _post(self, repo: str, body: bytes, digest: str, delivery: str) -> tuple[str, bytes, float]:
        conn = http.client.HTTPConnection(self.host, timeout=self.timeout)
        start = time.monotonic()
        try:
            conn.request(
                "POST",
                f"/deploy/{repo}",
                body=body,
                headers={
                    "Content-Type": "application/json",
                    "X-Gitea-Event": "push",
                    "X-Gitea-Delivery": delivery,
                    "X-Gitea-Signature": digest,
                },
            )
            resp = conn.getresponse()
            answer = resp.read()
            return str(resp.status), answer, (time.monotonic() - start) * 1000
        except TimeoutError:
            return "timeout", b"", (time.monotonic() - start) * 1000
        except OSError:
            return "error", b"", (time.monotonic() - start) * 1000
        finally:
            conn.close()


@dataclass
class Accepted:
    repo: str
    delivery: str
    job: int
    seq: int  # how many deliveries had been sent to this repo, this one included
    at: float
    job_ok: bool = False
    ledger_ok: bool = False


class Honesty:
    """Every 202 has its job (GET /jobs/ID) and its ledger row (GET .../deliveries)."""

    GIVE_UP_S = 60.0

    def __init__(self, url: str, load: Load) -> None:
        self.host = url.removeprefix("http://")
        self.load = load
        self.pending: list[Accepted] = []
        self.jobs_seen: dict[int, bool] = {}
        self.accepted = self.job_found = self.ledger_found = 0
        self.missing_job: list[tuple[str, int]] = []
        self.missing_ledger: list[tuple[str, str]] = []

    def _get(self, path: str) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, timeout=15)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        except (OSError, ValueError):
            return 0, None
        finally:
            conn.close()

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(5.0):
            self.check()

    def _job(self, repo: str, job: int) -> bool | None:
        """True: GET /jobs/ID answers with it; False: 404; None: no answer now."""
        if job not in self.jobs_seen:
            code, body = self._get(f"/jobs/{job}")
            if code == 200 and body and body.get("id") == job and body.get("repo") == repo:
                self.jobs_seen[job] = True
            elif code == 404:
                self.jobs_seen[job] = False
            else:
                return None
        return self.jobs_seen[job]

    def check(self, *, final: bool = False) -> None:
        while True:
            try:
                self.pending.append(Accepted(*self.load.accepted.get_nowait()))
                self.accepted += 1
            except queue.Empty:
                break
        with self.load._lock:
            sent = dict(self.load.sent_to)
        by_repo: dict[str, list[Accepted]] = defaultdict(list)
        for item in self.pending:
            by_repo[item.repo].append(item)
        left = []
        for repo, items in by_repo.items():
            depth = max(sent[repo] - a.seq for a in items if not a.ledger_ok) + 50
            code, doc = self._get(f"/deploy/{repo}/deliveries?limit={min(1000, depth)}")
            listed = {d["id"]: d.get("job") for d in doc["deliveries"]} if code == 200 else {}
            left += [a for a in items if not self._settle(a, listed, final=final)]
        self.pending = left

    def _settle(self, a: Accepted, listed: dict[str, Any], *, final: bool) -> bool:
        """Check one 202 further; True once it is settled (found, or reported missing)."""
        if not a.job_ok and (found := self._job(a.repo, a.job)) is not None:
            a.job_ok = True
            if found:
                self.job_found += 1
            else:
                self.missing_job.append((a.repo, a.job))
        if not a.ledger_ok and listed.get(a.delivery) == a.job:
            a.ledger_ok = True
            self.ledger_found += 1
        if a.job_ok and a.ledger_ok:
            return True
        if final or time.monotonic() - a.at > self.GIVE_UP_S:
            if not a.ledger_ok:
                self.missing_ledger.append((a.repo, a.delivery))
            if not a.job_ok:
                self.missing_job.append((a.repo, a.job))
            return True
        return False


# -- the PostgreSQL outages ----------------------------------------------------------


def pg_script(action: str) -> str:
    env = {**os.environ, "DEPLOYHOOK_PG_BASE": PG_BASE, "DEPLOYHOOK_PG_PORT": str(PG_PORT)}
    env["DEPLOYHOOK_PG_DATABASE"] = "postgres"
    out = subprocess.run(
        ["bash", str(PG_SCRIPT), action], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def private_pg() -> str:
    """Start the soak's own cluster, with a fresh database `soak`; return its URL."""
    import psycopg

    admin = pg_script("start")
    if f":{PG_PORT}/" not in admin:
        pg_script("stop")
        sys.exit(f"the private cluster did not come up on port {PG_PORT}: {admin}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS soak WITH (FORCE)")
        conn.execute("CREATE DATABASE soak")
    return admin.rsplit("/", 1)[0] + "/soak"


class Outages:
    """Stop and start the private cluster every `every` s, down for `down` s."""

    def __init__(self, every: float, down: float) -> None:
        self.every, self.down = every, down
        self.count = 0
        self.down_now = False

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.every):
            self.down_now = True
            pg_script("stop")
            self.count += 1
            stop.wait(self.down)
            pg_script("start")
            self.down_now = False


# -- sampling and the table ----------------------------------------------------------


@dataclass
class Sample:
    t_min: float  # minutes since the load started
    procs: dict[str, ProcStat]
    store: dict[str, Any]
    log: dict[str, int]
    healthz: str


class Sampler:
    def __init__(self, served: Served, reader: StoreReader) -> None:
        self.served, self.reader = served, reader
        self.samples: list[Sample] = []
        self.pids: dict[str, set[int]] = defaultdict(set)
        self.peak_fds: dict[str, int] = Counter()

    def sample(self, t_min: float) -> Sample:
        procs = {}
        for role, pid in self.served.roles().items():
            stat = proc_stat(pid)
            if stat is not None:
                procs[role] = stat
                self.pids[role].add(pid)
                self.peak_fds[role] = max(self.peak_fds[role], stat.fds)
        s = Sample(
            t_min, procs, self.reader.read(), self.served.log_counts(), self.served.healthz()
        )
        self.samples.append(s)
        return s

    def figures(self) -> dict[str, tuple[str, list[tuple[float, float]]]]:
        """Every figure as (unit, [(minute, value)...]) over all samples."""
        out: dict[str, tuple[str, list[tuple[float, float]]]] = {}

        def add(name: str, unit: str, t: float, value: float | None) -> None:
            if value is not None:
                out.setdefault(name, (unit, []))[1].append((t, float(value)))

        for s in self.samples:
            for role, p in s.procs.items():
                add(f"{role} RSS MB", "MB", s.t_min, p.rss_mb)
                add(f"{role} PSS MB", "MB", s.t_min, p.pss_mb)
                add(f"{role} fds", "fds", s.t_min, p.fds)
                add(f"{role} threads", "thr", s.t_min, p.threads)
            add("store MB", "MB", s.t_min, s.store.get("size_mb"))
            for table in TABLES:
                add(f"rows {table}", "rows", s.t_min, s.store.get(table))
            add("jobs created", "rows", s.t_min, s.store.get("jobs_created"))
        return out


def slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / var


def verdict(unit: str, points: list[tuple[float, float]]) -> tuple[float | None, str]:
    k = slope(points)
    if k is None:
        return None, "—"
    span = points[-1][0] - points[0][0]
    mean = sum(y for _, y in points) / len(points)
    grows = k > 0 and k * span >= max(RELATIVE_GROWTH * abs(mean), FLOORS[unit])
    return k, "GROWS" if grows else "flat"


class Table:
    """The block printed once a minute, and the summary at the end."""

    def __init__(self) -> None:
        self.blocks: list[tuple[int, Minute, Sample]] = []

    @staticmethod
    def load_line(m: Minute) -> str:
        s = m.statuses
        fourxx = sum(v for k, v in s.items() if k.startswith("4"))
        other5 = sum(v for k, v in s.items() if k.startswith("5") and k != "503")
        lat = m.latencies_ms
        return (
            f"sent {sum(s.values()):5d}  202 {s['202']:5d}  200 {s['200']:3d}  4xx {fourxx:3d}"
            f"  503 {s['503']:3d}  5xx {other5:3d}  timeout {s['timeout']:3d}"
            f"  error {s['error']:3d}  behind {s['behind']:3d} | latency p50 {pct(lat, 50):6.1f}"
            f"  p99 {pct(lat, 99):7.1f}  max {max(lat, default=float('nan')):7.1f} ms"
        )

    @staticmethod
    def store_line(st: dict[str, Any]) -> str:
        if "error" in st and "jobs" not in st:
            size = f"size {st['size_mb']:.1f} MB | " if "size_mb" in st else ""
            return f"{size}unreadable: {st['error']}"
        size = f"size {st.get('size_mb', 0):7.1f} MB"
        if "wal_mb" in st:
            size += f" (WAL {st['wal_mb']:.1f})"
        rows = "  ".join(f"{t} {st.get(t, 0):6d}" for t in TABLES)
        if "error" in st:
            size += f" (partly unreadable: {st['error']})"
        by = st.get("by_status", {})
        fin = st.get("finished", {})
        return (
            f"{size} | rows {rows} | queued {by.get('queued', 0)} running "
            f"{by.get('running', 0)} stuck {st.get('stuck', 0)} (oldest queued "
            f"{st.get('oldest_queued_s', 0):.0f} s) | finished in the last minute: "
            f"{fin.get('succeeded', 0)} ok {fin.get('failed', 0)} failed"
        )

    @staticmethod
    def proc_lines(procs: dict[str, ProcStat]) -> list[str]:
        lines = [f"  {'process':<10} {'pid':>8} {'RSS MB':>7} {'PSS MB':>7} {'fds':>6} {'thr':>4}"]
        for role, p in procs.items():
            lines.append(
                f"  {role:<10} {p.pid:>8} {p.rss_mb:7.1f} {p.pss_mb:7.1f} {p.fds:6d} "
                f"{p.threads:4d}  {p.top_fd}"
            )
        return lines

    def minute(self, n: int, m: Minute, s: Sample, extra: str = "") -> None:
        print(f"\n── minute {n} " + (f"({extra}) " if extra else "") + "─" * 40)
        print("  load   " + self.load_line(m))
        print("  store  " + self.store_line(s.store))
        print(
            f"  server /healthz {s.healthz} | log: {s.log['errors']} error lines,"
            f" {s.log['emfile']} 'Too many open files'"
        )
        print("\n".join(self.proc_lines(s.procs)), flush=True)
        self.blocks.append((n, m, s))

    def findings(self, sampler: Sampler) -> None:
        """What the slopes cannot show: a limit reached, deploys that stopped, stuck jobs."""
        print("\n== findings")
        said = False
        for role in sampler.pids:
            hit = [
                s.t_min
                for s in sampler.samples
                if (p := s.procs.get(role)) and p.fd_limit and p.fds >= p.fd_limit - 16
            ]
            if hit:
                limit = next(s.procs[role].fd_limit for s in sampler.samples if role in s.procs)
                print(f"  ! {role} at its descriptor limit ({limit}) from minute {hit[0]:.1f}")
                said = True
        idle = [
            n
            for n, m, s in self.blocks[1:]
            if m.statuses["202"] and "finished" in s.store and not s.store["finished"]
        ]
        if idle:
            print(f"  ! no job finished in minute(s) {_ranges(idle)}, while 202s were answered")
            said = True
        stuck = [(n, s.store.get("stuck", 0)) for n, _m, s in self.blocks if s.store.get("stuck")]
        if stuck:
            most = max(k for _n, k in stuck)
            print(
                f"  ! jobs stuck (running past --job-timeout) in minute(s) "
                f"{_ranges([n for n, _k in stuck])}, up to {most}"
            )
            said = True
        sick = [n for n, _m, s in self.blocks if not s.healthz.startswith("200 ok")]
        if sick:
            print(f"  /healthz not '200 ok' in minute(s) {_ranges(sick)}")
        elif stuck or idle:
            print("  ! /healthz answered '200 ok' all along")
            said = True
        if not said:
            print("  none: no limit reached, jobs finished every minute, none stuck")

    def summary(self, sampler: Sampler, load: Load, warmup: float) -> None:
        print(f"\n== summary: slopes per minute after a {warmup:g}-minute warm-up")
        print(f"  {'figure':<22} {'first':>9} {'last':>9} {'peak':>9} {'slope/min':>10}  verdict")
        rows: list[tuple[str, str, list[tuple[float, float]]]] = [
            (name, unit, pts) for name, (unit, pts) in sampler.figures().items()
        ]
        minutes = sorted(load.minutes)
        for label, p in (("latency p50 ms", 50), ("latency p99 ms", 99)):
            pts = [
                (n + 0.5, pct(load.minutes[n].latencies_ms, p))
                for n in minutes
                if load.minutes[n].latencies_ms
            ]
            rows.append((label, "ms", pts))
        for name, unit, pts in rows:
            after = [(t, v) for t, v in pts if t >= warmup]
            k, word = verdict(unit, after)
            word = "(a counter)" if name == "jobs created" else word
            if not pts:
                continue
            first, last = (after or pts)[0][1], (after or pts)[-1][1]
            peak = max(v for _, v in pts)
            ks = f"{k:+10.2f}" if k is not None else f"{'—':>10}"
            print(f"  {name:<22} {first:9.1f} {last:9.1f} {peak:9.1f} {ks}  {word}")
        figures = sampler.figures()
        created = [(t, v) for t, v in figures.get("jobs created", ("", []))[1] if t >= warmup]
        per_min = slope(created)
        for name, (unit, pts) in figures.items():
            k, word = verdict(unit, [(t, v) for t, v in pts if t >= warmup])
            if unit == "fds" and word == "GROWS" and k and per_min:
                print(
                    f"  ! {name}: {k / per_min:.2f} more per job created ({per_min:.0f} a minute)"
                )
        for role, pids in sampler.pids.items():
            if len(pids) > 1:
                print(f"  ! {role}: {len(pids)} different pids over the run (restarted)")


# -- the run -------------------------------------------------------------------------


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=20.0, help="deliveries a second")
    parser.add_argument("--repos", type=int, default=5)
    parser.add_argument("--commit-every", type=float, default=2.0, help="seconds")
    parser.add_argument("--processes", type=int, default=2, help="web processes")
    parser.add_argument("--ulimit-nofile", type=int, default=0)
    parser.add_argument("--database-url", default="", help="postgresql://... or 'private'")
    parser.add_argument("--pg-restart-every", type=float, default=0.0, help="seconds")
    parser.add_argument("--pg-down", type=float, default=5.0, help="seconds per outage")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per delivery")
    parser.add_argument("--job-timeout", type=int, default=120, help="repos' timeout, s")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--quick", action="store_true", help="1 minute, no warm-up")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.warmup, args.drain = 1.0, 0.0, min(args.drain, 60.0)
    if args.pg_restart_every and args.database_url != "private":
        parser.error("--pg-restart-every needs --database-url private (the soak's own cluster)")
    return args


@dataclass
class Started:
    """What this run started, for the cleanup."""

    tmp: Path
    stop: threading.Event = field(default_factory=threading.Event)
    served: Served | None = None
    pg: bool = False


def soak(args: argparse.Namespace, run: Started) -> None:
    args.db_url = args.database_url
    if args.database_url == "private":
        run.pg = True
        args.db_url = private_pg()
    backend = "PostgreSQL " + urlsplit(args.db_url).netloc if args.db_url else "SQLite"
    print(
        f"# soak: {args.minutes:g} min, {args.rate:g} deliveries/s over {args.repos} repos,"
        f" a commit every {args.commit_every:g} s; {backend}; {args.processes} web"
        f" processes; nofile {args.ulimit_nofile or 'inherited'}"
        f" ({resource.getrlimit(resource.RLIMIT_NOFILE)[0]} here); temp {run.tmp}",
        flush=True,
    )
    origins = Origins(run.tmp, args.repos)
    served = run.served = Served(run.tmp / "serve", args, origins)
    reader = StoreReader(served.data, args.db_url, args.job_timeout)
    sampler, table = Sampler(served, reader), Table()
    load = Load(served.url, origins, args.rate, args.timeout)
    honesty = Honesty(served.url, load)
    outages = Outages(args.pg_restart_every, args.pg_down)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    tasks = [
        (lambda: load.run(run.stop, t0, end), "load"),
        (lambda: origins.run(args.commit_every, run.stop), "committer"),
        (lambda: honesty.run(run.stop), "honesty"),
    ]
    if args.pg_restart_every:
        tasks.append((lambda: outages.run(run.stop), "outages"))
    threads = [threading.Thread(target=t, name=n, daemon=True) for t, n in tasks]
    for t in threads:
        t.start()
    try:
        every_minute(t0, end, sampler=sampler, table=table, load=load, outages=outages)
    finally:
        run.stop.set()
        for t in threads:
            t.join(timeout=args.timeout + args.pg_down + 30)
        if run.pg:
            pg_script("start")  # an outage may have been cut short
        print(f"\n== load stopped: {origins.pushed} commits pushed")
    print(f"== draining (at most {args.drain:g} s)")
    drain(reader, args.drain)
    honesty.check(final=True)
    table.summary(sampler, load, args.warmup)
    report(honesty, load, sampler)
    table.findings(sampler)


def every_minute(
    t0: float, end: float, *, sampler: Sampler, table: Table, load: Load, outages: Outages
) -> None:
    """Sample every SAMPLE_S seconds until end; print a block at each minute's end."""
    next_sample, minute = t0, 0
    while True:
        now = time.monotonic()
        last = now >= end - 0.5
        if now >= next_sample or last:
            s = sampler.sample((now - t0) / 60)
            next_sample += SAMPLE_S
            if last or now - t0 >= (minute + 1) * 60 - SAMPLE_S / 2:
                extra = f"pg outages so far: {outages.count}" if outages.every else ""
                table.minute(minute + 1, load.minutes[minute], s, extra)
                minute += 1
        if last:
            return
        time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse()
    signal.signal(signal.SIGTERM, _interrupt)
    run = Started(Path(tempfile.mkdtemp(prefix="dh-soak-")))
    try:
        soak(args, run)
        return 0
    except KeyboardInterrupt:
        print("\n# interrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        run.stop.set()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the cleanup runs to its end
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if run.served is not None:
            run.served.stop()
        kill_leftovers(run.tmp)
        if run.pg:
            with contextlib.suppress(subprocess.CalledProcessError):
                pg_script("stop")
        if args.keep:
            print(f"# kept {run.tmp}", file=sys.stderr)
        else:
            subprocess.run(["rm", "-rf", str(run.tmp)])


def drain(reader: StoreReader, limit: float) -> None:
    start = time.monotonic()
    left: list[Any] = []
    while time.monotonic() - start < limit:
        try:
            left = reader.pending()
        except Exception as exc:
            print(f"  store unreadable while draining: {exc}")
            left = [("?", "?", "?")]
        if not left:
            print(f"  drained: no job queued or running after {time.monotonic() - start:.1f} s")
            return
        time.sleep(1.0)
    print(f"  NOT DRAINED after {limit:g} s: {len(left)} jobs left: {left[:10]}")


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def report(h: Honesty, load: Load, sampler: Sampler) -> None:
    totals: Counter[str] = Counter()
    for m in load.minutes.values():
        totals.update(m.statuses)
    print("\n== answers over the whole run: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    print(
        f"== honesty: {h.accepted} answered 202; job found for {h.job_found},"
        f" ledger row for {h.ledger_found}; missing jobs {len(h.missing_job)}"
        f" {h.missing_job[:5]}, missing ledger rows {len(h.missing_ledger)}"
        f" {h.missing_ledger[:5]}, unchecked {len(h.pending)}"
    )
    last = sampler.samples[-1] if sampler.samples else None
    if last is not None:
        peaks = ", ".join(f"{r} {v}" for r, v in sampler.peak_fds.items())
        print(f"== peak descriptors: {peaks}")
        print(f"== log: {last.log['errors']} error lines, {last.log['emfile']} EMFILE")


if __name__ == "__main__":
    sys.exit(main())
