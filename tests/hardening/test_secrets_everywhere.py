"""A whole run of `deployhook serve`, then a grep for every secret in everything it left.

Webhook secrets (the default and a repo's rotated pair), the admin token, a mirror token
(which really travels: the mirror is a smart-HTTP git server that demands it) and a Gitea
token (a fake Gitea that demands it). The deploy's compose is careless: it prints its
environment and a config file holding every secret. Then: the server's log at debug
level, every response (bodies and headers) to admins and strangers, every page, the job
output, the metrics and every byte under the data dir must be free of them.
"""

from __future__ import annotations

import base64
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import write_registry
from tests.forge_server import FakeGitea
from tests.git_http import GitHttpServer
from tests.hardening.support import Answer, call, get_json, push, serve_env, settled, wait_for
from tests.helpers import git, gitea_headers, gitea_push_body, make_fake_docker, make_remote
from tests.server import serve

pytestmark = pytest.mark.slow

DEFAULT_SECRET = "whsec-default-" + secrets.token_hex(8)
SITE_OLD = "whsec-site-old-" + secrets.token_hex(8)
SITE_NEW = "whsec-site-new-" + secrets.token_hex(8)
ADMIN = "adm-" + secrets.token_hex(12)
MIRROR_TOKEN = "ghp_" + secrets.token_hex(18)
GITEA_TOKEN = "gtea-" + secrets.token_hex(16)
SECRETS = {
    "default webhook secret": DEFAULT_SECRET,
    "old site secret": SITE_OLD,
    "new site secret": SITE_NEW,
    "admin token": ADMIN,
    "mirror token": MIRROR_TOKEN,
    "gitea token": GITEA_TOKEN,
    "mirror token as Basic": base64.b64encode(f"x-access-token:{MIRROR_TOKEN}".encode()).decode(),
    "admin token as Basic": base64.b64encode(f"admin:{ADMIN}".encode()).decode(),
}

LEAKY_COMPOSE = """#!/bin/sh
# A careless stack: its build prints the environment and a config full of secrets.
env | sort
cat {config}
exec {fake} "$@"
"""


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[GitHttpServer, FakeGitea]]:
    (tmp_path / "served").mkdir()
    mirror = GitHttpServer(
        tmp_path / "served", authorization="Basic " + SECRETS["mirror token as Basic"]
    )
    gitea = FakeGitea(token=GITEA_TOKEN)
    try:
        yield mirror, gitea
    finally:
        mirror.close()
        gitea.close()


def test_no_secret_in_logs_responses_pages_metrics_output_or_data_dir(
    tmp_path: Path, servers: tuple[GitHttpServer, FakeGitea]
) -> None:
    mirror, gitea = servers
    remote = make_remote(tmp_path, "site")
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "served" / "mirror.git"))
    plain = make_remote(tmp_path, "plain")
    fake = make_fake_docker(tmp_path / "fake")
    config = tmp_path / "stack-config.txt"
    # The raw values (a stack has no reason to hold the Basic forms, which clients make).
    config.write_text(
        "".join(f"{name}={value}\n" for name, value in SECRETS.items() if "as Basic" not in name)
    )
    leaky = tmp_path / "leaky-compose"
    leaky.write_text(LEAKY_COMPOSE.format(config=config, fake=fake.path))
    leaky.chmod(0o755)
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "secret_env": "SITE_SECRET",
                "source": "jeff/site",
                "mirror": {"url": mirror.url("mirror.git"), "token_env": "MIRROR_TOKEN"},
                "gitea": {
                    "url": gitea.url,
                    "token_env": "GITEA_TOKEN",
                    "commit_status": True,
                    "mirror_sync": True,
                },
            },
            "plain": {"path": str(plain.checkout), "health_timeout": 0},
        },
    )
    env = serve_env(
        tmp_path,
        registry,
        None,
        DEPLOYHOOK_SECRET=DEFAULT_SECRET,
        DEPLOYHOOK_ADMIN_TOKEN=ADMIN,
        DEPLOYHOOK_COMPOSE=f"{leaky} compose",
        DEPLOYHOOK_LOG_LEVEL="debug",
        DEPLOYHOOK_PUBLIC_URL="http://deploy.test",
        SITE_SECRET=f"{SITE_OLD},{SITE_NEW}",
        MIRROR_TOKEN=MIRROR_TOKEN,
        GITEA_TOKEN=GITEA_TOKEN,
    )
    db = tmp_path / "data" / "deployhook.sqlite3"
    bearer = {"Authorization": f"Bearer {ADMIN}"}
    basic = {"Authorization": f"Basic {SECRETS['admin token as Basic']}"}
    answers: list[tuple[str, Answer]] = []

    def keep(label: str, answer: Answer) -> Answer:
        answers.append((label, answer))
        return answer

    with serve(env, cwd=tmp_path) as served:
        url = served.url
        sha = remote.commit_and_push({"index.html": "v2\n"})
        assert keep("push new secret", push(url, "site", sha, secret=SITE_NEW)).status == 202
        wait_for(lambda: settled(db), timeout=60, what="the first deploy")
        sha2 = remote.commit_and_push({"index.html": "v3\n"})
        assert keep("push old secret", push(url, "site", sha2, secret=SITE_OLD)).status == 202
        assert (
            keep(
                "push default secret", push(url, "plain", plain.deployed(), secret=DEFAULT_SECRET)
            ).status
            == 202
        )
        assert (
            keep("push wrong secret", push(url, "site", sha2, secret=DEFAULT_SECRET)).status == 403
        )
        body = gitea_push_body(sha=sha2, full_name="jeff/site")
        for label, signature in (
            ("the secret as the signature", SITE_NEW),
            ("sha256= and the secret", f"sha256={SITE_NEW}"),
        ):
            headers = {
                **gitea_headers(body, secret=SITE_NEW),
                "X-Gitea-Signature": signature,
                "X-Gogs-Signature": signature,
                "X-Hub-Signature-256": signature,
                "X-Hub-Signature": signature,
            }
            assert (
                keep(
                    label, call(url, "/deploy/site", method="POST", body=body, headers=headers)
                ).status
                == 403
            )
        wait_for(lambda: settled(db), timeout=60, what="the deploys")
        fake.set(fail=True)  # a failing deploy, and its rollback
        sha3 = remote.commit_and_push({"index.html": "v4\n"})
        assert keep("push failing", push(url, "site", sha3, secret=SITE_NEW)).status == 202
        wait_for(lambda: settled(db), timeout=60, what="the failure and its rollback")
        fake.set(fail=False)
        jobs = [j["id"] for j in get_json(url, "/deploy/site/jobs?limit=50")["jobs"]]
        assert len(jobs) >= 3
        for method, path in (
            ("POST", "/deploy/site/hold"),
            ("POST", "/deploy/site/release"),
            ("POST", "/deploy/site/run"),
            ("POST", f"/jobs/{jobs[0]}/cancel"),
            ("POST", "/deploy/site/rollback"),
            ("POST", "/deploy/nope/run"),
        ):
            for headers in (bearer, basic, {"Authorization": "Bearer wrong"}, {}):
                keep(f"{method} {path}", call(url, path, method=method, headers=headers))
        wait_for(lambda: settled(db), timeout=60, what="admin-made jobs")
        pages = [
            "/",
            "/api/overview",
            "/deploy/site",
            "/deploy/site/jobs",
            "/deploy/site/deliveries?limit=100",
            "/deploy/plain/deliveries",
            "/deploy/site/badge.svg",
            "/healthz",
            "/metrics",
            "/api/workers",
            "/login?next=/",
            "/static/app.js",
        ]
        for job in jobs:
            pages += [
                f"/jobs/{job}",
                f"/ui/jobs/{job}",
                f"/jobs/{job}/log",
                f"/jobs/{job}/log?follow=1",
            ]
        logs_seen = 0
        for path in pages:
            for label, headers in (("admin", bearer), ("browser admin", basic), ("stranger", {})):
                answer = keep(f"GET {path} as {label}", call(url, path, headers=headers))
                assert answer.status < 500, (path, answer.status)
                if "/log" in path and answer.status == 200:
                    logs_seen += 1
        assert logs_seen >= 2 * 2 * len(jobs)
        served.proc.send_signal(signal.SIGTERM)
        served.proc.wait(timeout=60)

    # The mirror push and the commit statuses really carried their tokens.
    assert mirror.authorized > 0
    assert any(r.path.endswith("/mirror-sync") for r in gitea.requests)
    cli = subprocess.run(
        [sys.executable, "-m", "deployhook", "status", "site"],
        env={**env, "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    outputs = {f"{label}: body": a.body.decode("utf-8", "replace") for label, a in answers}
    outputs |= {f"{label}: headers": repr(a.headers) for label, a in answers}
    outputs["the server's log"] = served.log.read_text(errors="replace")
    outputs["deployhook status"] = cli.stdout + cli.stderr
    assert "delivery_answered" in outputs["the server's log"]  # it did log (at debug)
    job_output = "\n".join(v for k, v in outputs.items() if "/log as admin: body" in k)
    for name in SECRETS:  # the careless stack did print them all, and they were masked
        assert "as Basic" in name or f"{name}=[redacted]" in job_output, name
    for where, text in outputs.items():
        for name, value in SECRETS.items():
            assert value not in text, f"the {name} appears in {where}"
    files = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    files += [p for p in (remote.checkout / ".git").rglob("*") if p.is_file()]
    assert any(p.name == "deployhook.sqlite3" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"the {name} is stored in {path}"
