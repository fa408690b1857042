"""Gitea's API client: commit statuses, pull-mirror sync and push webhooks.

Every call has short timeouts and a few retries with exponential backoff for what may
pass (connection errors, timeouts, 5xx), all within a total budget: a forge that is down
costs a deploy seconds, never the deploy itself. A 4xx answer is final.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import requests
import structlog
import tenacity

from deployhook import redact, retry
from deployhook.errors import ConfigError, DeployhookError
from deployhook.registry import Repo
from deployhook.text import one_line

logger = structlog.get_logger()

TIMEOUT_S = 5.0  # connect and read, per attempt
BUDGET_S = 15.0  # all attempts of one call together
ATTEMPTS = 3
_DESCRIPTION_MAX = 140
_PAGE = 50


class ForgeError(DeployhookError):
    """Raised when Gitea cannot be reached or refuses a call; `status` is its HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgeNotConfigured(ConfigError):
    """Raised when a repo lacks what a Gitea call needs (gitea block, source, token)."""


class _Retryable(Exception):
    """An attempt that may pass next time: a 5xx answer or a transport error."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


def _is_hook(path: str) -> bool:
    return "/hooks" in path


def _reason(exc: requests.RequestException) -> str:
    """One short line for a transport error (requests' own text is a paragraph)."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip().lower() if found else "connection failed"


def _message(resp: requests.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    text = doc.get("message") if isinstance(doc, dict) else None
    line = " ".join(str(text or resp.text or resp.reason or "").split())
    return line[:200]


@dataclass(frozen=True, slots=True)
class Gitea:
    """A Gitea API client for one server and token."""

    url: str
    token: str = field(repr=False)
    timeout: float = TIMEOUT_S
    budget: float = BUDGET_S

    def __post_init__(self) -> None:
        redact.register([self.token])

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        retry_timeouts: bool = True,
        abort: threading.Event | None = None,
    ) -> Any:
        """Call the API; return the decoded JSON answer (None when it has no body).

        retry_timeouts: False for a call that creates something, where a request that
        timed out may still have landed. abort: stop retrying once it is set.
        """
        url = self.url.rstrip("/") + "/api/v1" + path
        end = time.monotonic() + self.budget
        # What a forge is told never holds a secret (a status description from a job's
        # error); the hook secret deployhook sets on purpose is the one exception.
        if json is not None and not _is_hook(path):
            json = redact.mask_all(json)
        headers = {"Authorization": f"token {self.token}", "Accept": "application/json"}

        def attempt() -> requests.Response:
            left = end - time.monotonic()
            if abort is not None and abort.is_set():
                raise ForgeError(f"{method} {path} not sent: superseded")
            if left <= 0.05:
                raise _Retryable("out of time")
            limit = min(self.timeout, left)
            try:
                with requests.Session() as session:
                    resp = session.request(
                        method, url, json=json, headers=headers, timeout=(limit, limit)
                    )
            except requests.ConnectionError as exc:
                raise _Retryable(_reason(exc)) from None
            except requests.Timeout as exc:
                if not retry_timeouts:
                    raise ForgeError(
                        f"Gitea at {self.url} did not answer {method} {path} in "
                        f"time (not retried: it may have been applied)"
                    ) from None
                raise _Retryable(_reason(exc)) from None
            except requests.RequestException as exc:
                raise ForgeError(
                    f"Gitea call {method} {path} failed: {type(exc).__name__}"
                ) from None
            if resp.status_code >= 500:
                raise _Retryable(
                    f"answered {resp.status_code} {resp.reason}: {_message(resp)}".rstrip(": "),
                    status=resp.status_code,
                )
            return resp

        def sleep(seconds: float) -> None:
            if abort is None:
                time.sleep(seconds)
            else:
                abort.wait(seconds)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=retry.within(end - 0.05, attempts=ATTEMPTS, abort=abort),
            wait=retry.backoff(),
            sleep=sleep,
            reraise=True,
            before_sleep=lambda state: logger.info(
                "forge_retrying",
                method=method,
                path=path,
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None,
            ),
        )
        try:
            resp = retrying(attempt)
        except _Retryable as exc:
            raise ForgeError(
                f"Gitea at {self.url}: {method} {path}: {exc}", status=exc.status
            ) from None
        if resp.status_code >= 400:
            raise ForgeError(
                f"Gitea at {self.url} answered {resp.status_code} "
                f"{resp.reason} to {method} {path}: {_message(resp)}",
                status=resp.status_code,
            )
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    # -- the calls deployhook makes ----------------------------------------------------

    @staticmethod
    def repo_path(owner: str, name: str) -> str:
        return f"/repos/{quote(owner, safe='')}/{quote(name, safe='')}"

    def set_status(
        self,
        owner: str,
        name: str,
        sha: str,
        *,
        state: str,
        context: str,
        description: str,
        target_url: str | None = None,
        abort: threading.Event | None = None,
    ) -> None:
        body = {
            "state": state,
            "context": context,
            "description": one_line(description, _DESCRIPTION_MAX),
        }
        if target_url:
            body["target_url"] = target_url
        self.request(
            "POST",
            f"{self.repo_path(owner, name)}/statuses/{quote(sha, safe='')}",
            json=body,
            abort=abort,
        )

    def mirror_sync(self, owner: str, name: str) -> None:
        self.request("POST", f"{self.repo_path(owner, name)}/mirror-sync")

    def hooks(self, owner: str, name: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in range(1, 21):
            batch = self.request(
                "GET", f"{self.repo_path(owner, name)}/hooks?page={page}&limit={_PAGE}"
            )
            batch = [h for h in batch or [] if isinstance(h, dict)]
            found += batch
            if len(batch) < _PAGE:
                break
        return found

    def create_hook(self, owner: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        made = self.request(
            "POST", f"{self.repo_path(owner, name)}/hooks", json=body, retry_timeouts=False
        )
        return made if isinstance(made, dict) else {}

    def edit_hook(
        self, owner: str, name: str, hook_id: int, body: dict[str, Any]
    ) -> dict[str, Any]:
        made = self.request(
            "PATCH", f"{self.repo_path(owner, name)}/hooks/{int(hook_id)}", json=body
        )
        return made if isinstance(made, dict) else {}


@dataclass(frozen=True, slots=True)
class Target:
    """A repo's Gitea: the client and the owner/name that API calls address."""

    client: Gitea
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def connect(
    repo: Repo, *, budget: float | None = None, environ: Mapping[str, str] | None = None
) -> Target:
    """Return the repo's Gitea target, or raise ForgeNotConfigured saying what is missing."""
    env = os.environ if environ is None else environ
    budget = BUDGET_S if budget is None else budget
    gitea = repo.gitea
    if gitea is None:
        raise ForgeNotConfigured(f"repo {repo.name!r} has no gitea block (url, token_env)")
    if not repo.source:
        raise ForgeNotConfigured(f"repo {repo.name!r}: source (owner/name on Gitea) is not set")
    owner, sep, name = repo.source[0].partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ForgeNotConfigured(f"repo {repo.name!r}: source {repo.source[0]!r} is not owner/name")
    if not gitea.token_env:
        raise ForgeNotConfigured(f"repo {repo.name!r}: gitea.token_env is not set")
    token = (env.get(gitea.token_env) or "").strip()
    if not token:
        raise ForgeNotConfigured(
            f"repo {repo.name!r}: environment variable "
            f"{gitea.token_env} (gitea.token_env) is unset or empty"
        )
    redact.register([token])
    timeout = min(TIMEOUT_S, budget)
    return Target(Gitea(gitea.url, token, timeout=timeout, budget=budget), owner, name)


def ensure_hook(target: Target, *, url: str, secret: str, branch: str) -> tuple[str, int]:
    """Create the push webhook to url, or update the one already there; ("created", id)."""
    config = {"url": url, "content_type": "json", "secret": secret}
    body: dict[str, Any] = {
        "config": config,
        "events": ["push"],
        "branch_filter": branch,
        "active": True,
    }  # Gitea creates hooks inactive by default
    client = target.client
    for existing in client.hooks(target.owner, target.name):
        if (existing.get("config") or {}).get("url") == url and "id" in existing:
            client.edit_hook(target.owner, target.name, int(existing["id"]), body)
            logger.info("gitea_hook_updated", gitea_repo=target.full_name, hook=existing["id"])
            return "updated", int(existing["id"])
    made = client.create_hook(target.owner, target.name, {"type": "gitea", **body})
    if "id" not in made:
        raise ForgeError(f"Gitea at {client.url} created no hook (its answer has no id)")
    logger.info("gitea_hook_created", gitea_repo=target.full_name, hook=made["id"])
    return "created", int(made["id"])


def explain(exc: ForgeError, target: Target, *, token_env: str | None) -> str:
    """Say what a refusal means for the admin: which token, which repo."""
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
