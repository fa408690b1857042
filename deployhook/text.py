"""Small text facts shared by every wing: commit ids, one-line messages."""

from __future__ import annotations

import re

from deployhook.errors import InvalidRequest

# A full commit id: SHA-1 (40 hex) or SHA-256 (64 hex) repositories, lower case.
SHA_RE = re.compile(r"(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")


def is_sha(value: str) -> bool:
    return bool(SHA_RE.match(value))


def check_sha(sha: str) -> str:
    """Return sha lower-cased, or raise InvalidRequest unless it is a full commit id."""
    lowered = sha.strip().lower()
    if not SHA_RE.match(lowered):
        raise InvalidRequest(f"{sha!r} is not a full commit id (40 or 64 hex characters)")
    return lowered


def one_line(text: object, limit: int = 300) -> str:
    """text on one line (whitespace runs become one space), cut to limit with an ellipsis."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
