"""A job's stored output is bounded: its beginning and its end (trust finding 11).

A build that prints without end (or a hostile Dockerfile) used to grow the store until
the disk was full. Now a job keeps the first and the last half of DEPLOYHOOK_MAX_OUTPUT
bytes, with a line saying how much was left out between them, so the error at the end
is never lost; the live log follows the same cap.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from deployhook.config import Settings
from deployhook.deploy.context import OutputCap
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from tests.helpers import Remote

FLOOD = """#!/bin/sh
# A build that prints far more than anyone should keep, then says why it failed.
[ "$1 $2" = "compose version" ] && { echo "Docker Compose version v2.99.0-fake"; exit 0; }
i=0
while [ $i -lt 40000 ]; do
  echo "build noise line $i ................................"; i=$((i+1))
done
echo "ERROR: the real cause, at the very end"
exit 1
"""


def test_a_flooding_build_keeps_its_beginning_and_its_end(
    settings: Settings,
    open_service: Callable[[Settings], Service],
    remote: Remote,
    tmp_path: Path,
) -> None:
    flood = tmp_path / "flood-docker"
    flood.write_text(FLOOD)
    flood.chmod(0o755)
    limit = 64 * 1024
    svc = open_service(
        dataclasses.replace(settings, compose=(str(flood), "compose"), max_output=limit)
    )
    job, _ = svc.run("site", sha=remote.commit_and_push({"index.html": "v2\n"}))
    Worker(svc).work(burst=True)
    ended = svc.job(job.id)
    assert ended.status == Status.FAILED
    lines = [line.line for line in svc.new_output(job.id)]
    stored = sum(len(line.encode()) + 1 for line in lines)
    assert stored < limit + 4096  # the cap, and a few lines of deployhook's own
    text = "\n".join(lines)
    assert "build noise line 0 " in text  # the beginning
    assert "ERROR: the real cause, at the very end" in text  # the end
    assert "output past 32 KiB" in text
    left_out = [line for line in lines if "were left out here" in line]
    assert len(left_out) == 1 and left_out[0].split()[1].isdigit()
    assert int(left_out[0].split()[1]) > 30000
    assert text.index("build noise line 0 ") < text.index(left_out[0]) < text.index("ERROR:")


@pytest.mark.parametrize("limit", [1024, 4096])
def test_the_cap_never_keeps_more_than_its_limit(limit: int) -> None:
    cap = OutputCap(limit)
    kept = []
    for n in range(5000):
        kept += cap.admit(float(n), f"line {n} " + "x" * (n % 50))
    kept += cap.end()
    notes = [line for _, line in kept if line.startswith("[deployhook]")]
    body = sum(len(line) + 1 for _, line in kept if not line.startswith("[deployhook]"))
    assert body <= limit
    assert len(notes) == 2
    assert kept[-1][1].startswith("line 4999 ")
    assert kept[0][1] == "line 0 "
