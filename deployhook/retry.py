"""Retry budgets for calls to the outside (forges, notification services).

A call that may pass next time is retried with exponential backoff, a few times, but
never past a total time budget: a forge or notifier that is down costs a deploy seconds,
never the deploy itself.
"""

from __future__ import annotations

import threading
import time

import tenacity


class within(tenacity.stop.stop_base):
    """Stop after `attempts`, when the next attempt would start past `end` (monotonic),
    or once `abort` is set."""

    def __init__(self, end: float, *, attempts: int, abort: threading.Event | None = None):
        self.end = end
        self.attempts = attempts
        self.abort = abort

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        upcoming = getattr(state, "upcoming_sleep", 0.0) or 0.0
        return (
            state.attempt_number >= self.attempts
            or time.monotonic() + upcoming >= self.end
            or (self.abort is not None and self.abort.is_set())
        )


def backoff() -> tenacity.wait.wait_base:
    """0.5 s, 1 s, 2 s, ... at most 4 s between attempts."""
    return tenacity.wait_exponential(multiplier=0.5, max=4)
