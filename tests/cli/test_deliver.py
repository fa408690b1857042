"""`deployhook deliver` against the Flask app behind a real (werkzeug) HTTP server."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from werkzeug.serving import make_server

from deployhook.cli import main
from deployhook.config import Settings
from deployhook.models import Outcome, Status, Trigger
from deployhook.service import Service
from deployhook.web import create_app
from tests.cli_logging import restore_logging  # noqa: F401 - an autouse fixture
from tests.helpers import SECRET, Remote, make_remote


def run(settings: Settings, *args: str, **env: str) -> Result:
    return CliRunner().invoke(
        main, list(args), env={**settings.to_environ(), **env}, catch_exceptions=False
    )


@pytest.fixture
def server(settings: Settings, service: Service) -> Iterator[str]:
    """The app on a free port of a real threaded HTTP server; yields its base URL."""
    # The server shares this process: its log lines go here, not into the CLI's stdout.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(io.StringIO()))
    app = create_app(settings, service_=service, configure_logging=False)
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, name="test-http")
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=10)
    httpd.server_close()


def test_deliver_queues_the_remote_head_through_the_server(
    settings: Settings, server: str, remote: Remote, service: Service
) -> None:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    port = server.rsplit(":", 1)[1]
    result = run(settings, "deliver", "site", DEPLOYHOOK_BIND=f"0.0.0.0:{port}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"POST http://127.0.0.1:{port}/deploy/site: push of main at {sha[:12]}"
    assert lines[1] == "202 ACCEPTED"
    answer = json.loads("\n".join(lines[2:]))
    assert (answer["status"], answer["sha"], answer["repo"]) == ("queued", sha, "site")
    job = service.store.job(answer["job"])
    assert (job.sha, job.trigger, job.status) == (sha, Trigger.PUSH, Status.QUEUED)
    assert job.repo_url is None  # no forge configured: no made-up web address to link to
    [delivery] = service.store.deliveries("site")
    assert (delivery.event, delivery.outcome, delivery.http_status) == ("push", Outcome.QUEUED, 202)


def test_deliver_reaches_a_repo_added_while_the_server_runs(
    settings: Settings, server: str, tmp_path: Path
) -> None:
    blog = make_remote(tmp_path, "blog")
    added = run(settings, "repos", "add", "blog", "--path", str(blog.checkout))
    assert added.exit_code == 0, added.output
    result = run(settings, "deliver", "blog", "--url", server)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "202 ACCEPTED"
    assert json.loads("\n".join(result.stdout.splitlines()[2:]))["repo"] == "blog"


def test_deliver_with_the_wrong_secret_shows_the_refusal(
    settings: Settings, server: str, service: Service
) -> None:
    result = run(
        settings, "deliver", "site", "--url", server, DEPLOYHOOK_SECRET="not-the-servers-secret"
    )
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[1] == "403 FORBIDDEN"
    assert "signature" in json.loads("\n".join(lines[2:]))["error"]
    assert service.store.jobs("site") == []


def test_deliver_to_nothing_listening_exits_1(settings: Settings, server: str) -> None:
    result = run(settings, "deliver", "site", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("deployhook: cannot deliver to http://127.0.0.1:9/deploy/site:")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("deliver", "ghost"), {}, "no repo named 'ghost'"),
        (("deliver", "site", "--url", "ftp://x"), {}, "is not an http:// or https:// URL"),
        (("deliver", "site"), {"DEPLOYHOOK_SECRET": ""}, "no webhook secret for repo 'site'"),
    ],
)
def test_deliver_usage_errors_exit_2(
    settings: Settings, remote: Remote, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run(settings, *args, **env)
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert message in line


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Keeps the raw request it gets and answers 202 gzip-compressed, like a proxy might."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 - one test's scratch list

    def do_POST(self) -> None:
        import gzip

        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append({"path": self.path, "headers": list(self.headers.items()), "body": body})
        answer = gzip.compress(b'{"status": "queued", "job": 7}')
        self.send_response(202)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def test_deliver_sends_giteas_header_block_and_body_layout(
    settings: Settings, remote: Remote
) -> None:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.handle_request)
    thread.start()
    try:
        result = run(
            settings, "deliver", "site", "--url", f"http://127.0.0.1:{httpd.server_port}/hooks/"
        )
    finally:
        thread.join(timeout=10)
        httpd.server_close()
    assert result.exit_code == 0, result.output
    assert json.loads("\n".join(result.stdout.splitlines()[2:])) == {"status": "queued", "job": 7}
    [request] = _Recorder.seen
    assert request["path"] == "/hooks/deploy/site"
    names = [name for name, _ in request["headers"]]
    assert names == [
        "Host",
        "User-Agent",
        "Content-Length",
        "Content-Type",
        "X-Gitea-Delivery",
        "X-Gitea-Event",
        "X-Gitea-Event-Type",
        "X-Gitea-Signature",
        "X-Gogs-Delivery",
        "X-Gogs-Event",
        "X-Gogs-Event-Type",
        "X-Gogs-Signature",
        "X-Hub-Signature",
        "X-Hub-Signature-256",
        "X-GitHub-Delivery",
        "X-GitHub-Event",
        "X-GitHub-Event-Type",
        "Accept-Encoding",
    ]
    headers = dict(request["headers"])
    body: bytes = request["body"]
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Gitea-Signature"] == headers["X-Gogs-Signature"] == digest
    assert headers["X-Hub-Signature-256"] == f"sha256={digest}"
    assert (
        headers["X-Hub-Signature"]
        == "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    )
    assert headers["X-Gitea-Delivery"] == headers["X-GitHub-Delivery"]
    assert (headers["User-Agent"], headers["Accept-Encoding"]) == ("Go-http-client/1.1", "gzip")
    assert body.startswith(b'{\n  "ref": "refs/heads/main",\n  "before": "')
    assert not body.endswith(b"\n")
    doc = json.loads(body)
    head = remote.deployed()
    assert doc["before"] == doc["after"] == doc["head_commit"]["id"] == head
    assert doc["repository"]["full_name"] == "jeff/site"
