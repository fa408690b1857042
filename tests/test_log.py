"""Log lines: JSON or console, secrets masked, and nothing from a request drives a terminal."""

from __future__ import annotations

import io
import json

import structlog

from deployhook import log, redact
from tests.cli_logging import restore_logging  # noqa: F401 - the autouse fixture

ESC = "\x1b"


def test_console_lines_show_control_characters_escaped() -> None:
    """Trust finding 6: a repo name with ESC[2J in the URL cleared the admin's console."""
    out = io.StringIO()
    log.configure(fmt="console", level="info", stream=out)
    structlog.get_logger().info("delivery_answered", repo=f"x{ESC}[2J{ESC}]0;pwned\x07", n=1)
    line = out.getvalue()
    assert ESC not in line and "\x07" not in line
    assert "x\\x1b[2J\\x1b]0;pwned\\x07" in line


def test_json_lines_escape_control_characters_and_mask_secrets() -> None:
    secret = "a-secret-value-0123456789"
    redact.register([secret])
    out = io.StringIO()
    log.configure(fmt="json", level="info", stream=out)
    structlog.get_logger().info("step_failed", error=f"{ESC}[2J with {secret}")
    [line] = out.getvalue().splitlines()
    assert ESC not in line
    assert json.loads(line)["error"] == f"{ESC}[2J with [redacted]"
