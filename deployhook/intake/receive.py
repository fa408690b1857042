"""One webhook delivery, from raw request to decision (docs/webhooks.md, in its table's order).

Framework-free: the web layer hands over headers and the body stream, and turns the
decision this returns into its answer. Everything slow happens later, in the worker.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Protocol

from deployhook import log as logsetup
from deployhook.errors import (
    BadSignature,
    BodyTooLarge,
    DeliveryRejected,
    DeployhookError,
    SecretNotConfigured,
    SourceMismatch,
    StoreUnavailable,
    UnknownRepo,
)
from deployhook.intake import events, signature
from deployhook.log import get_logger
from deployhook.models import Decision, DeliveryKind, Outcome
from deployhook.registry import Registry, Repo, resolve_secrets
from deployhook.store import CheckedDelivery, Store

logger = get_logger()

_CHUNK = 64 * 1024
_MAX_DELIVERY_ID = 128


class Headers(Protocol):
    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Request:
    """The parts of an HTTP request a delivery is judged on."""

    name: str
    headers: Headers
    body: IO[bytes]
    content_length: int | None
    content_type: str | None


def read_body(stream: IO[bytes], *, content_length: int | None, limit: int) -> bytes:
    """Read at most `limit` bytes; raise BodyTooLarge as soon as the body is known to be more."""
    if content_length is not None and content_length > limit:
        raise BodyTooLarge(f"body of {content_length} bytes is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body is over the {limit}-byte limit")
    return b"".join(chunks)


def _delivery_id(headers: Headers) -> str | None:
    raw = events.header(headers, events.DELIVERY_HEADERS)
    if raw is None:
        return None
    return "".join(c for c in raw[:_MAX_DELIVERY_ID] if c.isprintable()) or None


# The ledger name of deliveries to `POST /deploy` that no entry took (never a repo's name).
ROUTED_NAME = "*"
# One answer for "no secret verifies" and "no verifying entry has this source": a sender
# must not learn which repositories are deployed here from the difference.
NOT_ROUTED = "signature does not match the body"


@dataclass(frozen=True, slots=True)
class Routed:
    """What became of one delivery to `POST /deploy`: refused whole, or each entry's
    decision (repo name, decision), in registry order; ping: it was a ping."""

    rejection: Decision | None = None
    results: tuple[tuple[str, Decision], ...] = ()
    ping: bool = False


@dataclass(frozen=True, slots=True)
class Intake:
    """The judge of deliveries: the registry they are judged against, the ledger they are
    recorded in, and the two settings the checks need."""

    registry: Registry
    store: Store
    max_body: int
    default_secret: str | None

    def receive(self, req: Request, *, status_of: Callable[[Decision], int]) -> Decision:
        """Judge one delivery, record it in the ledger, and return what became of it.

        status_of is the web layer's rule for the answer's HTTP status; the ledger records
        it beside the decision.
        """
        started = time.perf_counter()
        with _delivery(req, req.name, status_of) as base:
            repo = self.registry.find(req.name)
            if repo is None:
                # The name comes from the request: shown and stored only in part.
                stranger = replace(base, known=False)
                decision = self._reject(stranger, UnknownRepo(f"no repo named {req.name[:100]!r}"))
            else:
                decision = self._admit(req, repo, replace(base, node=repo.node))
            logger.info(
                "delivery_answered",
                event_name=base.event,
                outcome=str(decision.outcome),
                status=status_of(decision),
                job=decision.job.id if decision.job else None,
                latency_ms=_ms_since(started),
            )
            return decision

    def receive_routed(self, req: Request, *, status_of: Callable[[Decision], int]) -> Routed:
        """`POST /deploy`: one delivery of an organisation- or system-wide webhook.

        In the intake's order (docs/webhooks.md): read the body, check its type, then
        verify against the secret of every entry that has a `source` before parsing; then
        route to the entries whose own secret verified and whose `source` holds the
        payload's `repository.full_name`, each judged and recorded in its own ledger as its
        own URL would. No verifying secret and no such entry are one answer (NOT_ROUTED).
        """
        started = time.perf_counter()
        with _delivery(req, ROUTED_NAME, status_of) as base:
            try:
                event, routed = self._route(req)
            except DeliveryRejected as exc:
                answer = Routed(rejection=self._reject(base, exc))
            else:
                answer = Routed(
                    results=tuple(
                        (repo.name, self._submit(_for_repo(event, repo, base))) for repo in routed
                    ),
                    ping=event.kind == DeliveryKind.PING,
                )
                if answer.ping and not routed:  # a verified ping for no entry's repository
                    self._submit(replace(base, kind=DeliveryKind.PING, reason="ping"))
            logger.info(
                "delivery_answered",
                event_name=base.event,
                routed=[name for name, _ in answer.results],
                outcomes=[str(d.outcome) for _, d in answer.results],
                rejected=str(answer.rejection.reason) if answer.rejection else None,
                latency_ms=_ms_since(started),
            )
            return answer

    def _admit(self, req: Request, repo: Repo, base: CheckedDelivery) -> Decision:
        try:
            event = self._check(req, repo)
        except (DeliveryRejected, SecretNotConfigured) as exc:
            return self._reject(base, exc)
        return self._submit(_for_repo(event, repo, base))

    def _check(self, req: Request, repo: Repo) -> events.Event:
        """Run the checks of docs/webhooks.md that need no store, in the table's order."""
        body = read_body(req.body, content_length=req.content_length, limit=self.max_body)
        media = events.check_media_type(req.content_type)
        secrets = resolve_secrets(repo, default=self.default_secret)
        signature.verify(
            events.signed_bodies(body, media), secrets, signature.signatures(req.headers)
        )
        event = events.parse(
            body, media=media, event=events.header(req.headers, events.EVENT_HEADERS)
        )
        if repo.source and event.full_name not in repo.source:
            raise SourceMismatch(
                f"payload is for {event.full_name or 'no repository'!r}, "
                f"not {' or '.join(repo.source)}"
            )
        return event

    def _route(self, req: Request) -> tuple[events.Event, list[Repo]]:
        """The checks of `POST /deploy`, in the intake's order; the event and its entries."""
        body = read_body(req.body, content_length=req.content_length, limit=self.max_body)
        media = events.check_media_type(req.content_type)
        offered = signature.signatures(req.headers)
        if not offered:
            signature.verify([], [], offered)  # raises MissingSignature: 401, as on a repo's URL
        verified = self._verified(
            [r for r in self.registry if r.source], events.signed_bodies(body, media), offered
        )
        if not verified:
            raise BadSignature(NOT_ROUTED)
        event = events.parse(
            body, media=media, event=events.header(req.headers, events.EVENT_HEADERS)
        )
        if event.kind == DeliveryKind.PING:
            # A ping that verifies is answered; an organisation's ping names no repository.
            return event, [r for r in verified if event.full_name in (None, *r.source)]
        routed = [r for r in verified if event.full_name in r.source]
        if not routed:
            raise BadSignature(NOT_ROUTED)
        return event, routed

    def _verified(self, repos: list[Repo], bodies: list[bytes], offered: list[str]) -> list[Repo]:
        """The entries whose own secret verifies the delivery. An entry whose secret is not
        configured (its own URL answers 503) takes no part. Each distinct secret is tried
        once: entries sharing an organisation's secret cost one HMAC."""
        verdicts: dict[tuple[str, ...], bool] = {}
        found = []
        for repo in repos:
            try:
                secrets = resolve_secrets(repo, default=self.default_secret)
            except SecretNotConfigured:
                continue
            if secrets not in verdicts:
                try:
                    signature.verify(bodies, secrets, offered)
                    verdicts[secrets] = True
                except BadSignature:
                    verdicts[secrets] = False
            if verdicts[secrets]:
                found.append(repo)
        return found

    def _submit(self, item: CheckedDelivery) -> Decision:
        try:
            return self.store.submit(item)
        except StoreUnavailable as exc:
            logger.error("delivery_not_stored", repo=item.repo, error=str(exc))
            return Decision(Outcome.REJECTED, item.kind, reason=str(exc), error=exc)

    def _reject(self, base: CheckedDelivery, error: DeployhookError) -> Decision:
        """Record a refused delivery; the refusal stands even if the ledger cannot take it."""
        decision = Decision(Outcome.REJECTED, DeliveryKind.REJECTED, reason=str(error), error=error)
        self.store.record_rejection(replace(base, reason=str(error), error=error))
        return decision


@contextmanager
def _delivery(
    req: Request, name: str, status_of: Callable[[Decision], int]
) -> Iterator[CheckedDelivery]:
    """The ledger row every delivery starts as (a rejection until judged otherwise), with
    the repo and delivery id bound to the log lines written while it is judged."""
    delivery_id = _delivery_id(req.headers)
    event_name = events.header(req.headers, events.EVENT_HEADERS)
    logsetup.bind_contextvars(repo=name[:200], delivery=delivery_id)
    try:
        yield CheckedDelivery(
            repo=name,
            kind=DeliveryKind.REJECTED,
            received_at=time.time(),
            status_of=status_of,
            delivery_id=delivery_id,
            event=event_name[:64] if event_name else None,
        )
    finally:
        logsetup.unbind_contextvars("repo", "delivery")


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def _for_repo(event: events.Event, repo: Repo, base: CheckedDelivery) -> CheckedDelivery:
    """A verified event as the ledger of repo decides on it (a push to another branch is
    ignored there)."""
    kind, reason = event.kind, event.reason
    if event.kind == DeliveryKind.PUSH:
        reason = _not_followed(event, repo)
        kind = DeliveryKind.IGNORED if reason else kind
    return replace(
        base,
        repo=repo.name,
        node=repo.node,
        kind=kind,
        sha=event.sha,
        ref=event.ref,
        reason=reason,
        repo_url=event.repo_url,
    )


def _not_followed(event: events.Event, repo: Repo) -> str | None:
    """Why a push is not one the entry deploys (docs/webhooks.md), or None."""
    if repo.tags:
        if event.tag is None:
            return f"push to {event.branch}: this entry deploys tags {repo.tags}, not a branch"
        if not fnmatch.fnmatchcase(event.tag, repo.tags):
            return f"tag push ({event.tag}) does not match {repo.tags}"
        return None
    if event.tag is not None:
        return f"tag push ({event.tag})"
    if event.ref != repo.ref:
        return f"push to {event.branch}, not the deploy branch {repo.branch}"
    return None
