"""The `mirror_sync` post step: ask Gitea to sync its pull mirror of the repo now."""

from __future__ import annotations

from deployhook.deploy.context import Context, StepSpec
from deployhook.errors import StepFailed
from deployhook.forges.gitea import BUDGET_S, ForgeError, ForgeNotConfigured, connect
from deployhook.log import get_logger

logger = get_logger()


def step_mirror_sync(ctx: Context) -> None:
    try:
        target = connect(ctx.repo, budget=max(min(BUDGET_S, ctx.deadline.remaining()), 1))
        target.client.mirror_sync(target.owner, target.name)
    except (ForgeError, ForgeNotConfigured) as exc:
        raise StepFailed(f"gitea mirror-sync: {exc}") from None
    ctx.output(f"gitea: mirror-sync of {target.full_name} requested")
    logger.info("gitea_mirror_sync_requested", gitea_repo=target.full_name)


MIRROR_SYNC = StepSpec(
    "mirror_sync",
    step_mirror_sync,
    applies=lambda repo: bool(repo.gitea and repo.gitea.mirror_sync),
)
