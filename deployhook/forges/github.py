"""GitHub's API client: commit statuses on a GitHub-primary repo (GitHub Enterprise too).

The HTTP and retry machinery is forges/http.py's, shared with the Gitea client: short
timeouts, a few retries within one budget, 4xx final.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from deployhook.errors import SecretNotConfigured
from deployhook.forges.http import (
    BUDGET_S,
    TIMEOUT_S,
    Client,
    ForgeNotConfigured,
    Target,
    owner_name,
)
from deployhook.registry import GitHub as GitHubConfig
from deployhook.registry import Repo, Token, repo_token

API_VERSION = "2022-11-28"


@dataclass(frozen=True, slots=True)
class GitHub(Client):
    """GitHub's REST API (`https://api.github.com`, or `https://HOST/api/v3`)."""

    forge: ClassVar[str] = "GitHub"

    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }


def addressed(repo: Repo, github: GitHubConfig) -> str:
    """The owner/name on GitHub: `github.repo`, else the entry's first `source`."""
    if github.repo:
        return github.repo
    if not repo.source:
        raise ForgeNotConfigured(
            f"repo {repo.name!r}: neither github.repo nor source (owner/name on GitHub) is set"
        )
    return repo.source[0]


def connect(
    repo: Repo, *, budget: float | None = None, environ: Mapping[str, str] | None = None
) -> Target[GitHub]:
    """Return the repo's GitHub target, or raise ForgeNotConfigured saying what is missing."""
    env = os.environ if environ is None else environ
    budget = BUDGET_S if budget is None else budget
    github = repo.github
    if github is None:
        raise ForgeNotConfigured(f"repo {repo.name!r} has no github block (token_env)")
    where = "github.repo" if github.repo else "source"
    owner, name = owner_name(addressed(repo, github), what=f"repo {repo.name!r}: {where}")
    if not github.token_env and not github.token_file:
        raise ForgeNotConfigured(f"repo {repo.name!r}: github.token_env or token_file is not set")
    try:
        token = repo_token(
            Token("github.token", github.token_env, github.token_file),
            what="github token",
            environ=env,
        )
    except SecretNotConfigured as exc:
        raise ForgeNotConfigured(f"repo {repo.name!r}: {exc}") from None
    client = GitHub(github.api_url, token, timeout=min(TIMEOUT_S, budget), budget=budget)
    return Target(client, owner, name)
