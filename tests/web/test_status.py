"""The status surface of docs/status.md: shapes, content types, auth, private mode, badge."""

from __future__ import annotations

import base64
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.helpers import FakeDocker, Remote, gitea_headers, gitea_push_body

TOKEN = "admin-token-for-tests"
JOB_KEYS = {
    "id",
    "repo",
    "status",
    "trigger",
    "sha",
    "ref",
    "delivery",
    "previous_sha",
    "created_at",
    "started_at",
    "finished_at",
    "duration_s",
    "error",
    "steps",
    "rollback_of",
    "rolled_back_by",
}
SVG = "{http://www.w3.org/2000/svg}"


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str = TOKEN, user: str = "admin") -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{token}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def push(client: Any, sha: str) -> int:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    resp = client.post("/deploy/site", data=body, headers=gitea_headers(body))
    assert resp.status_code == 202, resp.get_json()
    return int(resp.get_json()["job"])


@pytest.fixture
def deployed(client: Any, service: Service, remote: Remote) -> int:
    """One good deploy of a new commit; returns its job id."""
    job_id = push(client, remote.commit_and_push({"index.html": "v2\n"}))
    Worker(service).work(burst=True)
    assert service.store.job(job_id).status == Status.SUCCEEDED
    return job_id


def make_client(
    settings: Settings, open_service: Callable[[Settings], Service], **changes: Any
) -> Any:
    changed = dataclasses.replace(settings, **changes)
    app = create_app(changed, service_=open_service(changed), configure_logging=False)
    return app.test_client()


# -- shapes ------------------------------------------------------------------------


def test_repo_status_shape(client: Any, deployed: int, remote: Remote) -> None:
    resp = client.get("/deploy/site")
    assert resp.status_code == 200
    assert resp.content_type == "application/json"
    body = resp.get_json()
    assert {"repo", "branch", "deployed_sha", "held", "last_job", "queued"} <= set(body)
    assert (body["repo"], body["branch"], body["held"], body["queued"]) == (
        "site",
        "main",
        False,
        0,
    )
    assert body["deployed_sha"] == remote.deployed()
    assert set(body["last_job"]) >= JOB_KEYS
    assert body["last_job"]["id"] == deployed


def test_job_shape_and_iso_times(client: Any, deployed: int) -> None:
    job = client.get(f"/jobs/{deployed}").get_json()
    assert set(job) >= JOB_KEYS
    assert job["status"] == "succeeded" and job["trigger"] == "push"
    for key in ("created_at", "started_at", "finished_at"):
        assert job[key].endswith("Z") and job[key][10] == "T"
    assert job["duration_s"] >= 0
    assert [s["name"] for s in job["steps"]] == ["fetch", "checkout", "compose"]
    assert all({"name", "status", "started_at", "finished_at"} <= set(s) for s in job["steps"])


def test_jobs_newest_first_with_limit(client: Any, service: Service, remote: Remote) -> None:
    ids = []
    for n in range(3):
        ids.append(push(client, remote.commit_and_push({"index.html": f"v{n}\n"})))
        Worker(service).work(burst=True)
    jobs = client.get("/deploy/site/jobs").get_json()["jobs"]
    assert [j["id"] for j in jobs] == ids[::-1]
    assert [j["id"] for j in client.get("/deploy/site/jobs?limit=2").get_json()["jobs"]] == ids[
        :0:-1
    ]


def test_deliveries_ledger_says_why(client: Any, remote: Remote) -> None:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    client.post("/deploy/site", data=body, headers=gitea_headers(body, secret="wrong"))
    client.post("/deploy/site", data=body, headers=gitea_headers(body, delivery="d-1"))
    client.post("/deploy/site", data=body, headers=gitea_headers(body, delivery="d-1"))
    other = gitea_push_body(sha=sha, ref="refs/heads/dev", full_name="jeff/site")
    client.post("/deploy/site", data=other, headers=gitea_headers(other))
    resp = client.get("/deploy/site/deliveries")
    assert resp.content_type == "application/json"
    rows = resp.get_json()["deliveries"]
    assert [r["outcome"] for r in rows] == ["ignored", "duplicate", "queued", "rejected"]
    for row in rows:
        assert {"id", "event", "received_at", "outcome", "reason", "job"} <= set(row)
    assert "dev" in rows[0]["reason"]
    assert rows[1]["job"] == rows[2]["job"] is not None
    assert "signature" in rows[3]["reason"]
    assert len(client.get("/deploy/site/deliveries?limit=1").get_json()["deliveries"]) == 1


@pytest.mark.parametrize(
    "url",
    [
        "/deploy/nope",
        "/deploy/nope/jobs",
        "/deploy/nope/deliveries",
        "/deploy/nope/badge.svg",
        "/jobs/999999",
        "/ui/jobs/999999",
        "/ui/repos/nope",
    ],
)
def test_unknown_repo_or_job_is_404_json(client: Any, url: str) -> None:
    resp = client.get(url)
    assert resp.status_code == 404
    assert "error" in resp.get_json()


@pytest.mark.parametrize("query", ["limit=0", "limit=abc", "limit=100000"])
def test_bad_limit_is_400(client: Any, query: str) -> None:
    resp = client.get(f"/deploy/site/jobs?{query}")
    assert resp.status_code == 400
    assert "limit" in resp.get_json()["error"]


def test_overview_lists_every_repo(client: Any, deployed: int, remote: Remote) -> None:
    resp = client.get("/api/overview")
    assert resp.content_type == "application/json"
    [repo] = resp.get_json()["repos"]
    assert (repo["repo"], repo["status"], repo["deployed_sha"]) == (
        "site",
        "succeeded",
        remote.deployed(),
    )
    assert repo["last_job"]["id"] == deployed
    assert repo["deployed_url"] == f"https://git.example.com/jeff/site/commit/{remote.deployed()}"


def test_healthz_is_degraded_without_worker_but_200(client: Any) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["status"] == "degraded"
    assert any("worker" in p for p in body["problems"])


# -- a failure and its rollback stay visible ---------------------------------------


@dataclasses.dataclass
class RolledBack:
    good: str
    bad: str
    failed: int
    rollback: int


@pytest.fixture
def rolled_back(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> RolledBack:
    """A good deploy, then a push whose compose fails, rolled back by the worker."""
    good = remote.commit_and_push({"index.html": "good\n"})
    push(client, good)
    Worker(service).work(burst=True)
    bad = remote.commit_and_push({"index.html": "bad\n"})
    fake_docker.set(fail_sha=bad)
    failed = push(client, bad)
    Worker(service).work(burst=True)
    rollback = service.store.job(failed).rolled_back_by
    assert rollback is not None
    assert service.store.job(rollback).status == Status.SUCCEEDED
    return RolledBack(good, bad, failed, rollback)


def test_overview_says_rolled_back_with_the_failure(client: Any, rolled_back: RolledBack) -> None:
    [repo] = client.get("/api/overview").get_json()["repos"]
    assert (repo["state"], repo["status"]) == ("rolled_back", "succeeded")
    assert repo["deployed_sha"] == rolled_back.good
    assert repo["error"] == "compose up exited with 1"
    assert repo["rolled_back"] == {
        "job": rolled_back.rollback,
        "sha": rolled_back.good,
        "url": f"https://git.example.com/jeff/site/commit/{rolled_back.good}",
        "at": repo["rolled_back"]["at"],
        "failed_job": rolled_back.failed,
        "failed_sha": rolled_back.bad,
        "failed_url": f"https://git.example.com/jeff/site/commit/{rolled_back.bad}",
        "error": "compose up exited with 1",
        "note": f"rolled back to {rolled_back.good[:10]} (job {rolled_back.rollback}) after "
        f"job {rolled_back.failed} failed to deploy {rolled_back.bad[:10]}",
    }
    assert repo["last_job"]["rollback_of"] == rolled_back.failed


def test_pages_and_badge_say_rolled_back_and_link_both_jobs(
    client: Any, rolled_back: RolledBack
) -> None:
    failed, rollback = rolled_back.failed, rolled_back.rollback
    badge = client.get("/deploy/site/badge.svg")
    assert "rolled back" in badge_texts(badge.data)
    assert "#fe7d37" in badge.data.decode()  # the warning colour
    index = client.get("/").data.decode()
    assert 'data-state="rolled_back"' in index
    assert ">rolled back</span>" in index
    assert f'<a href="/ui/jobs/{failed}">job {failed}</a>' in index
    assert f'<a href="/ui/jobs/{rollback}">rollback job {rollback}</a>' in index
    assert "compose up exited with 1" in index
    assert '<a class="name" href="/ui/repos/site">site</a>' in index
    repo = client.get("/ui/repos/site").data.decode()
    assert 'id="rolled-back"' in repo
    assert rolled_back.bad[:10] in repo and rolled_back.good[:10] in repo
    assert f'rolled back by <a href="/ui/jobs/{rollback}">job {rollback}</a>' in repo
    assert f'rollback of <a href="/ui/jobs/{failed}">job {failed}</a>' in repo
    page = client.get(f"/ui/jobs/{failed}").data.decode()
    assert f'rolled back by <a href="/ui/jobs/{rollback}">job {rollback}</a>' in page
    page = client.get(f"/ui/jobs/{rollback}").data.decode()
    assert f'rollback of <a href="/ui/jobs/{failed}">job {failed}</a>, which failed' in page


def test_a_good_deploy_of_a_newer_commit_ends_rolled_back(
    client: Any, service: Service, remote: Remote, rolled_back: RolledBack
) -> None:
    push(client, remote.commit_and_push({"index.html": "fixed\n"}))
    Worker(service).work(burst=True)
    [repo] = client.get("/api/overview").get_json()["repos"]
    assert (repo["state"], repo["rolled_back"], repo["error"]) == ("succeeded", None, None)
    assert "succeeded" in badge_texts(client.get("/deploy/site/badge.svg").data)


def test_a_running_job_is_the_state_even_with_another_queued(
    client: Any, service: Service, deployed: int
) -> None:
    running, _ = service.run("site", sha="a" * 40)
    claimed = service.store.claim(worker="w", node="", lease_s=60)
    assert claimed is not None and claimed.id == running.id
    service.run("site", sha="b" * 40)  # queued behind it: the newest job
    [repo] = client.get("/api/overview").get_json()["repos"]
    assert (repo["state"], repo["status"], repo["running"]) == ("running", "queued", running.id)
    index = client.get("/").data.decode()
    assert 'data-state="running"' in index
    assert '<span class="pill s-running">running</span>' in index
    assert '<span class="flag f-queued">queued</span>' in index
    assert "running" in badge_texts(client.get("/deploy/site/badge.svg").data)


def test_repo_page_shows_jobs_and_ledger(client: Any, deployed: int, remote: Remote) -> None:
    resp = client.get("/ui/repos/site")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = resp.data.decode()
    assert 'class="page-repo"' in html and 'data-state="succeeded"' in html
    assert f'<tr data-job="{deployed}" data-status="succeeded">' in html
    assert 'data-outcome="queued"' in html  # the delivery that queued it
    assert remote.deployed()[:12] in html


# -- the badge -----------------------------------------------------------------------


def badge_texts(data: bytes) -> list[str]:
    root = ET.fromstring(data)  # noqa: S314 (our own server's answer)
    assert root.tag == f"{SVG}svg"
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_badge_never_then_succeeded(client: Any, service: Service, remote: Remote) -> None:
    resp = client.get("/deploy/site/badge.svg")
    assert resp.status_code == 200
    assert resp.mimetype == "image/svg+xml"
    assert "max-age=5" in resp.headers["Cache-Control"]
    assert "never" in badge_texts(resp.data)
    assert "#9f9f9f" in resp.data.decode()
    push(client, remote.commit_and_push({"index.html": "v2\n"}))
    queued = client.get("/deploy/site/badge.svg")
    assert "queued" in badge_texts(queued.data)
    Worker(service).work(burst=True)
    done = client.get("/deploy/site/badge.svg")
    assert badge_texts(done.data)[:2] == ["deploy", "deploy"]
    assert "succeeded" in badge_texts(done.data)
    assert "#4c1" in done.data.decode()


def test_badge_failed_is_red(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    fake_docker.set(fail=True)
    push(client, remote.commit_and_push({"index.html": "v2\n"}))
    Worker(service).work(burst=True)
    resp = client.get("/deploy/site/badge.svg")
    assert "failed" in badge_texts(resp.data)
    assert "#e05d44" in resp.data.decode()


def test_badge_label_is_escaped(client: Any) -> None:
    resp = client.get("/deploy/site/badge.svg", query_string={"label": '<script>&x"y'})
    texts = badge_texts(resp.data)  # parses: nothing broke out of the text nodes
    assert texts[0] == '<script>&x"y'
    assert b"<script>" not in resp.data


# -- admin auth ----------------------------------------------------------------------

ADMIN = [
    ("get", "/jobs/{job}/log"),
    ("get", "/jobs/{job}/log?follow=1"),
    ("post", "/deploy/site/run"),
    ("post", "/deploy/site/rollback"),
    ("post", "/jobs/{job}/cancel"),
    ("post", "/deploy/site/hold"),
    ("post", "/deploy/site/release"),
    ("get", "/login"),
]


BAD_AUTH = {
    "none": {},
    "bearer-wrong": bearer("wrong-token"),
    "basic-wrong": basic("wrong-token"),
    "bearer-empty": {"Authorization": "Bearer "},
    "basic-garbage": {"Authorization": "Basic !!notbase64"},
    "other-scheme": {"Authorization": f"Token {TOKEN}"},
    "basic-no-colon": {"Authorization": "Basic " + base64.b64encode(TOKEN.encode()).decode()},
    "basic-token-as-user": basic(user=TOKEN, token=""),
}


@pytest.mark.parametrize(("method", "url"), ADMIN)
def test_admin_endpoints_refuse_without_valid_token(
    client: Any, service: Service, method: str, url: str
) -> None:
    job, _ = service.run("site")
    for name, headers in BAD_AUTH.items():
        resp = getattr(client, method)(url.format(job=job.id), headers=headers)
        assert resp.status_code == 401, name
        assert "error" in resp.get_json()
        assert resp.headers["WWW-Authenticate"].startswith("Basic "), name
    assert service.store.job(job.id).status == Status.QUEUED  # nothing was done


@pytest.mark.parametrize(("method", "url"), ADMIN)
def test_admin_endpoints_accept_bearer_and_basic(
    client: Any, deployed: int, method: str, url: str
) -> None:
    expected = {
        "/jobs/{job}/log": 200,
        "/jobs/{job}/log?follow=1": 200,
        "/login": 303,
        "/deploy/site/hold": 200,
        "/deploy/site/run": 202,
    }
    for auth in (bearer(), basic(), basic(user="")):
        resp = getattr(client, method)(url.format(job=deployed), headers=auth)
        assert resp.status_code not in {401, 403}, auth
        assert resp.status_code < 500
        if url in expected:
            assert resp.status_code == expected[url]


@pytest.mark.parametrize(("method", "url"), ADMIN)
def test_admin_endpoints_are_403_when_no_token_is_configured(
    settings: Settings, open_service: Callable[[Settings], Service], method: str, url: str
) -> None:
    client = make_client(settings, open_service, admin_token=None)
    resp = getattr(client, method)(url.format(job=1), headers=bearer())
    assert resp.status_code == 403
    assert "DEPLOYHOOK_ADMIN_TOKEN" in resp.get_json()["error"]


def test_login_redirects_only_to_local_paths(client: Any) -> None:
    ok = client.get("/login?next=/ui/jobs/3", headers=basic())
    assert (ok.status_code, ok.headers["Location"]) == (303, "/ui/jobs/3")
    for target in ("//evil.example", "https://evil.example/", "/\\evil.example", "javascript:1"):
        resp = client.get("/login", query_string={"next": target}, headers=basic())
        assert resp.headers["Location"] == "/", target


# -- private mode ------------------------------------------------------------------

STATUS_URLS = [
    "/",
    "/api/overview",
    "/deploy/site",
    "/deploy/site/jobs",
    "/deploy/site/deliveries",
    "/jobs/{job}",
    "/ui/jobs/{job}",
    "/ui/repos/site",
    "/metrics",
]


@pytest.mark.parametrize("url", STATUS_URLS)
def test_private_mode_needs_the_token(
    settings: Settings, deployed: int, url: str, open_service: Callable[[Settings], Service]
) -> None:
    client = make_client(settings, open_service, private_status=True)
    url = url.format(job=deployed)
    refused = client.get(url)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    assert client.get(url, headers=bearer("nope")).status_code == 401
    assert client.get(url, headers=bearer()).status_code == 200
    assert client.get(url, headers=basic()).status_code == 200


def test_public_mode_needs_no_token(client: Any, deployed: int) -> None:
    for url in STATUS_URLS:
        assert client.get(url.format(job=deployed)).status_code == 200, url


def test_healthz_stays_public_in_private_mode(
    settings: Settings, open_service: Callable[[Settings], Service]
) -> None:
    client = make_client(settings, open_service, private_status=True)
    assert client.get("/healthz").status_code == 200


def test_private_mode_serves_only_public_badges(
    settings: Settings, open_service: Callable[[Settings], Service], remote: Remote
) -> None:
    """Trust finding 7: the badge answered for any repo; now a private repo's badge
    answers exactly as a name that does not exist."""
    write_registry(
        settings.registry,
        {
            "site": {"path": str(remote.checkout), "health_timeout": 0, "public_badge": True},
            "hidden": {"path": str(remote.checkout) + "-2", "health_timeout": 0},
        },
    )
    client = make_client(settings, open_service, private_status=True)
    assert client.get("/deploy/site/badge.svg").status_code == 200
    hidden, unknown = client.get("/deploy/hidden/badge.svg"), client.get("/deploy/nope/badge.svg")
    assert hidden.status_code == unknown.status_code == 404
    assert hidden.get_json()["error"].replace("hidden", "nope") == unknown.get_json()["error"]
    assert client.get("/deploy/hidden/badge.svg", headers=bearer()).status_code == 200
    public = make_client(settings, open_service)
    assert public.get("/deploy/hidden/badge.svg").status_code == 200


def test_private_mode_names_no_file_or_variable_to_strangers(
    settings: Settings, open_service: Callable[[Settings], Service], remote: Remote
) -> None:
    """Trust finding 7: 503 bodies named the secret file and the variable, /healthz the
    repos and keys of a broken registry. Details are for admins."""
    secret_file = settings.registry.parent / "no-such-secret-file"
    write_registry(
        settings.registry,
        {
            "site": {"path": str(remote.checkout), "health_timeout": 0},
            "filed": {"path": str(remote.checkout) + "-2", "secret_file": str(secret_file)},
            "envd": {"path": str(remote.checkout) + "-3", "secret_env": "ENVD_SECRET_VAR"},
        },
    )
    private = make_client(settings, open_service, private_status=True)
    public = make_client(settings, open_service)
    body = gitea_push_body(sha="1" * 40)
    names = (str(secret_file), "no-such-secret-file", "ENVD_SECRET_VAR", str(settings.registry))
    for repo in ("filed", "envd"):
        hidden = private.post(f"/deploy/{repo}", data=body, headers=gitea_headers(body))
        shown = public.post(f"/deploy/{repo}", data=body, headers=gitea_headers(body))
        assert hidden.status_code == shown.status_code == 503
        assert not any(n in hidden.get_data(as_text=True) for n in names), hidden.get_json()
        assert any(n in shown.get_data(as_text=True) for n in names), shown.get_json()
    settings.registry.write_text("repos:\n  site:\n    pathh: /typo\n")
    stranger = private.get("/healthz").get_data(as_text=True)
    admin = private.get("/healthz", headers=bearer()).get_json()
    assert "registry invalid" in stranger
    assert not any(word in stranger for word in ("pathh", "repos.site", str(settings.registry)))
    assert any("pathh" in problem for problem in admin["problems"])


# -- pages and the log ---------------------------------------------------------------


def test_index_page_renders_every_repo(client: Any, deployed: int, remote: Remote) -> None:
    resp = client.get("/")
    assert resp.status_code == 200
    assert resp.mimetype == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = resp.data.decode()
    assert 'data-repo="site"' in html
    assert "s-succeeded" in html
    assert remote.deployed()[:10] in html
    assert f"https://git.example.com/jeff/site/commit/{remote.deployed()}" in html
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "log in" in html


def test_index_page_tells_a_newcomer_the_exact_command(
    settings: Settings,
    open_service: Callable[[Settings], Service],
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    registry = home / "config" / "repos.yml"
    registry.write_text("repos: {}\n")
    monkeypatch.chdir(home)  # where serve runs: it found config/repos.yml from here
    html = make_client(settings, open_service, registry=registry).get("/").data.decode()
    assert 'id="repos-empty"' in html and 'id="repos"' not in html
    command = html.split('<pre class="cmd" id="add-command"><code>')[1].split("</code>")[0]
    assert command.startswith(f"cd {home} &amp;&amp; ")
    assert command.endswith(" repos add NAME --path /path/to/checkout")
    assert f"It adds NAME to <code>{registry}</code>" in html
    assert "http://localhost/deploy/NAME" in html
    assert 'id="example-hint"' not in html
    # Served from elsewhere: the command names the file.
    monkeypatch.chdir(tmp_path)
    html = make_client(settings, open_service, registry=registry).get("/").data.decode()
    assert f"<code>DEPLOYHOOK_REGISTRY={registry} " in html
    # deployhook's own tracked example: say where a live registry belongs.
    example = Path(__file__).resolve().parents[2] / "repos.yml"
    monkeypatch.chdir(example.parent)
    html = make_client(settings, open_service, registry=example).get("/").data.decode()
    assert 'id="example-hint"' in html and "cp repos.yml config/repos.yml" in html


@pytest.mark.parametrize("name", ["app.js", "style.css"])
def test_static_assets_are_served_locally(client: Any, name: str) -> None:
    resp = client.get(f"/static/{name}")
    assert resp.status_code == 200
    assert len(resp.data) > 500
    assert b"http://" not in resp.data and b"https://" not in resp.data  # no CDN
    resp.close()


def test_job_page_shows_steps_and_output_only_to_admin(client: Any, deployed: int) -> None:
    public = client.get(f"/ui/jobs/{deployed}").data.decode()
    for step in ("fetch", "checkout", "compose"):
        assert f'data-step="{step}"' in public
    assert 'id="log"' not in public
    assert f"/login?next=/ui/jobs/{deployed}" in public
    admin = client.get(f"/ui/jobs/{deployed}", headers=basic()).data.decode()
    assert 'id="log"' in admin
    assert f'data-log="/jobs/{deployed}/log?follow=1"' in admin


def test_whole_log_is_plain_text_with_utc_times(client: Any, deployed: int) -> None:
    resp = client.get(f"/jobs/{deployed}/log", headers=bearer())
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    lines = resp.data.decode().splitlines()
    assert any(line.endswith("==> compose") for line in lines)
    assert any("fake compose: compose up -d --build" in line for line in lines)
    for line in lines:
        stamp, _, _text = line.partition(" ")
        assert stamp[10] == "T" and stamp.endswith("Z"), line


def test_follow_of_an_ended_job_returns_everything_and_ends(client: Any, deployed: int) -> None:
    whole = client.get(f"/jobs/{deployed}/log", headers=bearer()).data
    followed = client.get(f"/jobs/{deployed}/log?follow=1", headers=bearer()).data
    assert followed == whole
    assert b"==> job succeeded" in followed


def test_log_of_unknown_job_is_404(client: Any) -> None:
    resp = client.get("/jobs/424242/log", headers=bearer())
    assert resp.status_code == 404
    assert resp.get_json()["error"] == "no job 424242"


def test_follow_stops_at_its_time_limit_or_when_the_reader_left(service: Service) -> None:
    from deployhook import tail

    job, _ = service.run("site")  # queued: no line will come
    naps: list[float] = []
    assert list(tail.lines(service.store, job.id, follow=True, max_s=0.0, sleep=naps.append)) == []
    assert naps == []
    calls = iter([False, False, True])
    assert (
        list(
            tail.lines(
                service.store, job.id, follow=True, gone=lambda: next(calls), sleep=naps.append
            )
        )
        == []
    )
    assert naps == [tail.POLL_S, tail.POLL_S]


def test_live_followers_are_limited_per_process_and_released(
    client: Any, service: Service, settings: Settings
) -> None:
    job, _ = service.run("site")  # queued: its followers wait
    service.store.finish(job.id, status=Status.CANCELLED, error=None)
    for _ in range(10):  # each finished follower frees its place
        resp = client.get(f"/jobs/{job.id}/log?follow=1", headers=bearer())
        assert resp.status_code == 200
        resp.close()
    waiting, _ = service.run("site")
    limit = max(2, settings.web_threads // 4)
    held = [client.get(f"/jobs/{waiting.id}/log?follow=1", headers=bearer()) for _ in range(limit)]
    try:
        assert [r.status_code for r in held] == [200] * limit
        refused = client.get(f"/jobs/{waiting.id}/log?follow=1", headers=bearer())
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "10"
        whole = client.get(f"/jobs/{waiting.id}/log", headers=bearer())  # not a follower
        assert whole.status_code == 200
        whole.close()
    finally:
        for resp in held:
            resp.close()
    again = client.get(f"/jobs/{waiting.id}/log?follow=1", headers=bearer())
    assert again.status_code == 200
    again.close()


def test_healthz_is_degraded_while_a_repo_cannot_verify(
    settings: Settings,
    open_service: Callable[[Settings], Service],
    remote: Remote,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A secret under 16 characters (or a comma splitting one off) verifies nothing."""
    write_registry(
        settings.registry,
        {"site": {"path": str(remote.checkout), "secret_env": "SHORT_SECRET_FOR_TEST"}},
    )
    monkeypatch.setenv("SHORT_SECRET_FOR_TEST", "x,Zq8#p1Lm9v2Ws4Tq7RkY0")
    body = make_client(settings, open_service).get("/healthz").get_json()
    assert body["status"] == "degraded"
    [problem] = [p for p in body["problems"] if "cannot verify" in p]
    assert "split at ',' into 1 + 21 characters" in problem
