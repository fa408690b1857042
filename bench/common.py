"""Shared bench plumbing: free ports, servers on loopback, wrk runs with signed pushes."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-not-a-real-one"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError as exc:
            if getattr(exc, "code", None):  # an HTTP error answer: it is up
                return
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def push_body(sha: str, *, repo: str, size: int = 3072) -> bytes:
    """A Gitea push payload of about `size` bytes, in Gitea's wire layout."""
    doc = {
        "ref": "refs/heads/main",
        "before": "0" * 40,
        "after": sha,
        "compare_url": f"https://git.example.com/jeff/{repo}/compare/{sha}",
        "commits": [
            {
                "id": sha,
                "message": "",
                "url": f"https://git.example.com/c/{sha}",
                "author": {"name": "Jeff", "email": "jeff@example.com"},
            }
        ],
        "total_commits": 1,
        "head_commit": {"id": sha},
        "repository": {
            "full_name": f"jeff/{repo}",
            "html_url": f"https://git.example.com/jeff/{repo}",
        },
        "pusher": {"login": "jeff"},
        "sender": {"login": "jeff"},
    }
    body = json.dumps(doc, indent=2)
    doc["commits"][0]["message"] = "x" * max(0, size - len(body))
    return json.dumps(doc, indent=2).encode()


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


def wrk_script(
    path: Path,
    *,
    repos: list[str],
    bodies_per_repo: int = 20,
    shas: dict[str, list[str]] | None = None,
) -> Path:
    """A wrk Lua script cycling through pre-signed pushes, each with a fresh delivery id.

    shas: real commit ids per repo (so a deploy can fetch them); default: made-up ones.
    """
    entries = []
    for repo in repos:
        for n in range(bodies_per_repo):
            sha = (
                shas[repo][n % len(shas[repo])]
                if shas
                else hashlib.sha1(f"{repo}-{n}".encode()).hexdigest()  # noqa: S324 - fake id
            )
            body = push_body(sha, repo=repo)
            entries.append((repo, body.decode(), sign(body)))
    lua = ["local reqs = {}"]
    for i, (repo, body, digest) in enumerate(entries, start=1):
        lua.append(
            f"reqs[{i}] = {{path = {json.dumps('/deploy/' + repo)}, "
            f"body = {json.dumps(body)}, sig = {json.dumps(digest)}}}"
        )
    lua.append(f"local n = {len(entries)}")
    lua.append("""
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end
local nonce = "x"
function init(args)
  counter = 0
  ok2xx = 0
  nonce = args[1] or "x"
end
function request()
  counter = counter + 1
  local r = reqs[(counter % n) + 1]
  local id = string.format("%s-%d-%d", nonce, tid, counter)
  return wrk.format("POST", r.path, {
    ["Content-Type"] = "application/json",
    ["X-Gitea-Event"] = "push",
    ["X-Gitea-Delivery"] = id,
    ["X-Gitea-Signature"] = r.sig,
  }, r.body)
end
local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status >= 200 and status < 300 then ok2xx = ok2xx + 1 end
end
function done(summary, latency, requests)
  local ok = 0
  for _, t in ipairs(threads) do ok = ok + (t:get("ok2xx") or 0) end
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d"
    .. " ok2xx=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.status + summary.errors.timeout, ok))
end
""")
    path.write_text("\n".join(lua))
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    ok2xx: int = -1  # answers with a 2xx status, counted by the script's response()

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    nonce: str | None = None,
) -> WrkResult:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    nonce = nonce or secrets.token_hex(6)  # delivery ids unique across runs, not one only
    out = subprocess.run(
        [
            wrk,
            "-t",
            str(min(threads, connections)),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            nonce,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(
        r"RESULT requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) "
        r"errors=(\d+)",
        out,
    )
    if not match:
        raise RuntimeError(f"no wrk result in:\n{out}")
    req, dur, p50, p99, err = (int(g) for g in match.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    ok2xx = re.search(r" ok2xx=(\d+)", out)
    return WrkResult(
        req,
        dur / 1e6,
        p50 / 1000,
        p99 / 1000,
        err + (int(non2xx.group(1)) if non2xx else 0),
        int(ok2xx.group(1)) if ok2xx else -1,
    )


class Sampler:
    """Calls sample() once a second in a thread for as long as `with running():` lasts."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    @contextmanager
    def running(self) -> Iterator[None]:
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def rss_mb(pid: int) -> float:
    """Resident size of a process and all its descendants, in MB."""
    pids = [pid]
    try:
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
        ).stdout
        for child in out.split():
            pids.extend([int(child), *_descendants(int(child))])
    except OSError:
        pass
    total = 0
    for p in set(pids):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    found = []
    for child in out.split():
        found.append(int(child))
        found.extend(_descendants(int(child)))
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (
        (out.stdout or out.stderr).strip().splitlines()[0]
        if (out.stdout or out.stderr)
        else "unknown"
    )


def env_with(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    env.update(extra)
    return env
