"""Webhook signatures: HMAC-SHA256 of the raw body, as Forgejo, Gitea, Gogs and GitHub send
them."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any

from deployhook.errors import BadSignature, MissingSignature

# Header name -> the prefix its value carries. Gitea sends the last three, Forgejo all
# four, with the same digest.
SIGNATURE_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Forgejo-Signature", ""),
    ("X-Gitea-Signature", ""),
    ("X-Gogs-Signature", ""),
    ("X-Hub-Signature-256", "sha256="),
)


def sign(body: bytes, secret: str) -> str:
    """Return the lower-case hex HMAC-SHA256 of body under secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signatures(headers: Any) -> list[str]:
    """Return the hex digests offered by a request's signature headers (empty ones dropped).

    Gitea without a configured secret still sends every header, empty (or just the
    `sha256=` prefix): that counts as no signature at all.
    """
    found = []
    for name, prefix in SIGNATURE_HEADERS:
        value = (headers.get(name) or "").strip()
        if prefix and value.lower().startswith(prefix):
            value = value[len(prefix) :]
        elif prefix:
            value = ""
        if value:
            found.append(value.lower())
    return found


def verify(bodies: Iterable[bytes], secrets: Iterable[str], offered: list[str]) -> None:
    """Raise unless one offered digest is the HMAC of one body under one secret.

    Several bodies: a form delivery is signed over the raw body by GitHub and over the
    `payload` field by Gitea. Several secrets: rotation. Every comparison is constant-time.
    """
    if not offered:
        raise MissingSignature(
            "no signature header (X-Forgejo-Signature, X-Gitea-Signature, X-Gogs-Signature "
            "or X-Hub-Signature-256)"
        )
    matched = False
    for body in bodies:
        for secret in secrets:
            expected = sign(body, secret).encode()
            for digest in offered:
                # Bytes, not str: compare_digest raises TypeError on non-ASCII text. No
                # early exit: the time taken must not depend on which secret matched.
                matched |= hmac.compare_digest(expected, digest.encode("utf-8", "replace"))
    if not matched:
        raise BadSignature("signature does not match the body")
