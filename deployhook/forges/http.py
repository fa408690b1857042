"""What every forge client shares: a JSON API behind a token, called with short timeouts
and a few retries within one budget (retry.py).

What may pass next time is retried with exponential backoff (connection errors,
timeouts, 5xx), never past the call's total budget: a forge that is down costs a deploy
seconds, never the deploy itself. A 4xx answer is final. What is sent is masked
(redact.py): a status description taken from a job's error never carries a secret.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar
from urllib.parse import quote

import requests
import tenacity

from deployhook import redact, retry
from deployhook.errors import ConfigError, DeployhookError
from deployhook.log import get_logger
from deployhook.text import one_line

logger = get_logger()

TIMEOUT_S = 5.0  # connect and read, per attempt
BUDGET_S = 15.0  # all attempts of one call together
ATTEMPTS = 3
DESCRIPTION_MAX = 140  # a commit status's description, on Gitea and GitHub


class ForgeError(DeployhookError):
    """Raised when a forge cannot be reached or refuses a call; `status` is its HTTP answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ForgeNotConfigured(ConfigError):
    """Raised when a repo lacks what a forge call needs (the block, source, token)."""


class _Retryable(Exception):
    """An attempt that may pass next time: a 5xx answer or a transport error."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


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
class Client:
    """A forge's JSON API for one server and token. Subclasses say where and how."""

    forge: ClassVar[str] = "the forge"
    url: str
    token: str = field(repr=False)
    timeout: float = TIMEOUT_S
    budget: float = BUDGET_S

    def __post_init__(self) -> None:
        redact.register([self.token])

    def endpoint(self, path: str) -> str:
        """The full URL of an API path."""
        return self.url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        """The headers of every call (the token's among them)."""
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def masks(self, path: str) -> bool:
        """Whether a body sent to path is masked (everything but a hook's own secret)."""
        return True

    def with_budget(self, budget: float) -> Self:
        """The same client with another total budget per call."""
        return dataclasses.replace(self, budget=budget)

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
        url = self.endpoint(path)
        end = time.monotonic() + self.budget
        if json is not None and self.masks(path):
            json = redact.mask_all(json)
        headers = self.headers()
        where = f"{self.forge} at {self.url}"

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
                        f"{where} did not answer {method} {path} in "
                        f"time (not retried: it may have been applied)"
                    ) from None
                raise _Retryable(_reason(exc)) from None
            except requests.RequestException as exc:
                raise ForgeError(
                    f"{self.forge} call {method} {path} failed: {type(exc).__name__}"
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
                forge=self.forge,
                method=method,
                path=path,
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None,
            ),
        )
        try:
            resp = retrying(attempt)
        except _Retryable as exc:
            raise ForgeError(f"{where}: {method} {path}: {exc}", status=exc.status) from None
        if resp.status_code >= 400:
            raise ForgeError(
                f"{where} answered {resp.status_code} "
                f"{resp.reason} to {method} {path}: {_message(resp)}",
                status=resp.status_code,
            )
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    # -- what every forge deployhook talks to answers alike ----------------------------

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
        """A commit status: `POST /repos/{owner}/{name}/statuses/{sha}`, the same call and
        body on Gitea, Forgejo and GitHub."""
        body = {
            "state": state,
            "context": context,
            "description": one_line(description, DESCRIPTION_MAX),
        }
        if target_url:
            body["target_url"] = target_url
        self.request(
            "POST",
            f"{self.repo_path(owner, name)}/statuses/{quote(sha, safe='')}",
            json=body,
            abort=abort,
        )


C = TypeVar("C", bound=Client)


@dataclass(frozen=True, slots=True)
class Target(Generic[C]):
    """A repo on a forge: the client and the owner/name that API calls address."""

    client: C
    owner: str
    name: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


def owner_name(text: str, *, what: str) -> tuple[str, str]:
    """Split `owner/name`, or raise ForgeNotConfigured naming what holds it."""
    owner, sep, name = text.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise ForgeNotConfigured(f"{what} {text!r} is not owner/name")
    return owner, name
