"""structlog setup: JSON lines when not on a terminal, console lines when on one.

Context (repo, job, delivery) is bound once with contextvars. A last processor masks
every known secret value, so a secret that slips into an event never reaches the log.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

_MASK = "[redacted]"
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def redact(values: Iterable[str | None]) -> None:
    """Register secret values that must never appear in a log line."""
    fresh = {v for v in values if v and len(v) >= 4} - _secrets
    if fresh:
        with _secrets_lock:
            _secrets.update(fresh)


def mask(text: str) -> str:
    """Return text with every registered secret replaced."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, _MASK)
    return text


def _mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    if not _secrets:
        return event
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = mask(value)
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = mask(str(value))
    return event


def configure(*, fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog (and stdlib logging, for gunicorn) for this process."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _mask_secrets,
                renderer,
            ],
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))
