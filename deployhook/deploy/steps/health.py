"""The `health` step: wait until the project's containers run, healthy where checked.

Containers are found by the labels Compose sets (the project name as Compose resolves
it, deploy/project.py), through the Docker Engine API (deploy/engine.py).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from deployhook.deploy import process
from deployhook.deploy.compose import ONEOFF_LABEL, PROJECT_LABEL, SERVICE_LABEL, WORKDIR_LABEL
from deployhook.deploy.context import Context, StepSpec
from deployhook.deploy.engine import DockerClient, NotFound, engine
from deployhook.deploy.project import project_name, resolve
from deployhook.errors import JobCancelled, StepFailed
from deployhook.models import Mode
from deployhook.registry import Repo
from deployhook.text import one_line

__all__ = ["HEALTH", "ContainerState", "project_name", "wait_healthy"]

POLL_S = 0.5
REMIND_S = 5.0
# A container without a healthcheck counts once it has run this long: one that crashes
# on start is seen "running" for an instant first.
SETTLE_S = 2.0


def _epoch(stamp: str | None) -> float | None:
    """Docker's RFC 3339 time (nanoseconds, Z) as epoch seconds; None if never set."""
    if not stamp or stamp.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp)).timestamp()
    except ValueError:
        return None


class Verdict(Enum):
    READY = "ready"
    WAITING = "waiting"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What `docker inspect` says about one container, reduced to what the wait needs."""

    id: str
    name: str
    service: str
    status: str
    health: str | None
    exit_code: int
    oom_killed: bool
    last_output: str
    error: str
    started_at: float | None

    @classmethod
    def from_inspect(cls, attrs: dict[str, Any]) -> ContainerState:
        state = attrs.get("State") or {}
        health = state.get("Health") or {}
        logs = health.get("Log") or []
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return cls(
            id=str(attrs.get("Id", "")),
            name=str(attrs.get("Name", "")).lstrip("/"),
            service=labels.get(SERVICE_LABEL, ""),
            status=state.get("Status", "unknown"),
            health=health.get("Status") or None,
            exit_code=int(state.get("ExitCode") or 0),
            oom_killed=bool(state.get("OOMKilled")),
            last_output=one_line(logs[-1].get("Output", "")) if logs else "",
            error=one_line(state.get("Error") or ""),
            started_at=_epoch(state.get("StartedAt")),
        )

    @property
    def verdict(self) -> Verdict:
        if self.status == "running":
            return {"unhealthy": Verdict.FAILED, "starting": Verdict.WAITING}.get(
                self.health or "", Verdict.READY
            )
        if self.status == "exited":
            return Verdict.READY if self.exit_code == 0 and not self.oom_killed else Verdict.FAILED
        if self.status in {"created", "removing"}:
            return Verdict.WAITING
        return Verdict.FAILED  # restarting, dead, paused

    def describe(self) -> str:
        """One line: the container, its state, and its last health output."""
        if self.status == "running" and self.health:
            text = f"{self.name} is {self.health}"
            return text + (f": {self.last_output}" if self.last_output else "")
        if self.status == "exited":
            text = f"{self.name} exited with code {self.exit_code}"
            return text + (" (out of memory)" if self.oom_killed else "")
        if self.status == "restarting":
            return f"{self.name} is restarting (last exit code {self.exit_code})"
        text = f"{self.name} is {self.status}"
        return text + (f": {self.error}" if self.error else "")


def _states(client: DockerClient, project: str, services: set[str] | None) -> list[ContainerState]:
    found = client.api.containers(
        all=True, filters={"label": [f"{PROJECT_LABEL}={project}", f"{ONEOFF_LABEL}=False"]}
    )
    states = []
    for summary in found:
        labels = summary.get("Labels") or {}
        if services is not None and labels.get(SERVICE_LABEL) not in services:
            continue
        try:
            attrs = client.api.inspect_container(summary["Id"])
        except NotFound:
            continue  # removed since the listing: an old container compose replaced
        states.append(ContainerState.from_inspect(attrs))
    return sorted(states, key=lambda s: s.name)


def _none_found(
    client: DockerClient, repo: Repo, project: str, services: set[str] | None
) -> StepFailed:
    wanted = f" (services {', '.join(sorted(services))})" if services is not None else ""
    # A hint for a name computed differently from Compose's: what this checkout started.
    beside = client.api.containers(
        all=True, filters={"label": f"{WORKDIR_LABEL}={os.path.realpath(repo.path)}"}
    )
    others = {str((c.get("Labels") or {}).get(PROJECT_LABEL)) for c in beside} - {project}
    hint = (
        f"; containers from this checkout carry project {', '.join(sorted(others))}"
        if others
        else ""
    )
    return StepFailed(f"no containers of compose project {project!r}{wanted} found{hint}")


def wait_healthy(
    repo: Repo,
    *,
    compose_base: tuple[str, ...],
    deadline: process.Deadline,
    cancel: threading.Event,
    output: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Wait until the project's containers run (healthy where checked) or one fails.

    A one-shot container that exited 0 is done. Unhealthy, exited non-zero, restarting
    or dead fails at once; still starting after `health_timeout` fails then.
    """
    resolved = resolve(repo, compose_base, environ=environ, timeout=min(30.0, deadline.remaining()))
    project, services = resolved.name, resolved.services
    started = time.monotonic()
    end = min(started + repo.health_timeout, deadline.at)
    shown: tuple[tuple[str, str, str | None], ...] = ()
    reminded = started
    first_seen: dict[tuple[str, float | None], float] = {}
    with engine() as client:
        while True:
            if cancel.is_set():
                raise JobCancelled("cancelled")
            deadline.check()
            states = _states(client, project, services)
            if not states:
                raise _none_found(client, repo, project, services)
            failed = [s for s in states if s.verdict is Verdict.FAILED]
            if failed:
                raise StepFailed(failed[0].describe())
            now = time.monotonic()
            waiting = [
                s
                for s in states
                if s.verdict is Verdict.WAITING or not _settled(s, first_seen, now)
            ]
            if not waiting:
                output(
                    f"{len(states)} container(s) of project {project} ready: "
                    + ", ".join(_ready(s) for s in states)
                )
                return
            if now >= end:
                deadline.check()
                more = f" (and {len(waiting) - 1} more)" if len(waiting) > 1 else ""
                raise StepFailed(
                    f"still waiting after {repo.health_timeout} s: {waiting[0].describe()}{more}"
                )
            # A new line when who waits (or in which state) changes, else a reminder now
            # and then: health output changes every check and would flood the log.
            current = tuple((s.name, s.status, s.health) for s in waiting)
            if current != shown or now - reminded >= REMIND_S:
                output(
                    f"waiting for {len(waiting)} of {len(states)} container(s): "
                    + "; ".join(s.describe() for s in waiting)
                )
                shown, reminded = current, now
            cancel.wait(min(POLL_S, max(end - now, 0.01)))


def _settled(
    state: ContainerState, first_seen: dict[tuple[str, float | None], float], now: float
) -> bool:
    """True unless a container without healthcheck started less than SETTLE_S ago."""
    if state.status != "running" or state.health:
        return True
    if state.started_at is not None and time.time() - state.started_at >= SETTLE_S:
        return True
    # Also by our own clock, so a skewed remote engine clock cannot stall the wait.
    return now - first_seen.setdefault((state.id, state.started_at), now) >= SETTLE_S


def _ready(state: ContainerState) -> str:
    if state.status == "exited":
        return f"{state.name} exited 0"
    return f"{state.name} {state.health}" if state.health else f"{state.name} running"


def step_health(ctx: Context) -> None:
    wait_healthy(
        ctx.repo,
        compose_base=ctx.compose_base(),
        deadline=ctx.deadline,
        cancel=ctx.cancel,
        output=ctx.output,
        environ=ctx.child_env(),
    )


HEALTH = StepSpec(
    "health",
    step_health,
    applies=lambda repo: repo.mode == Mode.COMPOSE and repo.health_timeout > 0,
)
