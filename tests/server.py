"""A real `deployhook serve` (gunicorn + worker) in a subprocess, for end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployhook.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The server's structlog JSON lines, parsed (other lines skipped)."""
        found = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    found.append(doc)
        return found

    def children(self) -> list[int]:
        return [pid for pid in _pids() if _parent(pid) == self.proc.pid]

    def pids_of(self, role: str) -> list[int]:
        """Pids of serve's processes of a role, by the name each gives itself
        (/proc/<pid>/comm, server.py): `worker` (dh-worker), `web` (dh-web, the web
        processes), `serve` (dh-serve, gunicorn's master). Read from /proc, never `ps`
        (CI sets COLUMNS=80, which cuts ps's columns)."""
        found = []
        for pid in _pids():
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == f"dh-{role}" and self._descends(pid):
                found.append(pid)
        return found

    def _descends(self, pid: int | None) -> bool:
        while pid is not None and pid > 1:
            if pid == self.proc.pid:
                return True
            pid = _parent(pid)
        return False


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _parent(pid: int) -> int | None:
    """The parent pid from /proc/<pid>/stat (None once the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def wait_up(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until /healthz answers: 200, or 503 (up, but its store is not writable)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                return
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 503:
                return
            time.sleep(0.1)
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {proc.returncode} before it answered at {url}"
                ) from None
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextmanager
def live_server(
    settings: Settings, *, tmp: Path, processes: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[Served]:
    """The web part only (`serve --no-worker`) with these settings, on a free port."""
    env = {**settings.to_environ(), "DEPLOYHOOK_WEB_PROCESSES": str(processes), **(extra_env or {})}
    env.pop("DEPLOYHOOK_BIND", None)
    with serve(env, cwd=tmp, args=("--no-worker",), log_name="web.log") as served:
        yield served


@contextmanager
def serve(
    env: dict[str, str], *, cwd: Path, args: tuple[str, ...] = (), log_name: str = "serve.log"
) -> Iterator[Served]:
    """Run `python -m deployhook serve` with env (DEPLOYHOOK_* settings) until the block ends."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    full_env.update(env)
    full_env.setdefault("DEPLOYHOOK_LOG_FORMAT", "json")
    log = cwd / log_name
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deployhook", "serve", "--bind", f"127.0.0.1:{port}", *args],
            env=full_env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(proc, f"http://127.0.0.1:{port}", log)
    try:
        wait_up(served.url, proc=proc)
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Nothing of ours may outlive the test (a SIGKILLed supervisor leaves children).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
