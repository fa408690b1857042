"""`deployhook serve`: gunicorn for the web part, one deploy worker beside it, supervised.

Three kinds of process: this supervisor (small, forwards signals, restarts the worker if
it dies), the gunicorn master with its web processes, and the deploy worker. Deploys
never run in a web process, so a web timeout or restart never touches a deploy.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

import structlog
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from deployhook import log as logsetup
from deployhook.config import WATCHDOG_ENV, Settings

log = structlog.get_logger()

_RESTART_BACKOFF_MAX = 30.0
# The worker writes to a pipe after every round of its main loop (at least every 2 s)
# while it is well; silent for DEPLOYHOOK_WORKER_WATCHDOG seconds, it is wedged: SIGTERM,
# then SIGKILL after at most WEDGED_KILL_S, then restarted like a worker that exited (its
# jobs end interrupted and are retried).
WEDGED_KILL_S = 30.0


class _StructuredGunicornLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn ships no types
    """Gunicorn's own messages go through the root handler, i.e. through structlog."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True
        self.error_log.setLevel(logging.INFO)


class WebApplication(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """The WSGI app under gunicorn's threaded workers, configured from Settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": [s.bind],
            "workers": s.web_processes,
            "worker_class": "gthread",
            "threads": s.web_threads,
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 5,
            "backlog": 2048,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
            "limit_request_field_size": 8190,
            "proc_name": "deployhook-web",
            "preload_app": False,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level,
            "logger_class": _StructuredGunicornLogger,
            "forwarded_allow_ips": "127.0.0.1,::1",
            # gunicorn 24+ opens a control socket in ~/.gunicorn by default: several
            # instances (tests, two receivers) would fight over it, and we don't use it.
            "control_socket_disable": True,
        }
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from deployhook.web import create_app

        # Each delivery's commit makes several short GIL-releasing SQLite calls; with the
        # default 5 ms switch interval, busy request threads make every one of them wait
        # up to 5 ms for the GIL again (a convoy). 0.5 ms keeps the writer moving.
        sys.setswitchinterval(0.0005)
        return create_app(self.settings)


def run_web(settings: Settings) -> None:
    """Run gunicorn in this process (the master) until it is told to stop."""
    logsetup.configure(fmt=settings.log_format, level=settings.log_level)
    WebApplication(settings).run()


class Supervisor:
    """Starts the web and worker processes, forwards signals, restarts a dead worker."""

    def __init__(self, settings: Settings, *, with_worker: bool) -> None:
        self.settings = settings
        self.with_worker = with_worker
        self.env = {**os.environ, **settings.to_environ()}
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self._backoff = 1.0
        self._watchdog: int | None = None  # the read end of the worker's pipe
        self._heard = 0.0  # when the worker last wrote to it (monotonic)
        self._kill_at: float | None = None  # a wedged worker was sent SIGTERM

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "deployhook", *args], env=self.env)

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        if self._watchdog is not None:
            os.close(self._watchdog)
        read, write = os.pipe()
        os.set_blocking(read, False)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deployhook", "worker"],
                env={**self.env, WATCHDOG_ENV: str(write)},
                pass_fds=(write,),
            )
        finally:
            os.close(write)
        self._watchdog, self._heard, self._kill_at = read, time.monotonic(), None
        return proc

    def _watch(self) -> None:
        """Restart a worker that lives but has fallen silent (wedged)."""
        worker, now = self.worker, time.monotonic()
        if worker is None or self._watchdog is None or worker.poll() is not None:
            return
        try:
            while os.read(self._watchdog, 4096):
                self._heard = now
        except BlockingIOError:
            pass
        if self._kill_at is not None:
            if now >= self._kill_at:
                log.error("worker_killed", pid=worker.pid, reason="still running after SIGTERM")
                worker.kill()
                self._kill_at = float("inf")
        elif self.settings.worker_watchdog and now - self._heard > self.settings.worker_watchdog:
            log.error("worker_wedged", pid=worker.pid, silent_s=round(now - self._heard))
            worker.send_signal(signal.SIGTERM)
            self._kill_at = now + min(WEDGED_KILL_S, max(5.0, self.settings.worker_watchdog / 2))

    def _signal(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGHUP:
            if self.web and self.web.poll() is None:
                self.web.send_signal(signal.SIGHUP)
            return
        self.stopping = True
        for proc in (self.web, self.worker):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._signal)
        self.web = self._spawn("_web")
        if self.with_worker:
            self.worker = self._spawn_worker()
        log.info(
            "serve_started",
            bind=self.settings.bind,
            web_pid=self.web.pid,
            worker_pid=self.worker.pid if self.worker else None,
        )
        next_restart = 0.0
        worker_started = time.monotonic()
        while not self.stopping:
            time.sleep(0.2)
            if self.web.poll() is not None:
                log.error("web_exited", code=self.web.returncode)
                self.stopping = True
                break
            if self.worker is not None and self.worker.poll() is not None:
                now = time.monotonic()
                if not next_restart:
                    time.sleep(0.3)  # a signal to the whole group may reach us last
                    if self.stopping:
                        break
                    log.error(
                        "worker_exited", code=self.worker.returncode, restart_in_s=self._backoff
                    )
                    next_restart = now + self._backoff
                    self._backoff = min(self._backoff * 2, _RESTART_BACKOFF_MAX)
                elif now >= next_restart:
                    self.worker = self._spawn_worker()
                    log.info("worker_restarted", pid=self.worker.pid)
                    next_restart = 0.0
                    worker_started = now
            elif self.worker is not None and time.monotonic() - worker_started > 60:
                self._backoff = 1.0  # it stayed up: the next crash restarts quickly again
            self._watch()
        return self._shutdown()

    def _shutdown(self) -> int:
        for proc in (self.web, self.worker):
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        code = 0
        # The worker may be finishing a deploy: give it the grace period it asks for.
        # The worker may take stop_grace, then stop its processes and record them.
        for proc, grace in ((self.web, 30.0), (self.worker, self.settings.stop_grace + 30.0)):
            if proc is None:
                continue
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc is self.web and proc.returncode not in (0, -signal.SIGTERM):
                code = 1
        log.info("serve_stopped")
        return code
