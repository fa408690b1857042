"""Which commit a job deploys (docs/deploys.md rule 3; trust finding 3).

A replayed old delivery used to roll production back, and a signed push naming a commit
that only a pull-request ref held was fetched by id and deployed to main. Now a push or
reconcile job (and a retry of one) deploys only what the branch contains: its commit
when it is the head, the head when the branch has moved past it, nothing (a failure
that changes nothing) when the commit is not on the branch; a head that failed and was
rolled back is not deployed again by a push. Real git (a bare origin, real pushes), the
worker in burst mode and a recording fake compose.
"""

from __future__ import annotations

from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.forge_server import FakeGitea
from tests.helpers import FakeDocker, Remote, git, gitea_headers, gitea_push_body


def signed_push(sha: str, *, delivery: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    return body, gitea_headers(body, delivery=delivery)


def deliver(client: Any, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    resp = client.post("/deploy/site", data=body, headers=headers)
    assert resp.status_code == 202, resp.get_json()
    return resp.get_json()  # type: ignore[no-any-return]


def burst(service: Service) -> None:
    Worker(service).work(burst=True)


def test_a_replayed_old_push_never_moves_production_back(
    client: Any, service: Service, remote: Remote
) -> None:
    old = remote.commit_and_push({"index.html": "v2\n"})
    captured = signed_push(old, delivery="first")
    deliver(client, *captured)
    burst(service)
    remote.commit_and_push({"index.html": "v3\n"})
    newest = remote.commit_and_push({"index.html": "v4\n"})
    deliver(client, *signed_push(newest))
    burst(service)
    assert remote.deployed() == newest

    body, headers = captured  # the same body and signature, a new delivery id (a Replay)
    replayed = {**headers, "X-Gitea-Delivery": "replay", "X-GitHub-Delivery": "replay"}
    replayed["X-Gogs-Delivery"] = "replay"
    job_id = deliver(client, body, replayed)["job"]
    burst(service)
    job = service.job(job_id)
    assert job.status == Status.SUCCEEDED, job.error
    assert remote.deployed() == newest
    assert job.sha == newest  # the commit deployed
    assert job.note == f"pushed {old[:12]}; deployed the head of main, {newest[:12]}"


def test_a_commit_only_on_a_pull_request_ref_is_never_deployed(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    good = remote.commit_and_push({"index.html": "v2\n"})
    deliver(client, *signed_push(good))
    burst(service)
    git(remote.dev, "checkout", "-q", "-b", "feature")
    evil = remote.commit({"index.html": "pwned\n"})
    git(remote.dev, "push", "-q", "origin", "HEAD:refs/pull/7/head")
    ups_before = len(fake_docker.ups())

    job_id = deliver(client, *signed_push(evil))["job"]  # claims ref main, names the PR commit
    burst(service)
    job = service.job(job_id)
    assert job.status == Status.FAILED
    assert job.error == f"{evil[:12]} is not on main"
    assert remote.deployed() == good
    assert len(fake_docker.ups()) == ups_before
    assert [j.trigger for j in service.jobs("site")].count(Trigger.ROLLBACK) == 0


def test_a_force_push_backwards_deploys_the_head(
    client: Any, service: Service, remote: Remote
) -> None:
    older = remote.commit_and_push({"index.html": "v2\n"})
    newer = remote.commit_and_push({"index.html": "v3\n"})
    deliver(client, *signed_push(newer))
    burst(service)
    assert remote.deployed() == newer
    git(remote.dev, "reset", "-q", "--hard", older)
    remote.push(force=True)
    job_id = deliver(client, *signed_push(older))["job"]
    burst(service)
    job = service.job(job_id)
    assert (job.status, job.sha, job.note) == (Status.SUCCEEDED, older, None)
    assert remote.deployed() == older


def test_a_head_that_failed_and_was_rolled_back_is_not_deployed_again(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    good = remote.commit_and_push({"index.html": "v2\n"})
    deliver(client, *signed_push(good))
    burst(service)
    bad = remote.commit_and_push({"index.html": "broken\n"})
    fake_docker.set(fail_sha=bad[:12])
    deliver(client, *signed_push(bad))
    burst(service)  # fails, then the rollback to `good` runs
    assert remote.deployed() == good
    ups_before = len(fake_docker.ups())

    job_id = deliver(client, *signed_push(bad, delivery="redelivered"))["job"]
    burst(service)
    job = service.job(job_id)
    assert job.status == Status.SKIPPED
    assert (
        job.note
        == f"{bad[:12]} already failed and was rolled back; a push does not deploy it again"
    )
    assert remote.deployed() == good
    assert len(fake_docker.ups()) == ups_before
    # The repo's shown state stays that of its last job that was not skipped.
    [line] = service.summaries(["site"])
    assert line.last_job is not None and line.last_job.trigger == Trigger.ROLLBACK

    fixed = remote.commit_and_push({"index.html": "v3\n"})  # the fix deploys
    fake_docker.set()
    deliver(client, *signed_push(fixed))
    burst(service)
    assert remote.deployed() == fixed


def test_a_push_never_replaces_a_queued_rollback_with_a_failed_commit(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    good = remote.commit_and_push({"index.html": "v2\n"})
    deliver(client, *signed_push(good))
    burst(service)
    bad = remote.commit_and_push({"index.html": "broken\n"})
    fake_docker.set(fail_sha=bad[:12])
    job_id = deliver(client, *signed_push(bad))["job"]
    worker = Worker(service)
    claimed = service.store.claim(worker=worker.id, node="", lease_s=30)
    assert claimed is not None and claimed.id == job_id
    service.store.finish(job_id, status=Status.FAILED, error="compose up exited with 1")
    rollback, _ = service.rollback("site", to=good)
    assert rollback.trigger == Trigger.ROLLBACK

    answer = deliver(client, *signed_push(bad, delivery="again"))  # a replay of the bad push
    assert answer["job"] == rollback.id and answer.get("coalesced") is True
    kept = service.job(rollback.id)
    assert (kept.trigger, kept.sha) == (Trigger.ROLLBACK, good)
    newer = remote.commit_and_push({"index.html": "v3\n"})  # a new commit does replace it
    assert deliver(client, *signed_push(newer))["job"] == rollback.id
    assert service.job(rollback.id).sha == newer


def test_a_retry_of_a_push_follows_the_push_rules(
    client: Any, service: Service, remote: Remote
) -> None:
    old = remote.commit_and_push({"index.html": "v2\n"})
    job_id = deliver(client, *signed_push(old))["job"]
    newest = remote.commit_and_push({"index.html": "v3\n"})
    claimed = service.store.claim(worker="gone", node="", lease_s=30)
    assert claimed is not None and claimed.id == job_id
    retry = service.store.interrupt(claimed, reason="interrupted: its worker died")
    assert retry is not None and (retry.trigger, retry.retry_of) == (Trigger.RETRY, job_id)
    burst(service)
    done = service.job(retry.id)
    assert (done.status, done.sha) == (Status.SUCCEEDED, newest)
    assert remote.deployed() == newest


def test_the_pushed_commits_status_ends_superseded_by_the_head(
    settings: Settings, open_service: Any, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    gitea = FakeGitea(token="gitea-token-for-tests-0123")
    monkeypatch.setenv("GITEA_TOKEN", gitea.token)
    try:
        write_registry(
            settings.registry,
            {
                "site": {
                    "path": str(remote.checkout),
                    "source": "jeff/site",
                    "health_timeout": 0,
                    "gitea": {"url": gitea.url, "token_env": "GITEA_TOKEN"},
                }
            },
        )
        svc = open_service(settings)
        client = create_app(settings, service_=svc, configure_logging=False).test_client()
        pushed = remote.commit_and_push({"index.html": "v2\n"})
        head = remote.commit_and_push({"index.html": "v3\n"})
        deliver(client, *signed_push(pushed))
        burst(svc)
        statuses = [
            (r.path.rsplit("/", 1)[1], r.body["state"], r.body["description"])
            for r in gitea.requests
            if "/statuses/" in r.path
        ]
        assert (pushed, "success", f"superseded by HEAD {head[:12]}") in statuses
        assert (head, "success") in [(sha, state) for sha, state, _ in statuses]
    finally:
        gitea.close()
