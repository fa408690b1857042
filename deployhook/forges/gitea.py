"""Gitea's API client (Forgejo's too): commit statuses, pull-mirror sync, push webhooks.

The HTTP and retry machinery is forges/http.py's, shared with the GitHub client: short
timeouts, a few retries within one budget, 4xx final.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

from deployhook.errors import SecretNotConfigured
from deployhook.forges.http import (
    ATTEMPTS,
    BUDGET_S,
    TIMEOUT_S,
    Client,
    ForgeError,
    ForgeNotConfigured,
    Target,
    owner_name,
)
from deployhook.log import get_logger
from deployhook.registry import Repo, Token, repo_token

logger = get_logger()

__all__ = [
    "ATTEMPTS",
    "BUDGET_S",
    "TIMEOUT_S",
    "ForgeError",
    "ForgeNotConfigured",
    "Gitea",
    "Target",
    "connect",
    "ensure_hook",
    "ensure_org_hook",
    "explain",
    "explain_org",
]

_PAGE = 50


def _is_hook(path: str) -> bool:
    return "/hooks" in path


@dataclass(frozen=True, slots=True)
class Gitea(Client):
    """Gitea's (and Forgejo's) API for one server and token."""

    forge: ClassVar[str] = "Gitea"

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + "/api/v1" + path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}", "Accept": "application/json"}

    def masks(self, path: str) -> bool:
        # What a forge is told never holds a secret (a status description from a job's
        # error); the hook secret deployhook sets on purpose is the one exception.
        return not _is_hook(path)

    # -- the calls only Gitea has (set_status is every forge's: http.Client) ---------

    def mirror_sync(self, owner: str, name: str) -> None:
        self.request("POST", f"{self.repo_path(owner, name)}/mirror-sync")

    @staticmethod
    def org_path(org: str) -> str:
        return f"/orgs/{quote(org, safe='')}"

    def hooks(self, owner: str, name: str) -> list[dict[str, Any]]:
        return self.hooks_at(self.repo_path(owner, name))

    def create_hook(self, owner: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.create_hook_at(self.repo_path(owner, name), body)

    def edit_hook(
        self, owner: str, name: str, hook_id: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self.edit_hook_at(self.repo_path(owner, name), hook_id, body)

    # A repository's hooks live under /repos/{owner}/{name}, an organisation's under
    # /orgs/{org}: the same calls otherwise.

    def hooks_at(self, base: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1, 21):
            batch = self.request("GET", f"{base}/hooks?page={page}&limit={_PAGE}")
            batch = [h for h in batch or [] if isinstance(h, dict)]
            found += batch
            if len(batch) < _PAGE:
                break
        return found

    def create_hook_at(self, base: str, body: dict[str, Any]) -> dict[str, Any]:
        made = self.request("POST", f"{base}/hooks", json=body, retry_timeouts=False)
        return made if isinstance(made, dict) else {}

    def edit_hook_at(self, base: str, hook_id: int, body: dict[str, Any]) -> dict[str, Any]:
        made = self.request("PATCH", f"{base}/hooks/{int(hook_id)}", json=body)
        return made if isinstance(made, dict) else {}


def connect(
    repo: Repo, *, budget: float | None = None, environ: Mapping[str, str] | None = None
) -> Target[Gitea]:
    """Return the repo's Gitea target, or raise ForgeNotConfigured saying what is missing."""
    env = os.environ if environ is None else environ
    budget = BUDGET_S if budget is None else budget
    gitea = repo.gitea
    if gitea is None:
        raise ForgeNotConfigured(f"repo {repo.name!r} has no gitea block (url, token_env)")
    if not repo.source:
        raise ForgeNotConfigured(f"repo {repo.name!r}: source (owner/name on Gitea) is not set")
    owner, name = owner_name(repo.source[0], what=f"repo {repo.name!r}: source")
    if not gitea.token_env and not gitea.token_file:
        raise ForgeNotConfigured(f"repo {repo.name!r}: gitea.token_env or token_file is not set")
    try:
        token = repo_token(
            Token("gitea.token", gitea.token_env, gitea.token_file), what="gitea token", environ=env
        )
    except SecretNotConfigured as exc:
        raise ForgeNotConfigured(f"repo {repo.name!r}: {exc}") from None
    timeout = min(TIMEOUT_S, budget)
    return Target(Gitea(gitea.url, token, timeout=timeout, budget=budget), owner, name)


def ensure_hook(target: Target[Gitea], *, url: str, secret: str, branch: str) -> tuple[str, int]:
    """Create the push webhook to url, or update the one already there; ("created", id)."""
    client = target.client
    return _ensure(
        client, client.repo_path(target.owner, target.name), url=url, secret=secret, branch=branch
    )


def ensure_org_hook(client: Gitea, org: str, *, url: str, secret: str) -> tuple[str, int]:
    """Create the organisation's push webhook to url (every branch of every repository:
    deployhook routes), or update the one already there; ("created", id)."""
    return _ensure(client, client.org_path(org), url=url, secret=secret, branch="*")


def _ensure(client: Gitea, base: str, *, url: str, secret: str, branch: str) -> tuple[str, int]:
    config = {"url": url, "content_type": "json", "secret": secret}
    body: dict[str, Any] = {
        "config": config,
        "events": ["push"],
        "branch_filter": branch,
        "active": True,
    }  # Gitea creates hooks inactive by default
    for existing in client.hooks_at(base):
        if (existing.get("config") or {}).get("url") == url and "id" in existing:
            client.edit_hook_at(base, int(existing["id"]), body)
            logger.info("gitea_hook_updated", at=base, hook=existing["id"])
            return "updated", int(existing["id"])
    made = client.create_hook_at(base, {"type": "gitea", **body})
    if "id" not in made:
        raise ForgeError(f"Gitea at {client.url} created no hook (its answer has no id)")
    logger.info("gitea_hook_created", at=base, hook=made["id"])
    return "created", int(made["id"])


def explain(exc: ForgeError, target: Target[Any], *, token_env: str | None) -> str:
    """Say what a refusal means for the admin: which token (token_env: its variable, or
    its file), which repo."""
    where = f"Gitea at {target.client.url}"
    if exc.status == 401:
        return f"{where} refused the token in {token_env} (401 Unauthorized)"
    if exc.status == 403:
        return (
            f"{where}: the token in {token_env} may not manage webhooks of "
            f"{target.full_name} (403 Forbidden)"
        )
    if exc.status == 404:
        return (
            f"{where} has no repository {target.full_name}, or the token in {token_env} "
            "cannot see it (404 Not Found)"
        )
    return str(exc)


def explain_org(exc: ForgeError, client: Gitea, org: str, *, token_env: str) -> str:
    """Say what a refusal of an organisation hook call means: which token, which org."""
    where = f"Gitea at {client.url}"
    if exc.status == 401:
        return f"{where} refused the token in {token_env} (401 Unauthorized)"
    if exc.status == 403:
        return (
            f"{where}: the token in {token_env} may not manage webhooks of organisation "
            f"{org} (403 Forbidden: it needs an owner of {org} and write:organization)"
        )
    if exc.status == 404:
        return (
            f"{where} has no organisation {org}, or the token in {token_env} cannot see it "
            "(404 Not Found)"
        )
    return str(exc)
