"""Reading a job's output from the store: all of it, or following it until the job ends.

Any process can serve it (a web process, the CLI): the worker writes lines to the store
as they come, and the reader polls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from deployhook import redact
from deployhook.errors import UnknownJob
from deployhook.models import LogLine, Status, iso
from deployhook.store import Store

POLL_S = 0.25
PAGE = 5000
# Lines a reporter writes just after the job ended (commit status, notifications)
# still arrive if they come within this long.
END_GRACE_S = 0.5
# A follower never holds a thread for longer than this; it can reconnect.
FOLLOW_MAX_S = 2 * 3600.0


def format_line(ts: float, line: str) -> str:
    """One output line as shown: its UTC time, a space, the text (secrets masked)."""
    return f"{iso(ts)} {redact.mask(line)}\n"


def lines(
    store: Store,
    job_id: int,
    *,
    follow: bool = False,
    poll_s: float = POLL_S,
    max_s: float = FOLLOW_MAX_S,
    gone: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Return the job's output lines; with follow, they go on until the job has ended.

    Raises UnknownJob at once (not on first iteration) if the job does not exist. A
    follower stops early when `gone()` says the reader went away, or after max_s.
    """
    status, rows = store.tail(job_id, limit=PAGE)
    if status is None:
        raise UnknownJob(f"no job {job_id}")
    return _follow(
        store,
        job_id,
        status,
        rows,
        follow=follow,
        poll_s=poll_s,
        max_s=max_s,
        gone=gone,
        sleep=sleep,
    )


def _follow(
    store: Store,
    job_id: int,
    status: Status | None,
    rows: list[LogLine],
    *,
    follow: bool,
    poll_s: float,
    max_s: float,
    gone: Callable[[], bool],
    sleep: Callable[[float], None],
) -> Iterator[str]:
    after = 0
    deadline = time.monotonic() + max_s
    ended_at: float | None = None
    while True:
        for row in rows:
            yield format_line(row.ts, row.line)
            after = row.id
        if len(rows) == PAGE:  # more is waiting: no pause
            status, rows = store.tail(job_id, after=after, limit=PAGE)
            continue
        if not follow or status is None:
            return
        if status.ended:
            now = time.monotonic()
            if ended_at is None:
                ended_at = now
            elif not rows and now - ended_at >= END_GRACE_S:
                return
        if time.monotonic() >= deadline or gone():
            return
        sleep(poll_s)
        status, rows = store.tail(job_id, after=after, limit=PAGE)
