"""Secrets never leave the process: every secret value known here, and the one way to hide it.

A value is registered the moment it is read (settings, registry/secrets.py), so nothing
can print it before it is known. Everything that leaves the process goes through mask():
the log renderer, the store's writes (job errors, step errors, output, ledger reasons),
the web layer's answers, and what is sent to forges and notification services. Child
processes get an environment without them (child_environ).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

MASK = "[redacted]"
# Shorter values are not secrets worth hiding (and would mask ordinary words).
MIN_LENGTH = 6


class _Known:
    """The registered forms, longest first (a secret that contains another is masked whole);
    replaced whole on each registration, so readers never lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.forms: tuple[str, ...] = ()


_known = _Known()


def _forms(value: str) -> set[str]:
    """The ways a value may appear in text: as is, URL-encoded, in a Basic header."""
    forms = {value, quote(value, safe=""), quote_plus(value)}
    forms.add(base64.b64encode(value.encode()).decode())
    if "://" in value:  # a URL with credentials: its password alone too
        password = urlsplit(value).password
        if password:
            forms |= _forms(password)
    return {f for f in forms if len(f) >= MIN_LENGTH}


def register(values: Iterable[str | None]) -> None:
    """Make these values secret: mask() hides them from now on, in this process."""
    fresh: set[str] = set()
    for value in values:
        if value and len(value) >= MIN_LENGTH:
            fresh |= _forms(value)
    if fresh - set(_known.forms):
        with _known.lock:
            merged = set(_known.forms) | fresh
            _known.forms = tuple(sorted(merged, key=len, reverse=True))


def known() -> tuple[str, ...]:
    return _known.forms


def mask(text: str) -> str:
    """text with every registered secret replaced by [redacted]."""
    for secret in _known.forms:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_all(value: Any) -> Any:
    """mask() every string inside a JSON-like value (dicts, lists, strings)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {mask_all(k): mask_all(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_all(v) for v in value]
    return value


def child_environ(base: Mapping[str, str], *, hidden_names: Iterable[str]) -> dict[str, str]:
    """An environment for a child process: without the named variables, and without any
    variable whose value holds a registered secret (whatever its name)."""
    hidden = set(hidden_names)
    secrets = _known.forms
    return {k: v for k, v in base.items() if k not in hidden and not any(s in v for s in secrets)}


def read_file(path: Path) -> str:
    """A secret file's content, stripped, and registered before anything could print it.

    Raises ValueError saying why it cannot serve: unreadable, not UTF-8 text, or empty.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8 text") from None
    value = raw.strip()
    register([value])
    if not value:
        raise ValueError("is empty")
    return value
