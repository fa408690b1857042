"""POST /deploy: one URL for an organisation- or system-wide webhook (docs/webhooks.md).

Real git checkouts, the real app, and the real worker deploying what was routed (through
the recording fake docker).
"""

from __future__ import annotations

import json
import urllib.parse
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
from tests.helpers import (
    FakeDocker,
    Remote,
    forgejo_headers,
    gitea_headers,
    gitea_push_body,
    github_headers,
    make_remote,
)

ORG_SECRET = "org-webhook-secret-0123456789abcdef"
GAMMA_SECRET = "gamma-has-its-own-secret-42424242"


@pytest.fixture
def remotes(tmp_path: Path) -> dict[str, Remote]:
    return {name: make_remote(tmp_path, name) for name in ("alpha", "beta", "gamma")}


@pytest.fixture
def settings(
    tmp_path: Path,
    remotes: dict[str, Remote],
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    monkeypatch.setenv("ORG_SECRET", ORG_SECRET)
    monkeypatch.setenv("GAMMA_SECRET", GAMMA_SECRET)
    monkeypatch.delenv("DELTA_UNSET", raising=False)
    common = {"health_timeout": 0, "rollback": False}
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "alpha": {
                "path": str(remotes["alpha"].checkout),
                "source": "jeff/site",
                "secret_env": "ORG_SECRET",
                **common,
            },
            "beta": {  # the same repository, a second checkout (staging, say)
                "path": str(remotes["beta"].checkout),
                "source": ["jeff/site", "jeff/site-staging"],
                "secret_env": "ORG_SECRET",
                **common,
            },
            "gamma": {  # same source, its own secret: the org hook's secret is not its
                "path": str(remotes["gamma"].checkout),
                "source": "jeff/site",
                "secret_env": "GAMMA_SECRET",
                **common,
            },
            "delta": {  # its secret is not configured: it takes no part
                "path": str(tmp_path / "delta"),
                "source": "jeff/site",
                "secret_env": "DELTA_UNSET",
            },
            "nosource": {  # without a source an entry is never routed to
                "path": str(tmp_path / "nosource"),
                "secret_env": "ORG_SECRET",
            },
            "other": {
                "path": str(tmp_path / "other"),
                "source": "jeff/other",
                "secret_env": "ORG_SECRET",
            },
        },
    )
    return Settings.load(
        {},
        registry=registry,
        data_dir=tmp_path / "data",
        secret="the-default-secret-is-not-the-orgs",
        admin_token="admin-token-for-tests",
        reconcile_interval=0,
        compose=(str(fake_docker.path), "compose"),
        stop_grace=5,
        max_body=64 * 1024,
    )


def push(
    client: Any,
    sha: str,
    *,
    full_name: str = "jeff/site",
    secret: str = ORG_SECRET,
    ref: str = "refs/heads/main",
    headers: Callable[..., dict[str, str]] = gitea_headers,
    **kwargs: Any,
) -> Any:
    body = gitea_push_body(sha=sha, full_name=full_name, ref=ref)
    return client.post("/deploy", data=body, headers=headers(body, secret=secret, **kwargs))


def ledger(client: Any, repo: str) -> list[dict[str, Any]]:
    return client.get(f"/deploy/{repo}/deliveries").get_json()["deliveries"]


def test_two_matching_entries_queue_two_jobs_and_the_worker_deploys_both(
    client: Any,
    service: Service,
    remotes: dict[str, Remote],
    fake_docker: FakeDocker,
) -> None:
    sha = remotes["alpha"].commit_and_push({"index.html": "v2\n"})
    beta_sha = remotes["beta"].commit_and_push({"index.html": "beta v2\n"})
    assert sha != beta_sha  # two origins; the payload names alpha's commit
    resp = push(client, sha, delivery="org-1")
    assert resp.status_code == 202
    results = resp.get_json()["results"]
    assert [(r["repo"], r["status"]) for r in results] == [("alpha", "queued"), ("beta", "queued")]
    assert all(isinstance(r["job"], int) and r["reason"] for r in results)
    assert results[0]["job"] != results[1]["job"]
    for name in ("alpha", "beta"):
        [row] = ledger(client, name)
        assert (row["id"], row["outcome"], row["job"]) == (
            "org-1",
            "queued",
            next(r["job"] for r in results if r["repo"] == name),
        )
    for name in ("gamma", "delta", "nosource", "other"):
        assert ledger(client, name) == []
    # beta's origin has no such commit: its job fails, alpha's deploys. Both ran.
    Worker(service).work(burst=True)
    alpha_job = service.job(results[0]["job"])
    beta_job = service.job(results[1]["job"])
    assert alpha_job.status == Status.SUCCEEDED
    assert remotes["alpha"].deployed() == sha
    assert beta_job.status == Status.FAILED and beta_job.error
    assert [c["cwd"] for c in fake_docker.ups()] == [str(remotes["alpha"].checkout)]


def test_an_entry_whose_secret_differs_gets_none(client: Any, remotes: dict[str, Remote]) -> None:
    sha = remotes["gamma"].deployed()
    resp = push(client, sha, secret=GAMMA_SECRET)
    assert resp.status_code == 202
    assert [r["repo"] for r in resp.get_json()["results"]] == ["gamma"]
    assert ledger(client, "alpha") == ledger(client, "beta") == []


def test_unknown_source_answers_like_a_bad_signature(client: Any) -> None:
    unknown = push(client, "1" * 40, full_name="mallory/elsewhere")
    bad = push(client, "1" * 40, secret="not-any-entrys-secret-at-all")
    own_url = client.post(
        "/deploy/alpha",
        data=gitea_push_body(sha="1" * 40, full_name="jeff/site"),
        headers=gitea_headers(gitea_push_body(sha="1" * 40), secret="not-the-secret-1234"),
    )
    assert unknown.status_code == bad.status_code == own_url.status_code == 403
    assert unknown.data == bad.data == own_url.data
    assert unknown.get_json() == {"error": "signature does not match the body"}
    assert set(unknown.headers.keys()) == set(bad.headers.keys())
    # source of a repo whose entry verifies with another secret: the same 403
    assert push(client, "1" * 40, full_name="jeff/other", secret=GAMMA_SECRET).data == bad.data
    # refused whole: in no entry's ledger (alpha's row is its own URL's refusal)
    for name in ("beta", "gamma", "other"):
        assert ledger(client, name) == []
    assert [r["outcome"] for r in ledger(client, "alpha")] == ["rejected"]


def test_a_ping_that_verifies_is_pong_and_recorded(client: Any) -> None:
    org_ping = json.dumps(
        {
            "zen": "Keep it logically awesome.",
            "hook_id": 7,
            "hook": {"type": "Organization", "id": 7, "events": ["push"]},
            "organization": {"login": "jeff"},
        }
    ).encode()
    resp = client.post(
        "/deploy",
        data=org_ping,
        headers=github_headers(org_ping, secret=ORG_SECRET, event="ping", delivery="p-1"),
    )
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "pong"}
    # no repository in an organisation's ping: each entry its secret verified records it
    for name in ("alpha", "beta", "other"):
        [row] = ledger(client, name)
        assert (row["id"], row["event"], row["outcome"], row["reason"]) == (
            "p-1",
            "ping",
            "ignored",
            "ping",
        )
    assert ledger(client, "gamma") == []
    forged = client.post(
        "/deploy",
        data=org_ping,
        headers=github_headers(org_ping, secret="a-forged-ping-secret-0000", event="ping"),
    )
    assert forged.status_code == 403


def test_the_table_applies_to_each_entry(
    settings: Settings, remotes: dict[str, Remote], open_service: Callable[[Settings], Service]
) -> None:
    text = settings.registry.read_text().replace(
        "source:\n    - jeff/site\n", "branch: production\n    source:\n    - jeff/site\n"
    )
    settings.registry.write_text(text)
    app = create_app(settings, service_=open_service(settings), configure_logging=False)
    service_registry = app.test_client()
    sha = remotes["alpha"].deployed()
    resp = push(service_registry, sha)
    assert resp.status_code == 202
    assert [(r["repo"], r["status"]) for r in resp.get_json()["results"]] == [
        ("alpha", "queued"),
        ("beta", "ignored"),
    ]
    assert "not the deploy branch production" in resp.get_json()["results"][1]["reason"]
    tag = push(service_registry, sha, ref="refs/tags/v1")
    assert tag.status_code == 200
    assert [(r["status"], r["job"]) for r in tag.get_json()["results"]] == [
        ("ignored", None),
        ("ignored", None),
    ]


def test_a_redelivery_is_a_duplicate_in_each_ledger(
    client: Any, remotes: dict[str, Remote]
) -> None:
    sha = remotes["alpha"].deployed()
    first = push(client, sha, delivery="same-id")
    again = push(client, sha, delivery="same-id")
    assert first.status_code == 202
    assert again.status_code == 200  # nothing new was queued or joined
    assert [(r["repo"], r["status"], r["job"]) for r in again.get_json()["results"]] == [
        (r["repo"], "duplicate", r["job"]) for r in first.get_json()["results"]
    ]


def test_a_held_entry_holds(client: Any, remotes: dict[str, Remote]) -> None:
    auth = {"Authorization": "Bearer admin-token-for-tests"}
    assert client.post("/deploy/beta/hold", headers=auth).status_code == 200
    resp = push(client, remotes["alpha"].deployed())
    assert resp.status_code == 202
    assert [(r["repo"], r["status"]) for r in resp.get_json()["results"]] == [
        ("alpha", "queued"),
        ("beta", "held"),
    ]


def test_the_intakes_order_holds(client: Any) -> None:
    body = gitea_push_body(sha="2" * 40, full_name="jeff/site")
    unsigned = {"Content-Type": "application/json", "X-Gitea-Event": "push"}
    assert client.post("/deploy", data=body, headers=unsigned).status_code == 401
    big = b"x" * (64 * 1024 + 1)
    assert client.post("/deploy", data=big, headers=gitea_headers(big)).status_code == 413
    xml = gitea_headers(body, secret=ORG_SECRET, content_type="application/xml")
    assert client.post("/deploy", data=body, headers=xml).status_code == 415
    junk = b'{"ref": 1}'
    resp = client.post("/deploy", data=junk, headers=gitea_headers(junk, secret=ORG_SECRET))
    assert resp.status_code == 400  # verified, then parsed
    forged_junk = client.post(
        "/deploy", data=junk, headers=gitea_headers(junk, secret="an-unknown-secret-000")
    )
    assert forged_junk.status_code == 403  # never parsed: it did not verify


def test_forgejo_headers_and_gitea_form_bodies(client: Any, remotes: dict[str, Remote]) -> None:
    sha = remotes["alpha"].deployed()
    full = forgejo_headers(gitea_push_body(sha=sha), secret=ORG_SECRET)
    only_forgejo = {
        k: v
        for k, v in full.items()
        if not k.startswith(("X-Gitea", "X-Gogs", "X-Hub", "X-GitHub"))
    }
    resp = client.post("/deploy", data=gitea_push_body(sha=sha), headers=only_forgejo)
    assert resp.status_code == 202
    payload = gitea_push_body(sha=sha)
    form = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    headers = gitea_headers(
        form, secret=ORG_SECRET, signed=payload, content_type="application/x-www-form-urlencoded"
    )
    resp = client.post("/deploy", data=form, headers=headers)
    assert resp.status_code == 202
    assert {r["status"] for r in resp.get_json()["results"]} == {"coalesced"}
