"""The `pre_deploy` and `post_deploy` steps: an entry's own shell commands.

Each list is one step; its commands run in order with /bin/sh -c in the checkout, with
the job's environment (context.py: the job's variables, never a secret), within the
job's timeout, their output in the job's log, cancelled and killed like compose. The
first command that fails fails the job like any deploy step. The commands come from
repos.yml, the admin's file: nothing from a payload ever reaches a shell.
"""

from __future__ import annotations

from deployhook.deploy.context import Context, StepSpec
from deployhook.errors import StepFailed
from deployhook.registry import Repo

SHELL = "/bin/sh"


def run_commands(ctx: Context, name: str, commands: tuple[str, ...]) -> None:
    for command in commands:
        ctx.output(f"$ {command}")
        code = ctx.run([SHELL, "-c", command])
        if code != 0:
            raise StepFailed(f"{name}: `{command}` exited with {code}")


def step_pre_deploy(ctx: Context) -> None:
    run_commands(ctx, "pre_deploy", ctx.repo.hooks.pre_deploy)


def step_post_deploy(ctx: Context) -> None:
    ctx.changed = True  # the stack is up: a failure here is rolled back like any other
    run_commands(ctx, "post_deploy", ctx.repo.hooks.post_deploy)


def _has_pre(repo: Repo) -> bool:
    return bool(repo.hooks.pre_deploy)


def _has_post(repo: Repo) -> bool:
    return bool(repo.hooks.post_deploy)


PRE_DEPLOY = StepSpec("pre_deploy", step_pre_deploy, applies=_has_pre)
POST_DEPLOY = StepSpec("post_deploy", step_post_deploy, applies=_has_post)
