"""Notifications through Apprise's json:// to a local receiver: one per state change."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.reporters import notify
from deployhook.deploy.worker import Worker
from deployhook.models import Job, Status, Trigger
from deployhook.service import Service
from tests.conftest import write_registry
from tests.forge_server import Receiver, closed_port_url
from tests.helpers import FakeDocker, Remote

PUBLIC = "https://deploy.example.com"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def open_with_notify(
    settings: Settings, open_service: Any, remote: Remote, *, rollback: bool
) -> Service:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "rollback": rollback,
                "notify_env": "DEPLOY_NOTIFY",
            }
        },
    )
    fields = {name: getattr(settings, name) for name in settings.__dataclass_fields__}
    return open_service(Settings.load({}, **{**fields, "public_url": PUBLIC}))  # type: ignore[no-any-return]


def deploy(service: Service, sha: str) -> Job:
    job, _ = service.run("site", sha=sha)
    Worker(service).work(burst=True)
    return service.store.job(job.id)


def test_fail_fail_succeed_sends_two_messages(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    receiver: Receiver,
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOY_NOTIFY", f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/in")
    service = open_with_notify(settings, open_service, remote, rollback=False)
    fake_docker.set(fail=True)
    first = deploy(service, remote.commit_and_push({"index.html": "v2\n"}))
    second = deploy(service, remote.commit_and_push({"index.html": "v3\n"}))
    fake_docker.set()
    third = deploy(service, remote.commit_and_push({"index.html": "v4\n"}))
    assert [first.status, second.status, third.status] == [
        Status.FAILED,
        Status.FAILED,
        Status.SUCCEEDED,
    ]

    failed, recovered = receiver.messages()  # exactly two
    assert failed["type"] == "failure"
    assert first.sha[:12] in failed["title"] and "site" in failed["title"]
    assert first.error and first.error in failed["message"]
    assert f"{PUBLIC}/ui/jobs/{first.id}" in failed["message"]
    assert recovered["type"] == "success"
    assert third.sha[:12] in recovered["title"] and "recovered" in recovered["title"]
    assert all(r.path == "/in" for r in receiver.requests)
    log = "\n".join(r.line for r in service.store.log_lines(second.id))
    assert "notify:" not in log  # the second failure said nothing new


def test_rollback_is_its_own_message(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    receiver: Receiver,
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DEPLOY_NOTIFY", f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/")
    service = open_with_notify(settings, open_service, remote, rollback=True)
    good = deploy(service, remote.deployed())
    assert good.status == Status.SUCCEEDED
    bad_sha = remote.commit_and_push({"index.html": "broken\n"})
    fake_docker.set(fail_sha=bad_sha[:12])
    bad = deploy(service, bad_sha)  # the burst runs the rollback job too
    jobs = service.store.jobs("site", limit=5)
    rollback = jobs[0]
    assert bad.status == Status.FAILED
    assert rollback.trigger == Trigger.ROLLBACK and rollback.status == Status.SUCCEEDED
    assert rollback.sha == good.sha
    fixed = deploy(service, remote.commit_and_push({"index.html": "fixed\n"}))
    assert fixed.status == Status.SUCCEEDED

    kinds = [(m["type"], m["title"]) for m in receiver.messages()]
    assert kinds == [
        ("failure", f"site: deploy of {bad_sha[:12]} failed"),
        ("warning", f"site rolled back to {good.sha[:12]}"),
        ("success", f"site recovered: {fixed.sha[:12]} deployed"),
    ]


def test_unreachable_destination_never_changes_the_deploy(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notify, "BUDGET_S", 2.0)
    password = "ntfy_" + secrets.token_hex(12)
    monkeypatch.setenv(
        "DEPLOY_NOTIFY", closed_port_url().replace("http://", f"json://jeff:{password}@")
    )
    service = open_with_notify(settings, open_service, remote, rollback=False)
    fake_docker.set(fail=True)
    job = deploy(service, remote.deployed())
    assert job.status == Status.FAILED
    assert job.error and "compose up exited with 1" in job.error
    log = "\n".join(r.line for r in service.store.log_lines(job.id))
    assert "notify: failure message not delivered to json://jeff:****@127.0.0.1:" in log
    assert password not in log


def test_unset_variable_is_said_in_the_output(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    fake_docker: FakeDocker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DEPLOY_NOTIFY", raising=False)
    service = open_with_notify(settings, open_service, remote, rollback=False)
    fake_docker.set(fail=True)
    job = deploy(service, remote.deployed())
    log = "\n".join(r.line for r in service.store.log_lines(job.id))
    assert (
        "notify: environment variable DEPLOY_NOTIFY (notify_env) is unset or empty; "
        "no failure message sent"
    ) in log


def test_urls_from_notify_file(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    receiver: Receiver,
    fake_docker: FakeDocker,
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    secret_dir = settings.registry.parent / "secrets"
    secret_dir.mkdir()
    (secret_dir / "notify").write_text(f"json://127.0.0.1:{port}/from-file\n")
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "rollback": False,
                "notify_file": "secrets/notify",
            }
        },
    )
    service = open_service(settings)
    fake_docker.set(fail=True)
    failed = deploy(service, remote.deployed())
    assert failed.status == Status.FAILED
    [message] = receiver.messages()
    assert message["type"] == "failure"
    assert [r.path for r in receiver.requests] == ["/from-file"]
    (secret_dir / "notify").unlink()
    fake_docker.set()
    recovered = deploy(service, remote.deployed())
    log = "\n".join(r.line for r in service.store.log_lines(recovered.id))
    assert f"notify: secret file {secret_dir / 'notify'} (notify_file) cannot be read" in log
    assert recovered.status == Status.SUCCEEDED


def job(status: Status, trigger: Trigger = Trigger.PUSH, *, error: str | None = None) -> Job:
    now = time.time()
    return Job(
        id=9,
        repo="site",
        status=status,
        trigger=trigger,
        sha="a" * 40,
        ref=None,
        delivery=None,
        previous_sha=None,
        created_at=now,
        finished_at=now,
        error=error,
    )


@pytest.mark.parametrize(
    ("ended", "before", "kind"),
    [
        (job(Status.FAILED, error="boom"), notify.State.OK, notify.MessageKind.FAILURE),
        (job(Status.FAILED, error="boom"), notify.State.ROLLED_BACK, notify.MessageKind.FAILURE),
        (job(Status.FAILED, error="boom"), notify.State.FAILING, None),
        (job(Status.SUCCEEDED), notify.State.FAILING, notify.MessageKind.RECOVERY),
        (job(Status.SUCCEEDED), notify.State.ROLLED_BACK, notify.MessageKind.RECOVERY),
        (job(Status.SUCCEEDED), notify.State.OK, None),
        (
            job(Status.SUCCEEDED, Trigger.ROLLBACK),
            notify.State.FAILING,
            notify.MessageKind.ROLLBACK,
        ),
        (
            job(Status.FAILED, Trigger.ROLLBACK, error="x"),
            notify.State.FAILING,
            notify.MessageKind.ROLLBACK,
        ),
        (job(Status.CANCELLED), notify.State.FAILING, None),
        (job(Status.INTERRUPTED), notify.State.OK, None),
    ],
)
def test_decide_one_message_per_state_change(
    ended: Job, before: notify.State, kind: notify.MessageKind | None
) -> None:
    message = notify.decide(ended, before, public_url=None)
    assert (message.kind if message else None) == kind
    if message:
        assert "a" * 12 in message.title and "\n" not in message.title
