"""`mode: swarm`: build the images, push them, `docker stack deploy`, wait for the tasks.

`docker stack deploy` ignores `build:` and only rolls out a service whose spec changed:
an image rebuilt under the same tag would never reach the tasks. So every image is
tagged per commit: the build, push and deploy run with DEPLOYHOOK_IMAGE_TAG set to the
first 12 characters of the job's sha, and the compose file names its images with it:

    image: registry.example.com/jeff/web:${DEPLOYHOOK_IMAGE_TAG:-dev}

A rollback redeploys the old sha, hence the old tag. The build step refuses a service
that builds an image without that tag (docs/scaling.md).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import yaml

from deployhook.deploy import compose, process
from deployhook.deploy.context import Context, StepSpec
from deployhook.deploy.engine import DockerClient, engine
from deployhook.errors import JobCancelled, StepFailed
from deployhook.log import get_logger
from deployhook.models import Mode
from deployhook.registry import Repo

log = get_logger()

TAG_ENV = "DEPLOYHOOK_IMAGE_TAG"
REGISTRY_ENV = "DEPLOYHOOK_IMAGE_REGISTRY"
_POLL_S = 0.5
# An update that stopped (failure_action pause) or undid itself will not converge.
_STOPPED_UPDATES = {"paused", "rollback_started", "rollback_paused", "rollback_completed"}


def is_swarm(repo: Repo) -> bool:
    return repo.mode == Mode.SWARM


def image_tag(sha: str) -> str:
    return sha[:12]


def stack_name(repo: Repo) -> str:
    """The stack: the repo's project_name, else its name made valid for a stack."""
    raw = repo.project_name or repo.name
    return re.sub(r"[^a-z0-9_-]", "-", raw.lower()).strip("-_") or "stack"


def docker_command(base: tuple[str, ...]) -> str:
    """The docker CLI that goes with the compose command (`X compose` -> X)."""
    return base[0] if len(base) == 2 and base[1] == "compose" else "docker"


def stack_files(repo: Repo) -> list[str]:
    """The compose files for `stack deploy -c`: the repo's, or compose's default pair."""
    if repo.compose_files:
        return list(repo.compose_files)
    found = compose.discovered_files(repo.path)
    if not found:
        raise StepFailed(
            f"no compose file in {repo.path} (looked for "
            f"{', '.join(compose.FILES_V2)}); set compose_files"
        )
    return [f.name for f in found]


def environment(ctx: Context) -> dict[str, str]:
    env = {**ctx.child_env(), TAG_ENV: image_tag(ctx.job.sha)}
    if ctx.repo.image_registry:
        env[REGISTRY_ENV] = ctx.repo.image_registry
    return env


def _run(ctx: Context, argv: list[str], what: str) -> None:
    ctx.output("$ " + " ".join(argv))
    code = process.run(
        argv,
        cwd=ctx.repo.path,
        output=ctx.output,
        deadline=ctx.deadline,
        cancel=ctx.cancel,
        env=environment(ctx),
        job_id=ctx.job.id,
        on_start=lambda pgid: ctx.store.set_job_fields(ctx.job.id, pgid=pgid),
    )
    if code != 0:
        raise StepFailed(f"{what} exited with {code}")


def built_images(ctx: Context) -> dict[str, str]:
    """Service -> image of each service that builds one, from `compose config`.

    The rendered config holds interpolated secrets: it is parsed here, never shown.
    """
    argv = [*compose.base_args(ctx.compose_base(), ctx.repo), "config"]
    try:
        done = subprocess.run(
            argv,
            cwd=ctx.repo.path,
            env=environment(ctx),
            capture_output=True,
            text=True,
            check=False,
            timeout=max(min(ctx.deadline.remaining(), 120), 1),
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed(f"compose config failed: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise StepFailed(f"compose config exited with {done.returncode}: {last[:300]}")
    try:
        doc = yaml.safe_load(done.stdout) or {}
    except yaml.YAMLError:
        raise StepFailed("compose config printed something that is not YAML") from None
    services = doc.get("services") or {}
    wanted = set(ctx.repo.services) or set(services)
    return {
        name: str(spec.get("image") or "")
        for name, spec in services.items()
        if name in wanted and isinstance(spec, dict) and spec.get("build")
    }


def check_images(images: dict[str, str], *, tag: str, registry: str | None) -> None:
    """Refuse images that `stack deploy` could not roll out (or not pull elsewhere)."""
    for service, image in sorted(images.items()):
        if not image:
            raise StepFailed(
                f"service {service} builds an image but names none: give it "
                f"`image: NAME:${{{TAG_ENV}}}` (stack deploy ignores build:)"
            )
        if not image.endswith(":" + tag):
            raise StepFailed(
                f"service {service}: image {image} is not tagged with "
                f"${{{TAG_ENV}}}, so a rebuilt image would never roll out"
            )
        if registry and not image.startswith(registry.rstrip("/") + "/"):
            raise StepFailed(
                f"service {service}: image {image} is not under image_registry "
                f"{registry}, so other nodes could not pull it"
            )


def step_build(ctx: Context) -> None:
    """`compose build` with the per-commit tag, after checking every image uses it."""
    ctx.changed = True
    check_images(built_images(ctx), tag=image_tag(ctx.job.sha), registry=ctx.repo.image_registry)
    argv = [*compose.base_args(ctx.compose_base(), ctx.repo), "build"]
    if ctx.repo.services:
        argv += ["--", *ctx.repo.services]
    _run(ctx, argv, "compose build")


def step_push(ctx: Context) -> None:
    """Push the built images, so every node of the swarm can pull them."""
    argv = [*compose.base_args(ctx.compose_base(), ctx.repo), "push"]
    if ctx.repo.services:
        argv += ["--", *ctx.repo.services]
    _run(ctx, argv, "compose push")


def deploy_argv(ctx: Context) -> list[str]:
    argv = [docker_command(ctx.compose_base()), "stack", "deploy", "--with-registry-auth"]
    # Without a registry the images exist only on this node: asking a registry for their
    # digests would only fail slowly.
    argv += ["--resolve-image", "always" if ctx.repo.image_registry else "never"]
    if ctx.repo.remove_orphans:
        argv.append("--prune")
    for file in stack_files(ctx.repo):
        argv += ["-c", file]
    return [*argv, stack_name(ctx.repo)]


def step_deploy(ctx: Context) -> None:
    ctx.changed = True
    ctx.notes["stack_deploy_at"] = str(time.time())
    _run(ctx, deploy_argv(ctx), "docker stack deploy")


def step_health(ctx: Context) -> None:
    """Wait until every service of the stack runs its new spec's tasks (healthy ones)."""
    timeout = min(float(ctx.repo.health_timeout), max(ctx.deadline.remaining(), 0))
    with engine() as client:
        wait_converged(
            client,
            stack_name(ctx.repo),
            services=ctx.repo.services,
            timeout=timeout,
            cancel=ctx.cancel,
            output=ctx.output,
            since=float(ctx.notes.get("stack_deploy_at", 0)),
        )


def wait_converged(
    client: DockerClient,
    stack: str,
    *,
    services: tuple[str, ...],
    timeout: float,
    cancel: threading.Event,
    output: Callable[[str], None],
    since: float = 0.0,
) -> None:
    """Block until each service has its desired tasks running at its current image.

    A task whose container has a health check counts once healthy: swarm keeps it
    `starting` until then. Raises StepFailed at the timeout or when an update begun
    after `since` (epoch seconds) stopped.
    """
    found = client.services.list(filters={"label": f"com.docker.stack.namespace={stack}"})
    if services:
        found = [s for s in found if s.name.removeprefix(stack + "_") in services]
    if not found:
        raise StepFailed(f"stack {stack} has no services")
    end = time.monotonic() + timeout
    said: dict[str, str] = {}
    while True:
        if cancel.is_set():
            raise JobCancelled("cancelled")
        waiting: list[str] = []
        problems: list[str] = []
        for service in found:
            service.reload()
            state, problem = _service_state(client, service.attrs, since=since)
            if state is not None:
                waiting.append(state)
                if problem:
                    problems.append(problem)
            if said.get(service.name) != state:
                output(f"{service.name}: {state or 'converged'}")
                said[service.name] = state or ""
        if not waiting:
            return
        if time.monotonic() >= end:
            detail = "; ".join(problems[:3]) or "; ".join(waiting[:3])
            raise StepFailed(f"stack {stack} not converged after {timeout:g} s: {detail}")
        cancel.wait(_POLL_S)


def _service_state(
    client: DockerClient, attrs: dict[str, Any], *, since: float
) -> tuple[str | None, str]:
    """(None, "") when converged, else (what it waits for, the last task error)."""
    name = attrs["Spec"]["Name"]
    update = attrs.get("UpdateStatus") or {}
    # Right after a deploy the status may still be an earlier update's (a paused one).
    # The manager runs on this host (stack deploy needs one): one clock, a little slack.
    if update.get("State") in _STOPPED_UPDATES and _when(update.get("StartedAt")) >= since - 1:
        raise StepFailed(
            f"service {name}: update {update['State']}: {update.get('Message') or 'no message'}"
        )
    template = attrs["Spec"]["TaskTemplate"]
    image = template["ContainerSpec"]["Image"]
    mode = attrs["Spec"].get("Mode") or {}
    if "Global" in mode:
        want = sum(
            1
            for n in client.nodes.list()
            if n.attrs["Status"]["State"] == "ready"
            and n.attrs["Spec"].get("Availability") == "active"
        )
    else:
        want = int((mode.get("Replicated") or {}).get("Replicas", 1))
    one_shot = (template.get("RestartPolicy") or {}).get("Condition") in {"none", "on-failure"}
    done_states = {"running", "complete"} if one_shot else {"running"}
    tasks = client.api.tasks(filters={"service": attrs["ID"]})
    current = [t for t in tasks if t["Spec"]["ContainerSpec"]["Image"] == image]
    ready = [
        t
        for t in current
        if t["Status"]["State"] in done_states
        and (t.get("DesiredState") == "running" or t["Status"]["State"] == "complete")
    ]
    failed = sorted(
        (t for t in current if t["Status"]["State"] in {"failed", "rejected"}),
        key=lambda t: t["Status"].get("Timestamp", ""),
    )
    problem = ""
    if failed:
        status = failed[-1]["Status"]
        problem = f"{name}: task {status['State']}: {status.get('Err') or status.get('Message')}"
    if len(ready) >= want:
        return None, ""
    return f"{name} {len(ready)}/{want} tasks up at {image}", problem


def _when(stamp: str | None) -> float:
    """Epoch seconds of the engine's RFC 3339 UTC times (nanoseconds, Z); missing: 0."""
    if not stamp:
        return 0.0
    main, _, rest = stamp.rstrip("Z").partition(".")
    fraction = "".join(c for c in rest if c.isdigit())[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{main}.{fraction}").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _pushes(repo: Repo) -> bool:
    return is_swarm(repo) and bool(repo.image_registry)


def _waits(repo: Repo) -> bool:
    return is_swarm(repo) and repo.health_timeout > 0


# The swarm deploy steps, in order: the pipeline takes them for repos in `mode: swarm`
# instead of compose up and the compose health wait.
STEPS: tuple[StepSpec, ...] = (
    StepSpec("build", step_build, applies=is_swarm),
    StepSpec("push", step_push, applies=lambda repo: is_swarm(repo) and bool(repo.image_registry)),
    StepSpec("stack_deploy", step_deploy, applies=is_swarm),
    StepSpec(
        "health", step_health, applies=lambda repo: is_swarm(repo) and repo.health_timeout > 0
    ),
)
