"""The `compose` step: `<compose> [-f ...] [-p ...] up -d --build` in the checkout."""

from __future__ import annotations

from deployhook.deploy import compose
from deployhook.deploy.context import Context, StepSpec
from deployhook.errors import StepFailed
from deployhook.models import Mode


def step_compose(ctx: Context) -> None:
    ctx.changed = True
    argv = compose.up_argv(ctx.compose_base(), ctx.repo)
    ctx.output("$ " + " ".join(argv))
    code = ctx.run(argv)
    if code != 0:
        raise StepFailed(f"compose up exited with {code}")


COMPOSE = StepSpec("compose", step_compose, applies=lambda repo: repo.mode == Mode.COMPOSE)
