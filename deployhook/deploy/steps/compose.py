"""The `compose` step: `<compose> [-f ...] [-p ...] up -d --build` in the checkout."""

from __future__ import annotations

from deployhook.deploy import compose
from deployhook.deploy.context import Context, StepSpec
from deployhook.errors import StepFailed
from deployhook.models import Mode
from deployhook.registry import Repo


def step_compose(ctx: Context) -> None:
    ctx.changed = True
    argv = compose.up_argv(ctx.compose_base(), ctx.repo)
    ctx.output("$ " + " ".join(argv))
    code = ctx.run(argv)
    if code != 0:
        raise StepFailed(f"compose up exited with {code}")


def step_pull(ctx: Context) -> None:
    """Pull newer images of the services (`pull: true`, stacks of registry images)."""
    argv = [*compose.base_args(ctx.compose_base(), ctx.repo), "pull"]
    if ctx.repo.services:
        argv += ["--", *ctx.repo.services]
    ctx.output("$ " + " ".join(argv))
    code = ctx.run(argv)
    if code != 0:
        raise StepFailed(f"compose pull exited with {code}")


def _composes(repo: Repo) -> bool:
    return repo.mode == Mode.COMPOSE


def _pulls(repo: Repo) -> bool:
    return repo.mode == Mode.COMPOSE and repo.pull


PULL = StepSpec("pull", step_pull, applies=_pulls)
COMPOSE = StepSpec("compose", step_compose, applies=_composes)
