"""No secret or admin token in any page, response, header, metric or log line."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from deployhook.config import Settings
from deployhook.models import Status, Trigger
from deployhook.service import Service
from tests.conftest import write_registry
from tests.helpers import Remote, gitea_headers, gitea_push_body
from tests.server import Served, live_server

pytestmark = pytest.mark.slow

WEBHOOK_SECRET = "whsec-Default-7Q2xLp9v"
REPO_SECRET = "whsec-Repo-Zt81Kq0b"
MIRROR_TOKEN = "ghp_MirrorToken4b8c2d"
ADMIN_TOKEN = "adm-Token-Vb19sQ77"
SECRETS = (WEBHOOK_SECRET, REPO_SECRET, MIRROR_TOKEN, ADMIN_TOKEN)
SECRET_ENV = {"SITE_HOOK_SECRET": REPO_SECRET, "SITE_MIRROR_TOKEN": MIRROR_TOKEN}


@pytest.fixture
def world(
    tmp_path: Path, settings: Settings, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    registry = write_registry(
        tmp_path / "secret-repos.yml",
        {
            "site": {
                "path": str(remote.checkout),
                "secret_env": "SITE_HOOK_SECRET",
                "mirror": {
                    "url": "https://github.com/jeff/site.git",
                    "token_env": "SITE_MIRROR_TOKEN",
                },
            },
            "plain": {"path": str(tmp_path / "plain")},
        },
    )
    return dataclasses.replace(
        settings, registry=registry, secret=WEBHOOK_SECRET, admin_token=ADMIN_TOKEN
    )


@pytest.fixture
def server(world: Settings, tmp_path: Path) -> Iterator[Served]:
    with live_server(world, tmp=tmp_path, extra_env=SECRET_ENV) as srv:
        yield srv


def assert_clean(where: str, text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret[:6]}… appears in {where}"


def leaky_job(svc: Service, repo: str) -> int:
    """A job whose output printed every secret (as a careless compose file might)."""
    job, _ = svc.store.enqueue(
        repo=repo, sha="f" * 40, ref="refs/heads/main", trigger=Trigger.MANUAL, node=""
    )
    svc.store.claim(worker="test-worker", node="", lease_s=60)
    svc.store.append_log(job.id, [(time.time(), f"env: {s}") for s in SECRETS])
    svc.store.finish(job.id, status=Status.FAILED, error="compose up exited with 1")
    return job.id


def test_no_secret_anywhere_over_http_or_in_logs(
    world: Settings, server: Served, open_service: Callable[[Settings], Service], remote: Remote
) -> None:
    svc = open_service(world)
    sha = remote.commit_and_push({"index.html": "v2\n"})
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    hooks = [
        requests.post(
            f"{server.url}/deploy/site",
            data=body,
            timeout=10,
            headers=gitea_headers(body, secret=REPO_SECRET),
        ),
        requests.post(
            f"{server.url}/deploy/site",
            data=body,
            timeout=10,
            headers=gitea_headers(body, secret=WEBHOOK_SECRET),
        ),  # wrong for site
        requests.post(
            f"{server.url}/deploy/plain",
            data=body,
            timeout=10,
            headers=gitea_headers(body, secret=WEBHOOK_SECRET),
        ),
    ]
    assert [r.status_code for r in hooks] == [202, 403, 202]
    site_job, plain_job = leaky_job(svc, "site"), leaky_job(svc, "plain")

    basic = base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()
    admin = {"Authorization": f"Basic {basic}"}
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    urls = [
        "/",
        "/api/overview",
        "/deploy/site",
        "/deploy/site/jobs",
        "/deploy/plain/jobs",
        "/deploy/site/deliveries",
        "/deploy/plain/deliveries",
        f"/jobs/{site_job}",
        f"/ui/jobs/{site_job}",
        f"/ui/jobs/{plain_job}",
        "/deploy/site/badge.svg",
        "/healthz",
        "/metrics",
        f"/jobs/{site_job}/log",
        f"/jobs/{plain_job}/log",
        f"/jobs/{site_job}/log?follow=1",
        "/static/app.js",
        "/login?next=/",
        "/deploy/nope",
        f"/jobs/{site_job}/log?x={ADMIN_TOKEN[:3]}",
    ]
    seen_log_lines = 0
    for url in urls:
        for headers in ({}, admin, bearer, {"Authorization": "Bearer wrong-token"}):
            resp = requests.get(
                server.url + url, headers=headers, timeout=15, allow_redirects=False
            )
            assert_clean(f"GET {url} body", resp.text)
            assert_clean(f"GET {url} headers", str(resp.headers))
            if url.startswith(f"/jobs/{site_job}/log") and resp.status_code == 200:
                seen_log_lines += resp.text.count("env: [redacted]")
    assert seen_log_lines == 4 * 3 * 2  # four secrets, three log URLs, two ways to log in
    for method, url in (
        ("post", "/deploy/site/hold"),
        ("post", "/deploy/site/release"),
        ("post", f"/jobs/{site_job}/cancel"),
        ("post", "/deploy/site/run"),
        ("post", "/deploy/site/rollback"),
    ):
        resp = requests.request(method, server.url + url, headers=bearer, timeout=30)
        assert resp.status_code < 500, (url, resp.text)
        assert_clean(f"{method.upper()} {url}", resp.text + str(resp.headers))

    server.proc.terminate()
    server.proc.wait(timeout=30)
    server_log = server.log_text()
    assert "job_log_served" in server_log  # the log did capture the requests
    assert_clean("the server's log", server_log)

    env = {**os.environ, **world.to_environ(), **SECRET_ENV, "DEPLOYHOOK_LOG_FORMAT": "json"}
    for args in (
        ["status"],
        ["status", "site"],
        ["logs", str(site_job)],
        ["logs", str(plain_job), "--follow"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "deployhook", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert_clean(f"deployhook {' '.join(args)}", done.stdout + done.stderr)
