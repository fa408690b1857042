"""The `prune` post step: remove this project's dangling images, never another's."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from deployhook.deploy import compose
from deployhook.deploy.compose import PROJECT_LABEL
from deployhook.deploy.context import Context, StepSpec
from deployhook.deploy.engine import engine
from deployhook.deploy.project import resolve
from deployhook.log import get_logger
from deployhook.registry import Repo

log = get_logger()


def prune_images(
    repo: Repo,
    *,
    compose_base: tuple[str, ...],
    output: Callable[[str], None],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Remove this project's dangling images, never another project's.

    Compose v2 labels the images it builds with the project; v1 labels nothing, and a
    dangling image has lost its `<project>_<service>` name, so v1 images are left alone.
    """
    project = resolve(repo, compose_base, environ=environ).name
    if compose.is_v1(compose_base):
        output(
            "prune skipped: docker-compose v1 does not label the images it builds, so a "
            f"dangling image of project {project} cannot be told from another project's"
        )
        return
    with engine() as client:
        result = client.images.prune(
            filters={"dangling": True, "label": [f"{PROJECT_LABEL}={project}"]}
        )
    deleted = [d["Deleted"] for d in result.get("ImagesDeleted") or [] if d.get("Deleted")]
    if not deleted:
        output(f"no dangling images of project {project}")
        return
    mib = (result.get("SpaceReclaimed") or 0) / 2**20
    output(
        f"removed {len(deleted)} dangling image(s) of project {project} ({mib:.1f} MiB): "
        + ", ".join(d.removeprefix("sha256:")[:12] for d in deleted)
    )
    log.info("images_pruned", project=project, images=len(deleted))


def step_prune(ctx: Context) -> None:
    prune_images(
        ctx.repo, compose_base=ctx.compose_base(), output=ctx.output, environ=ctx.child_env()
    )


PRUNE = StepSpec("prune", step_prune, applies=lambda repo: repo.prune_images)
