"""Verified webhook bodies -> what they mean for a repo (a push, a ping, or nothing)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs

from deployhook.errors import BadPayload, UnsupportedContentType
from deployhook.models import DeliveryKind
from deployhook.text import is_sha

_REF_BAD_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_MAX_REF = 255

# Forgejo sends its own names first, then Gitea's, Gogs' and GitHub's; a proxy may drop some.
EVENT_HEADERS = ("X-Forgejo-Event", "X-Gitea-Event", "X-Gogs-Event", "X-GitHub-Event")
DELIVERY_HEADERS = (
    "X-Forgejo-Delivery",
    "X-Gitea-Delivery",
    "X-Gogs-Delivery",
    "X-GitHub-Delivery",
)

JSON_TYPES = frozenset({"application/json", "text/json"})
FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class Event:
    """What a delivery asks for. A push to a branch carries ref/sha; others a reason."""

    kind: DeliveryKind
    name: str
    ref: str | None = None
    sha: str | None = None
    before: str | None = None
    full_name: str | None = None
    repo_url: str | None = None
    reason: str | None = None

    @property
    def branch(self) -> str | None:
        if self.ref and self.ref.startswith("refs/heads/"):
            return self.ref.removeprefix("refs/heads/")
        return None

    @property
    def tag(self) -> str | None:
        if self.ref and self.ref.startswith("refs/tags/"):
            return self.ref.removeprefix("refs/tags/")
        return None


def header(headers: Any, names: tuple[str, ...]) -> str | None:
    """Return the first non-empty value among several header names."""
    for name in names:
        value = headers.get(name)
        if value and value.strip():
            return str(value.strip())
    return None


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_media_type(content_type: str | None) -> str:
    """Return the media type, or raise UnsupportedContentType."""
    media = media_type(content_type)
    if media in JSON_TYPES or media == FORM_TYPE:
        return media
    raise UnsupportedContentType(
        f"content type {media or '(none)'!r} is not supported: send application/json or "
        f"{FORM_TYPE} with the JSON in 'payload'"
    )


def signed_bodies(body: bytes, media: str) -> list[bytes]:
    """Return the byte strings a sender may have signed.

    GitHub signs a form body as sent; Gitea and Gogs sign the JSON text in `payload`.
    """
    if media != FORM_TYPE:
        return [body]
    payload = form_payload(body)
    return [body] if payload is None else [body, payload.encode("utf-8")]


def form_payload(body: bytes) -> str | None:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        return None
    values = fields.get("payload")
    return values[0] if values else None


def _json(body: bytes, media: str) -> dict[str, Any]:
    if media == FORM_TYPE:
        text = form_payload(body)
        if text is None:
            raise BadPayload("form body has no 'payload' field")
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadPayload("body is not UTF-8 JSON") from None
    try:
        doc = json.loads(text)
    except RecursionError:
        raise BadPayload("body is nested too deeply") from None
    except ValueError as exc:
        raise BadPayload(f"body is not JSON: {exc.msg if hasattr(exc, 'msg') else exc}") from None
    if not isinstance(doc, dict):
        raise BadPayload("body is not a JSON object")
    return doc


def _text(doc: Any, *path: str) -> str | None:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc if isinstance(doc, str) else None


def _web_url(doc: dict[str, Any]) -> str | None:
    url = _text(doc, "repository", "html_url")
    if (
        url
        and url.startswith(("https://", "http://"))
        and len(url) < 512
        and not any(c in url for c in "\"'<> \x00\n\r")
    ):
        return url.rstrip("/")
    return None


def _check_ref(ref: Any) -> str:
    if not isinstance(ref, str) or not ref:
        raise BadPayload("push payload has no 'ref'")
    if (
        len(ref) > _MAX_REF
        or not ref.startswith("refs/")
        or _REF_BAD_RE.search(ref)
        or ref.endswith(("/", ".", ".lock"))
    ):
        raise BadPayload("'ref' is not a valid git ref name")
    return ref


def _check_sha(value: Any, key: str) -> str:
    if not isinstance(value, str) or not is_sha(value.lower()):
        raise BadPayload(f"'{key}' is not a commit id (40 or 64 hex characters)")
    return value.lower()


def parse(body: bytes, *, media: str, event: str | None) -> Event:
    """Read a verified body. Raise BadPayload for anything that is not a usable payload."""
    doc = _json(body, media)
    name = (event or "push").strip().lower()
    full_name = _text(doc, "repository", "full_name")
    if name == "ping":
        return Event(DeliveryKind.PING, name, full_name=full_name)
    if name != "push":
        return Event(
            DeliveryKind.IGNORED, name, full_name=full_name, reason=f"event {name!r} is not a push"
        )
    ref = _check_ref(doc.get("ref"))
    sha = _check_sha(doc.get("after"), "after")
    before_raw = doc.get("before")
    before = (
        before_raw.lower() if isinstance(before_raw, str) and is_sha(before_raw.lower()) else None
    )
    push = Event(
        DeliveryKind.PUSH,
        name,
        ref=ref,
        sha=sha,
        before=before,
        full_name=full_name,
        repo_url=_web_url(doc),
    )
    if set(sha) == {"0"} or doc.get("deleted") is True:
        return replace(push, kind=DeliveryKind.IGNORED, reason=f"{ref} was deleted")
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        return replace(push, kind=DeliveryKind.IGNORED, reason=f"{ref} is not a branch")
    return push
