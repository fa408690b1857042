"""structlog setup: JSON lines when not on a terminal, console lines when on one.

Context (repo, job, delivery) is bound once with contextvars. A last processor masks
every known secret value (redact.py), so a secret that slips into an event never reaches
the log; on a console, control characters from requests are shown escaped, not obeyed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

from deployhook import redact

# C0 controls but newline and tab, DEL, and C1 controls: a terminal acts on them.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """Hide every registered secret in every value (redact.py is the one way to)."""
    if not redact.known():
        return event
    for key, value in event.items():
        if isinstance(value, str | list | tuple | dict):
            event[key] = redact.mask_all(value)
        elif value is not None and not isinstance(value, int | float | bool):
            event[key] = redact.mask(str(value))
    return event


def escape_controls(text: str) -> str:
    """Control characters as visible escapes (\\x1b), so text cannot drive a terminal."""
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _escape_controls(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """On a console, a value from a request (a repo name, a header) is shown, not obeyed.

    JSON lines need nothing: the JSON encoder escapes every control character.
    """
    for key, value in event.items():
        if isinstance(value, str) and _CONTROL_RE.search(value):
            event[key] = escape_controls(value)
    return event


class _LineWriter:
    """Writes each log line with a single write(2) on the stream's descriptor.

    serve's processes (the master, web processes, worker) share one stdout. print() and
    a buffered stream write a line in pieces (the text, then its newline; or in 8 KiB
    parts), and another process's line could land in between: one line held two JSON
    objects. One write of the whole line to a file opened for appending (or a pipe, up
    to PIPE_BUF bytes) never interleaves.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):  # a StringIO, pytest's capture
            self._fd = None
        # Re-entrant: a signal handler that logs while this thread writes must not hang.
        self._lock = threading.RLock()

    def line(self, text: str) -> None:
        with self._lock:
            if self._fd is None:
                self._stream.write(text + "\n")
                self._stream.flush()
                return
            with contextlib.suppress(Exception):
                self._stream.flush()  # what was printed through the stream comes first
            data = memoryview((text + "\n").encode("utf-8", "backslashreplace"))
            while data:
                written = os.write(self._fd, data)
                data = data[written:]


class _LineLogger:
    """structlog's logger: each rendered event is one line, written at once."""

    def __init__(self, writer: _LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.line(message)

    log = debug = info = warn = warning = err = error = critical = exception = msg
    fatal = failure = msg


class _LineHandler(logging.Handler):
    """stdlib logging's (gunicorn's) records, each one line written at once."""

    def __init__(self, writer: _LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.line(self.format(record))
        except Exception:
            self.handleError(record)


class _Logger:
    """A module's logger: structlog's, imported (and configured, see configure's
    when_used) at the first line logged. A command that logs nothing, `deployhook
    status` among them, starts without structlog, which imports asyncio."""

    __slots__ = ("_bound",)

    def __init__(self) -> None:
        self._bound: Any = None

    def __getattr__(self, name: str) -> Any:
        bound = self._bound
        if bound is None:
            bound = self._bound = _structlog().get_logger()
        return getattr(bound, name)


def get_logger() -> Any:
    """The logger a module keeps (`log = get_logger()`): structlog's, when first used."""
    return _Logger()


# configure's arguments while it waits for the first line (when_used), and
# structlog.contextvars once imported.
_later: dict[str, Any] = {}
_lock = threading.Lock()
_contextvars: list[Any] = []


def _structlog() -> Any:
    """structlog, imported; configured first if configure was told to wait for it."""
    import structlog

    if _later:
        with _lock:
            later = dict(_later)
            _later.clear()
        if later:
            configure(**later)
    return structlog


def bind_contextvars(**values: Any) -> None:
    """structlog.contextvars.bind_contextvars, structlog imported when first used."""
    if not _contextvars:
        _contextvars.append(_structlog().contextvars)
    _contextvars[0].bind_contextvars(**values)


def unbind_contextvars(*keys: str) -> None:
    if not _contextvars:
        _contextvars.append(_structlog().contextvars)
    _contextvars[0].unbind_contextvars(*keys)


def configure(
    *,
    fmt: str = "auto",
    level: str = "info",
    stream: TextIO | None = None,
    when_used: bool = False,
) -> None:
    """Configure structlog (and stdlib logging, for gunicorn) for this process.

    when_used: at the first line a get_logger() logger writes (a command that may log
    nothing need not import structlog)."""
    if when_used and "structlog" not in sys.modules:  # once imported, nothing to save
        _later.update(fmt=fmt, level=level, stream=stream)
        return
    _later.clear()
    import structlog

    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    last: list[Any] = [_mask_secrets] if fmt == "json" else [_mask_secrets, _escape_controls]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    writer = _LineWriter(out)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *last,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: _LineLogger(writer),
        cache_logger_on_first_use=False,
    )
    handler = _LineHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *last,
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
