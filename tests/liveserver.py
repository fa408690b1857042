"""A real deployhook web server (gunicorn, gthread workers) in a subprocess, for tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from deployhook.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The server's structlog JSON lines, parsed (other lines skipped)."""
        found = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    found.append(doc)
        return found


@contextlib.contextmanager
def live_server(settings: Settings, *, tmp: Path, processes: int = 2,
                extra_env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    """Run `python -m deployhook _web` (gunicorn) on a free port until the block ends."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    env.update(settings.to_environ())
    env.update({"DEPLOYHOOK_BIND": f"127.0.0.1:{port}",
                "DEPLOYHOOK_WEB_PROCESSES": str(processes), "DEPLOYHOOK_LOG_FORMAT": "json"})
    env.update(extra_env or {})
    log_path = tmp / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "deployhook", "_web"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", log_path, proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n"
                                   f"{server.log_text()[-3000:]}")
            try:
                requests.get(server.url + "/healthz", timeout=2).close()
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not answer in 30 s:\n"
                                       + server.log_text()[-3000:]) from None
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
