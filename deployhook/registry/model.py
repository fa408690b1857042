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
    token_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Gitea:
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    commit_status: bool = True
    mirror_sync: bool = False


GITHUB_API = "https://api.github.com"


@dataclass(frozen=True, slots=True)
class GitHub:
    """Talking back to GitHub: commit statuses on a GitHub-primary repo."""

    token_env: str | None = None
    token_file: Path | None = None
    commit_status: bool = True
    api_url: str = GITHUB_API  # GitHub Enterprise: https://HOST/api/v3
    repo: str | None = None  # owner/name on GitHub; default: the entry's first source


@dataclass(frozen=True, slots=True)
class Token:
    """Where one of a repo's tokens (or its notify URLs) is read from: a variable or a file.

    key is the registry key that names it (`gitea.token`, `notify`), `_env` or `_file`
    appended when an error names it.
    """

    key: str
    env: str | None
    file: Path | None

    @property
    def origin(self) -> str:
        """`GITEA_TOKEN`, or the file's path: what an admin looks at to fix it."""
        return self.env or str(self.file)


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
    github: GitHub | None = None
    notify_env: str | None = None
    notify_file: Path | None = None
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
    def tokens(self) -> list[Token]:
        """The tokens and notify URLs this repo names (not its webhook secret)."""
        found = [Token("notify", self.notify_env, self.notify_file)]
        if self.mirror:
            found.append(Token("mirror.token", self.mirror.token_env, self.mirror.token_file))
        if self.gitea:
            found.append(Token("gitea.token", self.gitea.token_env, self.gitea.token_file))
        if self.github:
            found.append(Token("github.token", self.github.token_env, self.github.token_file))
        return [t for t in found if t.env or t.file]

    @property
    def private_variables(self) -> set[str]:
        """Environment variables holding this repo's secrets, tokens and notify URLs."""
        names = {self.secret_env, *(t.env for t in self.tokens)}
        return {n for n in names if n}
