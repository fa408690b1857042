"""Child processes of a deploy: argv lists, their own process group, a deadline, a cancel.

Output is captured line by line as it is produced. On timeout or cancel the whole group
is stopped (SIGTERM, then SIGKILL), so `docker compose` and everything it started go
together and nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from deployhook import redact
from deployhook.errors import JobCancelled, JobTimedOut, StepFailed

TERM_GRACE_S = 5.0
_POLL_S = 0.05
# The environment marker that lets a restarted worker recognise (and stop) the
# processes of a job whose worker died, without trusting a recycled pid.
JOB_ENV = "DEPLOYHOOK_JOB_ID"
# The pid of the worker that started a job's process group: while that worker lives, the
# group leader is still its child, and no one else may stop the group.
WORKER_ENV = "DEPLOYHOOK_WORKER_PID"


class Deadline:
    """The end of a job's time budget, and what to say when it is reached."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise JobTimedOut(f"timed out after {self.seconds:g} s")


# Settings a deployed repo's compose file must never interpolate into its containers
# (`${DEPLOYHOOK_ADMIN_TOKEN}`): hidden by name, on top of every registered secret value.
PRIVATE_SETTINGS = frozenset(
    {"DEPLOYHOOK_SECRET", "DEPLOYHOOK_ADMIN_TOKEN", "DEPLOYHOOK_DATABASE_URL"}
)


def child_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: this one's, without any of deployhook's
    secrets or the repos' (a variable whose value holds a registered secret is dropped,
    whatever its name)."""
    return redact.child_environ(os.environ if base is None else base, hidden_names=PRIVATE_SETTINGS)


def stop_group(
    pgid: int, *, grace: float = TERM_GRACE_S, leader: subprocess.Popen[bytes] | None = None
) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after grace seconds.

    leader: our own child leading the group; it is reaped while we wait, or its zombie
    would keep the group "alive" for the whole grace period.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace
    while time.monotonic() < end:
        if leader is not None:
            leader.poll()
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(_POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_of_job(pgid: int, job_id: int) -> bool:
    """True if pgid still leads a process group started for job_id (read from /proc)."""
    try:
        environ = Path(f"/proc/{pgid}/environ").read_bytes()
    except OSError:
        return False
    return f"{JOB_ENV}={job_id}".encode() in environ.split(b"\0")


def started_by_live_worker(pid: int) -> bool:
    """True if pid was started by a worker that still runs: its parent is that worker.

    A worker that dies leaves its children to init (or a subreaper), so their parent no
    longer matches the pid they were marked with. A worker that only looks dead (its
    liveness lock lost in a database blip) still has them as children.
    """
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    marks = [v for v in environ if v.startswith(f"{WORKER_ENV}=".encode())]
    if not marks:
        return False
    parent = int(stat.rsplit(")", 1)[1].split()[1])
    return marks[0] == f"{WORKER_ENV}={parent}".encode()


def run(
    argv: Sequence[str],
    *,
    cwd: Path,
    output: Callable[[str], None],
    deadline: Deadline,
    cancel: threading.Event,
    env: Mapping[str, str] | None = None,
    on_start: Callable[[int], None] | None = None,
    job_id: int | None = None,
) -> int:
    """Run argv to completion and return its exit status.

    Raises JobTimedOut past the deadline and JobCancelled when cancel is set, after the
    process group was stopped.
    """
    deadline.check()
    child_env = child_environ() if env is None else dict(env)
    if job_id is not None:
        child_env[JOB_ENV] = str(job_id)
        child_env[WORKER_ENV] = str(os.getpid())
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise StepFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    reader = threading.Thread(target=_pump, args=(proc, output), daemon=True)
    reader.start()
    try:
        if on_start is not None:  # inside: if it fails, the group is stopped below
            on_start(proc.pid)
        while True:
            try:
                # Popen.wait polls in steps of at most 50 ms: the end is seen promptly.
                proc.wait(timeout=min(_POLL_S * 4, max(deadline.remaining(), 0.01)))
                break
            except subprocess.TimeoutExpired:
                pass
            if cancel.is_set():
                stop_group(proc.pid, leader=proc)
                raise JobCancelled("cancelled")
            if deadline.remaining() <= 0:
                stop_group(proc.pid, leader=proc)
                raise JobTimedOut(f"timed out after {deadline.seconds:g} s")
    finally:
        if proc.poll() is None:
            stop_group(proc.pid, grace=0, leader=proc)
            proc.wait()
        # Anything the leader left behind in its group goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=5)
        if proc.stdout:
            proc.stdout.close()
    return proc.returncode


def _pump(proc: subprocess.Popen[bytes], output: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        output(raw.decode("utf-8", "replace").rstrip("\r\n"))
