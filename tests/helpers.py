"""Test helpers: real git remotes, a recording fake docker, signed Gitea deliveries."""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import os
import shutil
import stat
import subprocess
import tempfile
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Webhook bodies byte for byte as Gitea and GitHub send them (tests/fixtures/HEADERS.md).
FIXTURES = Path(__file__).parent / "fixtures"

SECRET = "s3cr3t-for-tests-only"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def gitea_headers(
    body: bytes,
    *,
    secret: str | None = SECRET,
    event: str = "push",
    delivery: str | None = None,
    signed: bytes | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    """The header block Gitea sends (HEADERS.md), signed over `signed` (default: body)."""
    delivery = delivery or str(uuid.uuid4())
    digest = sign(signed if signed is not None else body, secret) if secret else ""
    sha1 = (
        hmac.new(secret.encode(), signed if signed is not None else body, hashlib.sha1).hexdigest()
        if secret
        else ""
    )
    return {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": content_type,
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": digest,
        "X-Gogs-Delivery": delivery,
        "X-Gogs-Event": event,
        "X-Gogs-Event-Type": event,
        "X-Gogs-Signature": digest,
        "X-Hub-Signature": f"sha1={sha1}",
        "X-Hub-Signature-256": f"sha256={digest}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "X-GitHub-Event-Type": event,
        "Accept-Encoding": "gzip",
    }


def forgejo_headers(body: bytes, **kwargs: Any) -> dict[str, str]:
    """The header block Forgejo sends: its own X-Forgejo-* names first, then Gitea's."""
    gitea = gitea_headers(body, **kwargs)
    own = {
        "X-Forgejo-Delivery": gitea["X-Gitea-Delivery"],
        "X-Forgejo-Event": gitea["X-Gitea-Event"],
        "X-Forgejo-Event-Type": gitea["X-Gitea-Event-Type"],
        "X-Forgejo-Signature": gitea["X-Gitea-Signature"],
    }
    return {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": gitea["Content-Type"],
        **own,
        **{k: v for k, v in gitea.items() if k not in {"User-Agent", "Content-Type"}},
    }


def github_headers(
    body: bytes,
    *,
    secret: str = SECRET,
    event: str = "push",
    delivery: str | None = None,
    content_type: str = "application/json",
) -> dict[str, str]:
    delivery = delivery or str(uuid.uuid1())
    return {
        "User-Agent": "GitHub-Hookshot/8c2f1e7",
        "Accept": "*/*",
        "Content-Type": content_type,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "X-GitHub-Hook-ID": "551023874",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + sign(body, secret),
    }


def gitea_push_body(
    *,
    sha: str,
    ref: str = "refs/heads/main",
    before: str | None = None,
    full_name: str = "jeff/site",
    pad_to: int = 0,
) -> bytes:
    """A push payload in Gitea's wire layout (MarshalIndent, two spaces, no newline)."""
    before = before or "0" * 40
    doc: dict[str, Any] = {
        "ref": ref,
        "before": before,
        "after": sha,
        "compare_url": f"https://git.example.com/{full_name}/compare/{before}...{sha}",
        "commits": [
            {
                "id": sha,
                "message": "Update\n",
                "url": f"https://git.example.com/{full_name}/commit/{sha}",
                "author": {"name": "Jeff", "email": "jeff@example.com", "username": "jeff"},
                "committer": {"name": "Jeff", "email": "jeff@example.com", "username": "jeff"},
                "verification": None,
                "timestamp": "2026-11-20T10:00:00Z",
                "added": [],
                "removed": [],
                "modified": ["index.html"],
            }
        ],
        "total_commits": 1,
        "head_commit": {"id": sha, "message": "Update\n"},
        "repository": {
            "id": 7,
            "name": full_name.rsplit("/", maxsplit=1)[-1],
            "full_name": full_name,
            "html_url": f"https://git.example.com/{full_name}",
        },
        "pusher": {"id": 1, "login": "jeff", "username": "jeff"},
        "sender": {"id": 1, "login": "jeff", "username": "jeff"},
    }
    body = json.dumps(doc, indent=2)
    if pad_to and len(body) < pad_to:
        doc["commits"][0]["message"] = "x" * (pad_to - len(body)) + "\n"
        body = json.dumps(doc, indent=2)
    return body.encode()


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


@dataclass
class Remote:
    """A bare origin, a developer clone that pushes to it, and a deploy checkout."""

    origin: Path
    dev: Path
    checkout: Path
    branch: str = "main"

    def commit(self, files: dict[str, str], message: str = "change") -> str:
        for name, content in files.items():
            path = self.dev / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git(self.dev, "add", "-A")
        git(self.dev, "commit", "-q", "-m", message)
        return git(self.dev, "rev-parse", "HEAD")

    def push(self, *, force: bool = False) -> str:
        args = ["push", "-q", "origin", f"HEAD:refs/heads/{self.branch}"]
        if force:
            args.insert(1, "--force")
        git(self.dev, *args)
        return git(self.dev, "rev-parse", "HEAD")

    def commit_and_push(self, files: dict[str, str], message: str = "change") -> str:
        sha = self.commit(files, message)
        git(self.dev, "push", "-q", "origin", f"HEAD:refs/heads/{self.branch}")
        return sha  # what push() would read again: four git commands, not five

    def deployed(self) -> str:
        return git(self.checkout, "rev-parse", "HEAD")


DEFAULT_FILES = {"docker-compose.yml": "services: {}\n", "index.html": "v1\n"}

# Built once per process by real git (init, commit, push, clone), then copied per test.
_templates: dict[tuple[Any, ...], Path] = {}


def make_remote(root: Path, name: str = "site", *, files: dict[str, str] | None = None) -> Remote:
    """A bare origin with one commit of `files`, a dev clone and a deploy checkout.

    The three repositories are built by git once per process for each (name, files, git
    identity) and copied for each caller with their `origin` URLs moved to `root`: the
    same repositories, byte for byte, at a tenth of the cost of building them again.
    """
    files = files or DEFAULT_FILES
    env = {k: v for k, v in os.environ.items() if k.startswith("GIT_")}
    config = Path(env.pop("GIT_CONFIG_GLOBAL", "/nonexistent"))
    key = (
        name,
        tuple(sorted(files.items())),
        tuple(sorted(env.items())),
        config.read_text() if config.is_file() else None,
    )
    template = _templates.get(key)
    if template is None:
        template = Path(tempfile.mkdtemp(prefix="deployhook-remote-"))
        atexit.register(shutil.rmtree, template, ignore_errors=True)
        _build_remote(template, name, files)
        _templates[key] = template
    origin = root / f"{name}-origin.git"
    dev = root / f"{name}-dev"
    checkout = root / "deploy" / name
    for path in (origin, dev, checkout):
        shutil.copytree(template / path.relative_to(root), path, symlinks=True)
    for repo in (dev, checkout):  # their origin is the copy's, not the template's
        conf = repo / ".git" / "config"
        conf.write_text(conf.read_text().replace(str(template), str(root)))
    return Remote(origin, dev, checkout)


def _build_remote(root: Path, name: str, files: dict[str, str]) -> Remote:
    origin = root / f"{name}-origin.git"
    dev = root / f"{name}-dev"
    checkout = root / "deploy" / name
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    git(root, "init", "-q", "-b", "main", str(dev))
    git(dev, "remote", "add", "origin", str(origin))
    remote = Remote(origin, dev, checkout)
    remote.commit(files, "initial")
    remote.push()
    checkout.parent.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "-q", str(origin), str(checkout))
    for sample in root.glob("**/hooks/*.sample"):  # inert, and half the files to copy
        sample.unlink()
    return remote


FAKE_DOCKER = textwrap.dedent("""\
    #!{python}
    # A recording fake `docker`: appends a JSON line when a call starts (with the pids of
    # any other fake docker still running: an overlap) and when it ends (argv, cwd, times,
    # the checkout's HEAD), and behaves as told by control.json next to the record.
    import json, os, subprocess, sys, time
    record = {record!r}
    args = sys.argv[1:]
    if args[:2] == ["compose", "version"]:
        print("Docker Compose version v2.99.0-fake"); sys.exit(0)
    me = os.getpid()

    def others():
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{{pid}}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\\0")
            except OSError:
                continue
            if len(argv) > 1 and argv[1] == __file__.encode() and b"version" not in argv:
                found.append(int(pid))
        return found

    def write(entry):
        with open(record, "a") as fh:
            fh.write(json.dumps(entry) + "\\n")

    start = time.time()
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.getcwd()).stdout.strip()
    write({{"phase": "start", "argv": args, "cwd": os.getcwd(), "head": head, "start": start,
           "pid": me, "others": others(), "env": sorted(os.environ)}})
    control = os.path.join(os.path.dirname(record), "control.json")
    try:
        with open(control) as fh:
            ctl = json.load(fh)
    except OSError:
        ctl = {{}}
    print("fake compose: " + " ".join(args), flush=True)
    sleep = float(ctl.get("sleep", 0))
    fail_sha = ctl.get("fail_sha")
    if sleep:
        print("building...", flush=True)
        time.sleep(sleep)
    code = 1 if (fail_sha and head.startswith(fail_sha)) or ctl.get("fail") else 0
    write({{"phase": "end", "argv": args, "cwd": os.getcwd(), "head": head, "start": start,
           "end": time.time(), "pid": me, "code": code}})
    if code:
        print("fake compose: failing as asked", flush=True)
    sys.exit(code)
""")


@dataclass
class FakeDocker:
    path: Path
    record: Path
    control: Path

    def records(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def calls(self) -> list[dict[str, Any]]:
        """Calls that ran to their end."""
        return [r for r in self.records() if r["phase"] == "end"]

    def starts(self) -> list[dict[str, Any]]:
        """Every call that started, finished or not, with the fake dockers it overlapped."""
        return [r for r in self.records() if r["phase"] == "start"]

    def set(self, **control: Any) -> None:
        self.control.write_text(json.dumps(control))

    def ups(self) -> list[dict[str, Any]]:
        return [c for c in self.calls() if "up" in c["argv"]]


def make_fake_docker(root: Path) -> FakeDocker:
    import sys

    root.mkdir(parents=True, exist_ok=True)
    record = root / "calls.jsonl"
    script = root / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable, record=str(record)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return FakeDocker(script, record, root / "control.json")


def overlapping(calls: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """Pairs of calls whose [start, end] intervals overlap."""
    pairs = []
    ordered = sorted(calls, key=lambda c: c["start"])
    for i, a in enumerate(ordered):
        for b in ordered[i + 1 :]:
            if b["start"] < a["end"]:
                pairs.append((a["pid"], b["pid"]))
    return pairs


class FakeEngine:
    """A Docker Engine API on a unix socket that answers `/_ping` and `/version` (what a
    check asks), and records the paths it was asked; DOCKER_HOST is `host`."""

    def __init__(self, directory: Path) -> None:
        import http.server
        import socketserver
        import threading

        self.socket = directory / "engine.sock"
        self.requests: list[str] = []
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                engine.requests.append(self.path)
                if self.path.endswith("/_ping"):
                    body, kind = b"OK", "text/plain"
                elif self.path.endswith("/version"):
                    doc = {"Version": "99.0.0-fake", "ApiVersion": "1.43", "MinAPIVersion": "1.24"}
                    body, kind = json.dumps(doc).encode(), "application/json"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def address_string(self) -> str:
                return "unix"

            def log_message(self, *_args: Any) -> None:
                pass

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self._server = Server(str(self.socket), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
