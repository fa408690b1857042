"""One webhook delivery, from raw request to answer (docs/webhooks.md, in its table's order).

Framework-free: the web layer hands over headers and the body stream, and sends back
what this returns. Everything slow happens later, in the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import IO, Any, Protocol

import structlog

from deployhook import log
from deployhook.errors import (
    BadPayload,
    BadSignature,
    BodyTooLarge,
    DeliveryRejected,
    MissingSignature,
    SecretNotConfigured,
    SourceMismatch,
    StoreUnavailable,
    UnsupportedContentType,
)
from deployhook.intake import events, signature
from deployhook.intake.events import Kind
from deployhook.registry import Registry, Repo, resolve_secrets
from deployhook.store import Intake, Store

logger = structlog.get_logger()

_CHUNK = 64 * 1024
_MAX_DELIVERY_ID = 128

STATUS_OF: dict[type[Exception], int] = {
    BodyTooLarge: 413,
    UnsupportedContentType: 415,
    SecretNotConfigured: 503,
    MissingSignature: 401,
    BadSignature: 403,
    BadPayload: 400,
    SourceMismatch: 403,
}


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


def _check(req: Request, repo: Repo, *, max_body: int, default_secret: str | None) -> events.Event:
    """Run the checks of docs/webhooks.md that need no store, in the table's order."""
    body = read_body(req.body, content_length=req.content_length, limit=max_body)
    media = events.check_media_type(req.content_type)
    secrets = resolve_secrets(repo, default=default_secret)
    log.redact(secrets)
    signature.verify(events.signed_bodies(body, media), secrets, signature.signatures(req.headers))
    event = events.parse(body, media=media, event=events.header(req.headers, events.EVENT_HEADERS))
    if repo.source and event.full_name not in repo.source:
        raise SourceMismatch(
            f"payload is for {event.full_name or 'no repository'!r}, not {' or '.join(repo.source)}"
        )
    return event


def receive(
    req: Request, *, registry: Registry, store: Store, max_body: int, default_secret: str | None
) -> tuple[int, dict[str, Any]]:
    """Judge one delivery and answer it: (HTTP status, JSON body)."""
    started = time.perf_counter()
    received_at = time.time()
    delivery_id = _delivery_id(req.headers)
    event_name = events.header(req.headers, events.EVENT_HEADERS)
    event_name = event_name[:64] if event_name else None
    structlog.contextvars.bind_contextvars(repo=req.name[:200], delivery=delivery_id)
    base = Intake(
        repo=req.name,
        kind="rejected",
        received_at=received_at,
        delivery_id=delivery_id,
        event=event_name,
    )
    repo = registry.find(req.name)
    try:
        if repo is None:
            status, body, outcome, job_id = (
                404,
                {"error": f"no repo named {req.name!r}"},
                "rejected",
                None,
            )
            store.record_rejection(replace(base, http_status=404, reason=body["error"]))
        else:
            status, body, outcome, job_id = _admit(
                req, repo, base, store=store, max_body=max_body, default_secret=default_secret
            )
        logger.info(
            "delivery_answered",
            event_name=event_name,
            outcome=outcome,
            status=status,
            job=job_id,
            latency_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return status, body
    finally:
        structlog.contextvars.unbind_contextvars("repo", "delivery")


def _admit(
    req: Request,
    repo: Repo,
    base: Intake,
    *,
    store: Store,
    max_body: int,
    default_secret: str | None,
) -> tuple[int, dict[str, Any], str, int | None]:
    node = repo.node or ""
    try:
        event = _check(req, repo, max_body=max_body, default_secret=default_secret)
    except DeliveryRejected as exc:
        return _reject(store, base, STATUS_OF[type(exc)], str(exc), node=node)
    except SecretNotConfigured as exc:
        return _reject(store, base, 503, str(exc), node=node)
    kind = str(event.kind)
    reason = event.reason
    if event.kind == Kind.PUSH and event.ref != repo.ref:
        kind, reason = "ignored", f"push to {event.branch}, not the deploy branch {repo.branch}"
    item = replace(
        base,
        kind=kind,
        sha=event.sha,
        ref=event.ref,
        reason=reason,
        node=node,
        repo_url=event.repo_url,
    )
    try:
        answer = store.submit(item)
    except StoreUnavailable as exc:
        logger.error("delivery_not_stored", error=str(exc))
        return 503, {"error": str(exc)}, "unavailable", None
    return (
        answer.http_status,
        answer.body,
        str(answer.outcome),
        answer.job.id if answer.job else answer.body.get("job"),
    )


def _reject(
    store: Store, base: Intake, status: int, reason: str, *, node: str
) -> tuple[int, dict[str, Any], str, None]:
    store.record_rejection(replace(base, http_status=status, reason=reason, node=node))
    return status, {"error": reason}, "rejected", None
