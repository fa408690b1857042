"""Local HTTP servers for the talk-back tests: recording fake Gitea and GitHub servers and a
message receiver.

The fake Gitea answers as Gitea's API does: 201 for statuses and hooks, 200 for
mirror-sync and hook edits, 401 for a wrong token, 404 for a repo it does not have.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


Answer = tuple[int, Any]


class Recorder:
    """A threaded HTTP server on 127.0.0.1 that records requests and answers via route()."""

    def __init__(self, *, delay: float = 0.0) -> None:
        self.requests: list[Recorded] = []
        self.delay = delay
        self.lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                parts = urlsplit(self.path)
                seen = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    dict(self.headers.items()),
                    body,
                )
                with recorder.lock:
                    recorder.requests.append(seen)
                if recorder.delay:
                    time.sleep(recorder.delay)
                status, doc = recorder.route(seen)
                data = b"" if doc is None else json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json;charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, req: Recorded) -> Answer:
        return 200, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


_REPO_RE = re.compile(
    r"/api/v1/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
    r"/(?P<what>statuses/[0-9a-f]+|mirror-sync|hooks(?:/(?P<hook>\d+))?)\Z"
)


_ORG_RE = re.compile(r"/api/v1/orgs/(?P<org>[^/]+)/hooks(?:/(?P<hook>\d+))?\Z")


class FakeGitea(Recorder):
    """Gitea's API for the repos and organisations it has, behind one token.

    errors: answers to give before the real ones (e.g. [503, 502]), to exercise retries.
    owner_of: the organisations whose hooks the token may manage (others: 403).
    """

    def __init__(
        self,
        *,
        token: str,
        repos: tuple[str, ...] = ("jeff/site",),
        orgs: tuple[str, ...] = ("jeff",),
        owner_of: tuple[str, ...] | None = None,
        errors: tuple[int, ...] = (),
        delay: float = 0.0,
    ) -> None:
        self.token = token
        self.repos = set(repos)
        self.orgs = set(orgs)
        self.owner_of = set(orgs if owner_of is None else owner_of)
        self.errors = list(errors)
        self.hooks: dict[int, dict[str, Any]] = {}
        self.org_hooks: dict[str, dict[int, dict[str, Any]]] = {}
        self._next_hook = 1
        super().__init__(delay=delay)

    def _org(self, req: Recorded, org: str, hook_id: str | None) -> Answer:  # noqa: PLR0911
        """/orgs/{org}/hooks[/{id}]: as Gitea answers an organisation's hooks."""
        if org not in self.orgs:
            return 404, {"errors": None, "message": "GetOrgByName", "url": self.url}
        if org not in self.owner_of:
            return 403, {"message": "Must be an organization owner", "url": self.url}
        hooks = self.org_hooks.setdefault(org, {})
        if hook_id is None and req.method == "GET":
            return 200, [self._shown(h) for h in hooks.values()]
        if hook_id is None and req.method == "POST":
            hook = {"id": self._next_hook, **req.body}
            self._next_hook += 1
            hooks[hook["id"]] = hook
            return 201, self._shown(hook)
        if hook_id is not None and req.method == "PATCH":
            hook = hooks.get(int(hook_id))
            if hook is None:
                return 404, {"message": "The target couldn't be found."}
            hook.update({k: v for k, v in req.body.items() if k != "config"})
            hook["config"] = {**hook["config"], **req.body.get("config", {})}
            return 200, self._shown(hook)
        return 405, {"message": "method not allowed"}

    def route(self, req: Recorded) -> Answer:  # noqa: PLR0911 - one answer per endpoint
        if self.errors:
            return self.errors.pop(0), {"message": "upstream trouble"}
        if req.headers.get("Authorization") != f"token {self.token}":
            return 401, {"message": "user does not exist [uid: 0, name: ]", "url": self.url}
        org = _ORG_RE.match(req.path)
        if org:
            return self._org(req, unquote(org["org"]), org["hook"])
        found = _REPO_RE.match(req.path)
        if not found or f"{unquote(found['owner'])}/{unquote(found['name'])}" not in self.repos:
            return 404, {
                "errors": None,
                "message": "The target couldn't be found.",
                "url": self.url + "/api/swagger",
            }
        what = found["what"]
        if what.startswith("statuses/") and req.method == "POST":
            return 201, {
                "id": len(self.requests),
                "status": req.body["state"],
                "target_url": req.body.get("target_url", ""),
                "description": req.body.get("description", ""),
                "context": req.body.get("context", ""),
            }
        if what == "mirror-sync" and req.method == "POST":
            return 200, None
        if what == "hooks" and req.method == "GET":
            return 200, [self._shown(h) for h in self.hooks.values()]
        if what == "hooks" and req.method == "POST":
            hook = {"id": self._next_hook, **req.body}
            self._next_hook += 1
            self.hooks[hook["id"]] = hook
            return 201, self._shown(hook)
        if found["hook"] and req.method == "PATCH":
            hook = self.hooks.get(int(found["hook"]))
            if hook is None:
                return 404, {"message": "The target couldn't be found."}
            hook.update({k: v for k, v in req.body.items() if k != "config"})
            hook["config"] = {**hook["config"], **req.body.get("config", {})}
            return 200, self._shown(hook)
        return 405, {"message": "method not allowed"}

    @staticmethod
    def _shown(hook: dict[str, Any]) -> dict[str, Any]:
        """A hook as Gitea lists it: its config without the secret."""
        config = {k: v for k, v in hook["config"].items() if k != "secret"}
        return {**hook, "config": config}

    def calls(self, method: str | None = None, path_end: str = "") -> list[Recorded]:
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and r.path.endswith(path_end)
        ]


_GITHUB_STATUS_RE = re.compile(
    r"(?P<prefix>/api/v3)?/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)/statuses/(?P<sha>[^/]+)\Z"
)
GITHUB_DOCS = "https://docs.github.com/rest/commits/statuses#create-a-commit-status"


class FakeGitHub(Recorder):
    """GitHub's REST API for commit statuses, as github.com (or, with enterprise, a GitHub
    Enterprise server under /api/v3) answers: 201 with the status, 401 "Bad credentials"
    for a wrong token, 404 for a repo it does not have, 422 for a commit it does not know
    or an invalid body.

    shas: the commits the repo has (None: any). errors: answers to give first (5xx).
    """

    def __init__(
        self,
        *,
        token: str,
        repos: tuple[str, ...] = ("jeff/site",),
        shas: set[str] | None = None,
        enterprise: bool = False,
        errors: tuple[int, ...] = (),
        delay: float = 0.0,
    ) -> None:
        self.token = token
        self.repos = set(repos)
        self.shas = shas
        self.enterprise = enterprise
        self.errors = list(errors)
        super().__init__(delay=delay)

    @property
    def api_url(self) -> str:
        return self.url + ("/api/v3" if self.enterprise else "")

    def route(self, req: Recorded) -> Answer:  # noqa: PLR0911 - one answer per case
        if self.errors:
            return self.errors.pop(0), {"message": "Server Error"}
        if req.headers.get("Authorization") != f"Bearer {self.token}":
            return 401, {"message": "Bad credentials", "documentation_url": GITHUB_DOCS}
        found = _GITHUB_STATUS_RE.match(req.path)
        if not found or bool(found["prefix"]) != self.enterprise:
            return 404, {"message": "Not Found", "documentation_url": GITHUB_DOCS}
        if f"{unquote(found['owner'])}/{unquote(found['name'])}" not in self.repos:
            return 404, {"message": "Not Found", "documentation_url": GITHUB_DOCS}
        if req.method != "POST":
            return 404, {"message": "Not Found", "documentation_url": GITHUB_DOCS}
        body = req.body if isinstance(req.body, dict) else {}
        if body.get("state") not in {"error", "failure", "pending", "success"}:
            return 422, {
                "message": "Validation Failed",
                "errors": [{"resource": "Status", "code": "custom", "field": "state"}],
                "documentation_url": GITHUB_DOCS,
            }
        if len(str(body.get("description", ""))) > 140:
            return 422, {"message": "Validation Failed", "documentation_url": GITHUB_DOCS}
        if self.shas is not None and found["sha"] not in self.shas:
            return 422, {
                "message": f"No commit found for SHA: {found['sha']}",
                "documentation_url": GITHUB_DOCS,
            }
        return 201, {
            "id": len(self.requests),
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context", "default"),
        }

    def statuses(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and "/statuses/" in r.path]


class Receiver(Recorder):
    """Takes every message (Apprise's json:// posts) and answers 200."""

    def messages(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.method == "POST"]


F = TypeVar("F", bound=Recorder)


def servers(kind: Callable[..., F], token: str) -> Iterator[Callable[..., F]]:
    """A fixture's body: a maker of fake forges that expect token (unless told another),
    every one closed after the test."""
    made: list[F] = []

    def make(**kwargs: Any) -> F:
        kwargs.setdefault("token", token)
        made.append(kind(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def closed_port_url() -> str:
    """The URL of a port nothing listens on: a forge that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def wait_for(check: Callable[[], bool], *, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()
