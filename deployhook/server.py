"""`deployhook serve`: one master process that supervises the web processes and the worker.

The process `serve` starts is gunicorn's master (its arbiter). It imports the web code
once, then forks the web processes (gthread) and one deploy-worker process from itself,
so the pages of the code they share are in memory once. It restarts a web process that
dies (gunicorn's own supervision) and the deploy worker when it exits or falls silent
(wedged), with a growing pause between restarts. Deploys never run in a web process,
so a web timeout or restart never touches a deploy.

Nothing that must not cross a fork is open in the master: each web process builds its
own app, Service, registry and store after the fork (_ForkedApp), and the worker opens
its own in run_worker. The heavy libraries (GitPython, the Docker SDK, requests,
Apprise, ruamel, psycopg) are imported by the process that uses them, when it does.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger as GunicornLogger

from deployhook import log as logsetup
from deployhook.config import Settings
from deployhook.log import get_logger

log = get_logger()

_RESTART_BACKOFF_MAX = 30.0
# The worker writes to a pipe after every round of its main loop (at least every 2 s)
# while it is well; silent for DEPLOYHOOK_WORKER_WATCHDOG seconds, it is wedged: SIGTERM,
# then SIGKILL after at most WEDGED_KILL_S, then restarted like a worker that exited (its
# jobs end interrupted and are retried).
WEDGED_KILL_S = 30.0
# A worker that exits while serve is being stopped (a signal to the whole process group
# reaches the worker first) is not a crash: the exit is judged this long after.
_EXIT_SETTLE_S = 0.3

# What each process of the tree calls itself (ps -o comm, top): /proc/<pid>/comm.
MASTER_NAME = "dh-serve"
WEB_NAME = "dh-web"
WORKER_NAME = "dh-worker"


def name_process(name: str) -> None:
    """Set this process's name as ps and top show it (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name[:15])


class _StructuredGunicornLogger(GunicornLogger):  # type: ignore[misc]  # gunicorn ships no types
    """Gunicorn's own messages go through the root handler, i.e. through structlog."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers[:] = []
            logger.propagate = True
        self.error_log.setLevel(logging.INFO)


WSGI = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _ForkedApp:
    """The WSGI app of one web process, built in that process after the fork: a
    Service's store connections, registry and locks never cross a fork."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._app: WSGI | None = None

    def build(self) -> None:
        from deployhook.web import create_app

        self._app = create_app(self.settings)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        app = self._app
        if app is None:  # a request before post_worker_init: never, but not a crash
            self.build()
            app = self._app
            assert app is not None
        return app(environ, start_response)


def _post_fork(_arbiter: Any, _worker: Any) -> None:
    name_process(WEB_NAME)
    gc.enable()
    # Each delivery's commit makes several short GIL-releasing SQLite calls; with the
    # default 5 ms switch interval, busy request threads make every one of them wait
    # up to 5 ms for the GIL again (a convoy). 0.5 ms keeps the writer moving.
    sys.setswitchinterval(0.0005)


def _post_worker_init(worker: Any) -> None:
    worker.wsgi.build()


class WebApplication(BaseApplication):  # type: ignore[misc]  # gunicorn ships no types
    """The WSGI app under gunicorn's threaded workers, configured from Settings, the
    code imported once in the master (preload) and the app built in each web process."""

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
            "preload_app": True,
            "post_fork": _post_fork,
            "post_worker_init": _post_worker_init,
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
        # The code every web process runs, imported once here: its pages are shared.
        # Nothing is opened (no store, no registry, no thread): see _ForkedApp.
        import deployhook.store.sqlite
        import deployhook.web.app  # noqa: F401

        # What the master made so far is never freed: kept out of the collector's walks,
        # whose reference-count writes would copy every page into each forked process.
        gc.freeze()
        return _ForkedApp(self.settings)


def run_web(settings: Settings) -> None:
    """Run gunicorn in this process (the master) until it is told to stop, no worker."""
    logsetup.configure(fmt=settings.log_format, level=settings.log_level)
    Serve(settings, with_worker=False).run()


class DeployWorker:
    """The deploy worker as a child of the master: forked, watched, restarted."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pid: int | None = None
        self.exited: tuple[int, float] | None = None  # (code, when), until judged
        self._backoff = 1.0
        self._next_start = 0.0
        self._started_at = 0.0
        self._watchdog: int | None = None  # the read end of the worker's pipe
        self._heard = 0.0  # when the worker last wrote to it (monotonic)
        self._kill_at: float | None = None  # a wedged worker was sent SIGTERM

    def start(self, arbiter: Arbiter) -> None:
        if self._watchdog is not None:
            os.close(self._watchdog)
            self._watchdog = None
        read, write = os.pipe()
        os.set_blocking(read, False)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                os.close(read)
                _become_worker(arbiter)
                from deployhook.deploy.worker import run_worker

                code = run_worker(self.settings, watchdog_fd=write)
            except BaseException:  # whatever it was, this process ends here
                with contextlib.suppress(Exception):
                    log.exception("worker_failed")
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write)
        now = time.monotonic()
        self.pid, self.exited = pid, None
        self._watchdog, self._heard, self._kill_at, self._started_at = read, now, None, now

    def reap(self) -> None:
        """Collect the worker's exit, if it exited (before gunicorn's waitpid(-1) does)."""
        if self.pid is None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # collected already: its status is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return
        self.pid = None
        self.exited = (os.waitstatus_to_exitcode(status), time.monotonic())

    def tend(self, arbiter: Arbiter) -> None:
        """Start, restart or unwedge the worker as due (the master's loop, ~once a second)."""
        self.reap()
        now = time.monotonic()
        if self.exited is not None:
            code, when = self.exited
            if now - when < _EXIT_SETTLE_S:
                return  # a stop of the whole group may still be on its way to us
            log.error("worker_exited", code=code, restart_in_s=self._backoff)
            self.exited = None
            self._next_start = now + self._backoff
            self._backoff = min(self._backoff * 2, _RESTART_BACKOFF_MAX)
            return
        if self.pid is None:
            if now >= self._next_start:
                restart = self._started_at > 0
                self.start(arbiter)
                if restart:
                    log.info("worker_restarted", pid=self.pid)
            return
        if now - self._started_at > 60:
            self._backoff = 1.0  # it stayed up: the next crash restarts quickly again
        self._watch(now)

    def _watch(self, now: float) -> None:
        """Restart a worker that lives but has fallen silent (wedged)."""
        pid = self.pid
        if pid is None or self._watchdog is None:
            return
        try:
            while os.read(self._watchdog, 4096):
                self._heard = now
        except BlockingIOError:
            pass
        if self._kill_at is not None:
            if now >= self._kill_at:
                log.error("worker_killed", pid=pid, reason="still running after SIGTERM")
                self._kill(signal.SIGKILL)
                self._kill_at = float("inf")
        elif self.settings.worker_watchdog and now - self._heard > self.settings.worker_watchdog:
            log.error("worker_wedged", pid=pid, silent_s=round(now - self._heard))
            self._kill(signal.SIGTERM)
            self._kill_at = now + min(WEDGED_KILL_S, max(5.0, self.settings.worker_watchdog / 2))

    def _kill(self, signum: int) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def stop(self) -> None:
        """SIGTERM: the worker lets running deploys finish for stop_grace, then stops them."""
        self._kill(signal.SIGTERM)

    def wait(self) -> None:
        """Wait for a stopping worker: stop_grace and 30 s more, then SIGKILL."""
        deadline = time.monotonic() + self.settings.stop_grace + 30.0
        while self.pid is not None:
            self.reap()
            if self.pid is None:
                break
            if time.monotonic() >= deadline:
                self._kill(signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(self.pid, 0)
                self.pid = None
                break
            time.sleep(0.1)
        if self._watchdog is not None:
            os.close(self._watchdog)
            self._watchdog = None


def _become_worker(arbiter: Arbiter) -> None:
    """Shed what the worker inherited from the master: its signal handlers, the listening
    sockets and the web processes' heartbeat files."""
    for signum in (*arbiter.SIGNALS, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    for listener in arbiter.LISTENERS:
        with contextlib.suppress(OSError):
            listener.close()
    for web in arbiter.WORKERS.values():
        with contextlib.suppress(OSError):
            web.tmp.close()
    name_process(WORKER_NAME)
    gc.enable()
    _die_with_parent(arbiter.pid)


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the master dies (Linux's PR_SET_PDEATHSIG): a worker
    left behind would deploy beside the next serve's."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before that took hold
        os.kill(os.getpid(), signal.SIGTERM)


class _Arbiter(Arbiter):  # type: ignore[misc]  # gunicorn ships no types
    """gunicorn's master, which also keeps the deploy worker."""

    def __init__(self, app: Serve) -> None:
        self.deploy = DeployWorker(app.settings) if app.with_worker else None
        self._announced = False
        super().__init__(app)

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.deploy is not None:
            self.deploy.tend(self)
        if not self._announced:
            self._announced = True
            gc.enable()  # the first processes are forked (Serve.run, load())
            log.info(
                "serve_started",
                bind=self.app.settings.bind,
                pid=self.pid,
                web_pids=sorted(self.WORKERS),
                worker_pid=self.deploy.pid if self.deploy else None,
            )

    def reap_workers(self) -> None:
        if self.deploy is not None:
            self.deploy.reap()
        super().reap_workers()

    def stop(self, graceful: bool = True) -> None:
        if self.deploy is not None:
            self.deploy.stop()
        super().stop(graceful)
        if self.deploy is not None:
            # The worker may be finishing a deploy: give it the grace period it asks for.
            self.deploy.wait()

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        try:
            super().halt(reason, exit_status)
        finally:
            log.info("serve_stopped")


class Serve(WebApplication):
    """`deployhook serve`: gunicorn's master with the web processes and the worker."""

    def __init__(self, settings: Settings, *, with_worker: bool) -> None:
        self.with_worker = with_worker
        super().__init__(settings)

    def run(self) -> int:
        name_process(MASTER_NAME)
        gc.disable()  # until the fork: see load()
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:  # gunicorn's own (the address is in use)
            print(f"\nError: {exc}\n", file=sys.stderr)
            return 1
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        return 0
