"""Notifications through Apprise: a failure, a rollback, and the recovery after a failure.

One message per change of a repo's state, decided from its job history in the store:
a second failure in a row says nothing new, a rollback always does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import tenacity

from deployhook import redact, retry
from deployhook.deploy.context import Context, job_url
from deployhook.errors import SecretNotConfigured
from deployhook.log import get_logger
from deployhook.models import Job, Status, Trigger
from deployhook.registry import Repo, Token, repo_token
from deployhook.store import Store

logger = get_logger()

ATTEMPTS = 3
BUDGET_S = 15.0  # all URLs, all attempts together
_TIMEOUT_S = 5.0


class State(StrEnum):
    """Where a repo stands after a job, as far as people need to hear about it."""

    OK = "ok"
    FAILING = "failing"
    ROLLED_BACK = "rolled_back"


class MessageKind(StrEnum):
    FAILURE = "failure"
    ROLLBACK = "rollback"
    RECOVERY = "recovery"


@dataclass(frozen=True, slots=True)
class Message:
    kind: MessageKind
    title: str
    body: str


def state_after(job: Job) -> State | None:
    """The state a job leaves its repo in; None for jobs that say nothing (cancelled)."""
    if job.status == Status.FAILED:
        return State.FAILING
    if job.status == Status.SUCCEEDED:
        return State.ROLLED_BACK if job.trigger == Trigger.ROLLBACK else State.OK
    return None


def previous_state(store: Store, job: Job) -> State:
    """The repo's state before job: from its last decisive job that ended earlier."""
    for earlier in store.jobs(job.repo, limit=50):
        if earlier.id == job.id or earlier.finished_at is None:
            continue
        if job.finished_at is not None and earlier.finished_at > job.finished_at:
            continue
        state = state_after(earlier)
        if state is not None:
            return state
    return State.OK


def decide(job: Job, before: State, *, public_url: str | None) -> Message | None:
    """The message job calls for, given the repo's state before it, or None."""
    after = state_after(job)
    sha = job.sha[:12]
    link = job_url(public_url, job.id)
    tail = f"\n{link}" if link else ""
    if job.trigger == Trigger.ROLLBACK and after is not None:
        if after == State.ROLLED_BACK:
            return Message(
                MessageKind.ROLLBACK,
                f"{job.repo} rolled back to {sha}",
                f"{job.repo}: rolled back to {sha} after a failed deploy{tail}",
            )
        return Message(
            MessageKind.ROLLBACK,
            f"{job.repo}: rollback to {sha} failed",
            f"{job.repo}: rollback to {sha} failed: {job.error}{tail}",
        )
    if after == State.FAILING and before != State.FAILING:
        return Message(
            MessageKind.FAILURE,
            f"{job.repo}: deploy of {sha} failed",
            f"{job.repo}: deploy of {sha} ({job.trigger}) failed: {job.error}{tail}",
        )
    if after == State.OK and before != State.OK:
        return Message(
            MessageKind.RECOVERY,
            f"{job.repo} recovered: {sha} deployed",
            f"{job.repo}: {sha} deployed ({job.trigger}); the repo is healthy again{tail}",
        )
    return None


class _NotSent(Exception):
    """A service did not take the message."""


def send(urls: str, message: Message) -> tuple[int, list[str]]:
    """Send message to every Apprise URL in urls; return (sent, URLs that failed).

    Apprise says only whether a service took the message, not why, so every failure is
    retried a few times with backoff; all of it within BUDGET_S.
    """
    import apprise

    notify_type = {
        MessageKind.FAILURE: apprise.NotifyType.FAILURE,
        MessageKind.ROLLBACK: apprise.NotifyType.WARNING,
        MessageKind.RECOVERY: apprise.NotifyType.SUCCESS,
    }[message.kind]
    hub = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
    valid = hub.add(urls)
    sent, failed = 0, [] if valid else ["(an invalid Apprise URL)"]
    end = time.monotonic() + BUDGET_S
    for service in hub:
        plugin: Any = service  # Apprise's plugins carry no type hints
        shown = redact.mask(str(plugin.url(privacy=True)))
        service.socket_connect_timeout = min(service.socket_connect_timeout, _TIMEOUT_S)
        service.socket_read_timeout = min(service.socket_read_timeout, _TIMEOUT_S)

        def attempt(service: Any = service) -> None:
            body, title = redact.mask(message.body), redact.mask(message.title)
            if not service.notify(body=body, title=title, notify_type=notify_type):
                raise _NotSent

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_NotSent),
            stop=retry.within(end, attempts=ATTEMPTS),
            wait=retry.backoff(),
            reraise=True,
        )
        try:
            retrying(attempt)
        except _NotSent:
            failed.append(shown)
        except Exception as exc:  # a plugin bug must not end the others
            failed.append(f"{shown} ({type(exc).__name__})")
        else:
            sent += 1
    return sent, failed


def urls_for(repo: Repo, environ: Mapping[str, str] | None = None) -> str | None:
    """The repo's notification URLs (from notify_env or notify_file), or None if it names
    none. Raises SecretNotConfigured when they are named but unset or unreadable."""
    # These URLs often embed tokens: they are shown only as Apprise's privacy form.
    source = Token("notify", repo.notify_env, repo.notify_file)
    if not source.env and not source.file:
        return None
    return repo_token(source, what="notify", environ=environ)


class Notifier:
    """Reporter: one message per state change of a repo, to its `notify_env` URLs."""

    def started(self, ctx: Context) -> None:
        """Nothing to say when a job starts."""

    def finished(self, ctx: Context, job: Job) -> None:
        if not ctx.repo.notify_env and not ctx.repo.notify_file:
            return
        message = decide(job, previous_state(ctx.store, job), public_url=ctx.settings.public_url)
        if message is None:
            return
        try:
            urls = urls_for(ctx.repo)
        except SecretNotConfigured as exc:
            ctx.output(f"{exc}; no {message.kind} message sent")
            return
        if urls is None:
            return
        sent, failed = send(urls, message)
        if failed:
            ctx.output(f"notify: {message.kind} message not delivered to {', '.join(failed)}")
            logger.warning(
                "notification_failed", kind=str(message.kind), failed=len(failed), sent=sent
            )
        if sent:
            ctx.output(
                f"notify: {message.kind} message sent to {sent} "
                f"destination{'s' if sent != 1 else ''}"
            )
            logger.info("notification_sent", kind=str(message.kind), sent=sent)
