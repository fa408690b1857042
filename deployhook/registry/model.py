"""A registry entry as the rest of deployhook sees it: every setting resolved, defaults applied."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from deployhook.models import Mode, OnLocalChanges

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass(frozen=True, slots=True)
class Mirror:
    url: str
    token_env: str | None = None


@dataclass(frozen=True, slots=True)
class Gitea:
    url: str
    token_env: str | None = None
    commit_status: bool = True
    mirror_sync: bool = False


@dataclass(frozen=True, slots=True)
class Hooks:
    """Shell commands an entry runs in its checkout, each list one step of a deploy."""

    pre_deploy: tuple[str, ...] = ()  # after checkout, before `up` (or the swarm build)
    post_deploy: tuple[str, ...] = ()  # after the containers are healthy


@dataclass(frozen=True, slots=True)
class Repo:
    """One deployable checkout, with every setting resolved (defaults applied)."""

    name: str
    path: Path
    branch: str = "main"
    remote: str = "origin"
    source: tuple[str, ...] = ()
    secret_env: str | None = None
    secret_file: Path | None = None
    compose_files: tuple[str, ...] = ()
    project_name: str | None = None
    services: tuple[str, ...] = ()
    timeout: int = 900
    health_timeout: int = 120
    rollback: bool = True
    on_local_changes: OnLocalChanges = OnLocalChanges.FAIL
    remove_orphans: bool = False
    prune_images: bool = False
    submodules: bool = False
    mirror: Mirror | None = None
    gitea: Gitea | None = None
    notify_env: str | None = None
    node: str = ""  # "" is the default node: workers without DEPLOYHOOK_NODE
    mode: Mode = Mode.COMPOSE
    public_badge: bool = False
    image_registry: str | None = None
    pull: bool = False
    tags: str | None = None  # a glob: deploy matching tag pushes instead of the branch
    paths: tuple[str, ...] = ()  # globs: deploy only when a changed file matches one
    hooks: Hooks = Hooks()

    @property
    def ref(self) -> str:
        """The ref whose pushes deploy: the branch (a `tags` entry follows its tags)."""
        return f"refs/heads/{self.branch}"

    @property
    def follows(self) -> str:
        """What the entry follows, in words: `main`, or `tags v*`."""
        return f"tags {self.tags}" if self.tags else self.branch

    @property
    def private_variables(self) -> set[str]:
        """Environment variables holding this repo's secrets, tokens and notify URLs."""
        names = {
            self.secret_env,
            self.notify_env,
            self.mirror.token_env if self.mirror else None,
            self.gitea.token_env if self.gitea else None,
        }
        return {n for n in names if n}
