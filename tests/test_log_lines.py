"""Log lines from several processes never interleave (docs/reliability.md, finding 6).

serve's processes share one stdout; the soak found a line holding two JSON objects, the
web process's and the worker's, 7 microseconds apart: a line was written in pieces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

WRITER = textwrap.dedent("""
    import logging, sys
    import structlog
    from deployhook import log
    log.configure(fmt="json", level="info")
    logger = structlog.get_logger()
    name = sys.argv[1]
    for n in range(300):
        # Long lines, as a traceback makes them: past any stream buffer (8 KiB).
        logger.info("soak_line", who=name, n=n, filler=name * 12000)
        logging.getLogger("gunicorn.error").info("%s %d %s", name, n, name * 9000)
""")


def test_finding_6_lines_of_processes_sharing_a_log_never_interleave(tmp_path: Path) -> None:
    out = tmp_path / "serve.log"
    with open(out, "ab") as shared:  # what tests/server.py and a container's log do
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, name], stdout=shared, stderr=subprocess.STDOUT
            )
            for name in ("a", "b", "c")
        ]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    lines = out.read_text().splitlines()
    assert len(lines) == 3 * 300 * 2
    events = [json.loads(line) for line in lines]  # one whole object per line, no more
    whose = [e.get("who") or e["event"].split(" ", 1)[0] for e in events]
    assert {w: whose.count(w) for w in set(whose)} == {"a": 600, "b": 600, "c": 600}
