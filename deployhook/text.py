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


# An escape sequence: CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), or ESC and one
# more character; then any other control character but tab and newline.
_ESCAPE_RE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: cursor, erase, colours (SGR)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: title, hyperlink, clipboard
    r"|\x1b[@-Z\\-_]?"  # any other escape
    r"|\x9b[0-?]*[ -/]*[@-~]"  # the one-byte CSI
)
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_COLOUR_RE = re.compile(r"\x1b\[[0-9;]*m\Z")


def for_terminal(text: str, *, colours: bool) -> str:
    """text as a terminal may show it: no escape sequence that moves the cursor, clears
    the screen or sets a title (OSC), no other control character; colours (SGR) kept
    only when asked."""

    out, last = [], 0
    for match in _ESCAPE_RE.finditer(text):
        out.append(_CONTROL_RE.sub("", text[last : match.start()]))
        if colours and _COLOUR_RE.match(match.group()):
            out.append(match.group())
        last = match.end()
    out.append(_CONTROL_RE.sub("", text[last:]))
    return "".join(out)


def one_line(text: object, limit: int = 300) -> str:
    """text on one line (whitespace runs become one space), cut to limit with an ellipsis."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
