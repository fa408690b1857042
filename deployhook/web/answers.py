"""The one place where decisions and domain errors become HTTP answers.

Statuses of the webhook's table (docs/webhooks.md) and of the API (docs/status.md): the
intake and the ledger return decisions, domain code raises DeployhookError subclasses,
and only this module knows the status codes and bodies they turn into.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from deployhook import errors, redact
from deployhook.intake.receive import Routed
from deployhook.models import Decision, DeliveryKind, Outcome

# Most specific first: the first class an error is an instance of gives its status.
STATUS_OF: tuple[tuple[type[Exception], int], ...] = (
    (errors.UnknownRepo, 404),
    (errors.UnknownJob, 404),
    (errors.BodyTooLarge, 413),
    (errors.UnsupportedContentType, 415),
    (errors.MissingSignature, 401),
    (errors.BadSignature, 403),
    (errors.SourceMismatch, 403),
    (errors.BadPayload, 400),
    (errors.InvalidRequest, 400),
    (errors.Unauthorized, 401),
    (errors.AdminDisabled, 403),
    (errors.CrossSite, 403),
    (errors.Conflict, 409),
    (errors.SecretNotConfigured, 503),
    (errors.StoreUnavailable, 503),
    (errors.ConfigError, 503),
)


# What a 401 answer carries (a browser then asks for the admin token).
WWW_AUTHENTICATE = 'Basic realm="deployhook", charset="UTF-8"'
# The body of a 500 (an exception no rule knows: a bug), as Flask's handler words it.
INTERNAL_ERROR = {
    "error": "The server encountered an internal error and was unable to complete your"
    " request. Either the server is overloaded or there is an error in the application."
}


def render(body: dict[str, Any]) -> bytes:
    """A JSON body as the API sends it: compact, ASCII, keys in order, one newline (what
    Flask's jsonify makes of it, for the raw path of web/fast.py)."""
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()


_STATUS_LINES: dict[int, str] = {}


def status_line(code: int) -> str:
    """`202 ACCEPTED`: the WSGI status line, spelled as werkzeug spells it."""
    line = _STATUS_LINES.get(code)
    if line is None:
        line = _STATUS_LINES[code] = f"{code} {HTTP_STATUS_CODES.get(code, 'unknown').upper()}"
    return line


def error_body(exc: BaseException, *, detail: bool = True) -> dict[str, str]:
    """The JSON body of an error answer: its one line, with any secret masked.

    Without detail (private mode, to a stranger), a server-side error (5xx) says what
    is wrong but not where: no file path, no variable name.
    """
    text = redact.mask(str(exc))
    if not detail and error_status(exc) >= 500:
        text = outline(text)
    return {"error": text}


def outline(text: str) -> str:
    """A message without its detail: what comes before the first ": " (the rest names
    files, variables and keys, for admins)."""
    return text.split(": ", 1)[0]


def error_status(exc: BaseException) -> int:
    """The HTTP status of a domain error (500 for anything not known here: a bug)."""
    return next((code for cls, code in STATUS_OF if isinstance(exc, cls)), 500)


def error_headers(status: int) -> list[tuple[str, str]]:
    """The headers an error answer adds: a 401 says how to authenticate."""
    return [("WWW-Authenticate", WWW_AUTHENTICATE)] if status == 401 else []


def decision_status(decision: Decision) -> int:
    """The HTTP status of the answer to a delivery."""
    if decision.outcome == Outcome.REJECTED:
        return error_status(decision.error) if decision.error is not None else 400
    if decision.first is not None:
        # A duplicate: nothing new was queued, whatever the first delivery became.
        return 200
    if decision.outcome in {Outcome.QUEUED, Outcome.COALESCED}:
        return 202
    return 200


def routed_status(routed: Routed) -> int:
    """The HTTP status of the answer to `POST /deploy` (docs/webhooks.md): 202 when any
    entry's job was queued or joined, 503 when the store refused one, else 200."""
    if routed.rejection is not None:
        return decision_status(routed.rejection)
    outcomes = {decision.outcome for _, decision in routed.results}
    if outcomes & {Outcome.QUEUED, Outcome.COALESCED}:
        return 202
    if Outcome.REJECTED in outcomes:
        return next(decision_status(d) for _, d in routed.results if d.outcome == Outcome.REJECTED)
    return 200


def routed_body(routed: Routed, *, detail: bool = True) -> dict[str, Any]:
    """The JSON body of the answer to `POST /deploy`: `{"results": [{"repo", "status",
    "job", "reason"}]}` (an error body when refused whole, `{"status": "pong"}` for a
    ping)."""
    if routed.rejection is not None:
        return decision_body(routed.rejection, detail=detail)
    if routed.ping:
        return {"status": "pong"}
    results = []
    refused = None
    for repo, decision in routed.results:
        job = decision.job or (decision.first.job if decision.first else None)
        reason = decision.reason
        if decision.outcome == Outcome.REJECTED and decision.error is not None:
            refused = error_body(decision.error, detail=detail)["error"]
            reason = refused
        results.append(
            {
                "repo": repo,
                "status": str(decision.outcome),
                "job": job.id if job else None,
                "reason": redact.mask(reason) if reason else None,
            }
        )
    body: dict[str, Any] = {"results": results}
    if refused is not None and routed_status(routed) >= 500:
        body = {"error": refused, **body}
    return body


def decision_body(decision: Decision, *, detail: bool = True) -> dict[str, Any]:
    """The JSON body of the answer to a delivery (detail: as in error_body)."""
    if decision.first is not None:
        return {**decision_body(decision.first), "duplicate": True}
    if decision.outcome == Outcome.REJECTED:
        if decision.error is not None:
            return error_body(decision.error, detail=detail)
        return {"error": redact.mask(decision.reason or "rejected")}
    if decision.kind == DeliveryKind.PING:
        return {"status": "pong"}
    if decision.outcome in {Outcome.IGNORED, Outcome.HELD}:
        return {"status": str(decision.outcome), "reason": redact.mask(decision.reason or "")}
    job = decision.job
    assert job is not None, decision
    body: dict[str, Any] = {
        "status": str(job.status),
        "job": job.id,
        "repo": job.repo,
        "sha": job.sha,
        "status_url": f"/jobs/{job.id}",
    }
    if decision.coalesced:
        body["coalesced"] = True
    return body
