"""What operators asked for, on the deploy side: hooks, paths, tags, pull (issue 14).

Real git (a bare origin, real pushes, real tags), the web app for signed pushes, the
worker in burst mode, and a recording fake compose; hooks run for real under /bin/sh.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status, Trigger
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.helpers import FakeDocker, Remote, git, gitea_headers, gitea_push_body

ADMIN = "admin-token-for-tests"
JOB_VARIABLES = (
    "DEPLOYHOOK_REPO",
    "DEPLOYHOOK_JOB",
    "DEPLOYHOOK_SHA",
    "DEPLOYHOOK_PREVIOUS_SHA",
    "DEPLOYHOOK_REF",
    "DEPLOYHOOK_TRIGGER",
)


@dataclasses.dataclass
class Site:
    service: Service
    client: Any
    remote: Remote
    docker: FakeDocker

    def push(self, sha: str, *, ref: str = "refs/heads/main", status: int = 202) -> dict[str, Any]:
        body = gitea_push_body(sha=sha, ref=ref, full_name="jeff/site")
        resp = self.client.post("/deploy/site", data=body, headers=gitea_headers(body))
        assert resp.status_code == status, resp.get_json()
        return resp.get_json()  # type: ignore[no-any-return]

    def deploy(self, sha: str, **kwargs: Any) -> Any:
        job_id = self.push(sha, **kwargs)["job"]
        Worker(self.service).work(burst=True)
        return self.service.job(job_id)

    def log(self, job_id: int) -> str:
        return "\n".join(line.line for line in self.service.new_output(job_id))


@pytest.fixture
def site(
    settings: Settings,
    open_service: Callable[[Settings], Service],
    remote: Remote,
    fake_docker: FakeDocker,
) -> Callable[..., Site]:
    def make(**entry: Any) -> Site:
        write_registry(
            settings.registry,
            {
                "site": {
                    "path": str(remote.checkout),
                    "source": "jeff/site",
                    "health_timeout": 0,
                    **entry,
                }
            },
        )
        svc = open_service(settings)
        client = create_app(settings, service_=svc, configure_logging=False).test_client()
        return Site(svc, client, remote, fake_docker)

    return make


# -- hooks -------------------------------------------------------------------------------


def test_hooks_run_in_order_with_the_jobs_variables_and_no_secret(
    site: Callable[..., Site], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYHOOK_ADMIN_TOKEN", ADMIN)
    record = tmp_path / "hook-env.jsonl"
    dump = f"{json.dumps('import json,os,sys; print(json.dumps(dict(os.environ)))')}"
    s = site(
        project_name="siteproj",
        compose_files=["docker-compose.yml"],
        hooks={
            "pre_deploy": [f"python3 -c {dump} >> {record}", "echo pre-ran"],
            "post_deploy": ["echo post-ran; test -f index.html"],
        },
    )
    previous = s.remote.deployed()
    sha = s.remote.commit_and_push({"index.html": "v2\n"})
    job = s.deploy(sha)
    assert job.status == Status.SUCCEEDED, (job.error, s.log(job.id))
    assert [step.name for step in job.steps] == [
        "fetch",
        "checkout",
        "pre_deploy",
        "compose",
        "post_deploy",
    ]
    env = json.loads(record.read_text().splitlines()[0])
    assert "DEPLOYHOOK_ADMIN_TOKEN" not in env
    assert {k: env.get(k) for k in (*JOB_VARIABLES, "COMPOSE_PROJECT_NAME", "COMPOSE_FILE")} == {
        "DEPLOYHOOK_REPO": "site",
        "DEPLOYHOOK_JOB": str(job.id),
        "DEPLOYHOOK_SHA": sha,
        "DEPLOYHOOK_PREVIOUS_SHA": previous,
        "DEPLOYHOOK_REF": "refs/heads/main",
        "DEPLOYHOOK_TRIGGER": "push",
        "COMPOSE_PROJECT_NAME": "siteproj",
        "COMPOSE_FILE": "docker-compose.yml",
    }
    assert ADMIN not in record.read_text()
    log = s.log(job.id)
    assert log.index("pre-ran") < log.index("fake compose:") < log.index("post-ran")
    [up] = s.docker.ups()  # compose got the same variables
    assert up["head"] == sha


def test_a_failing_pre_deploy_fails_the_job_before_compose_runs(site: Callable[..., Site]) -> None:
    s = site(hooks={"pre_deploy": ["echo about to fail", "exit 3", "echo never"]})
    job = s.deploy(s.remote.commit_and_push({"index.html": "v2\n"}))
    assert job.status == Status.FAILED
    assert job.error == "pre_deploy: `exit 3` exited with 3"
    assert s.docker.ups() == []
    assert "never" not in s.log(job.id)


def test_a_failing_post_deploy_rolls_back_and_the_rollback_runs_its_hooks(
    site: Callable[..., Site],
) -> None:
    s = site(hooks={"post_deploy": ["echo post for $DEPLOYHOOK_SHA", "test -f migrate-ok"]})
    good = s.remote.commit_and_push({"index.html": "v2\n", "migrate-ok": "yes\n"})
    assert s.deploy(good).status == Status.SUCCEEDED
    s.remote.commit({"index.html": "v3\n"})
    git(s.remote.dev, "rm", "-q", "migrate-ok")
    git(s.remote.dev, "commit", "-q", "-m", "break the migration")
    bad = s.remote.push()
    failed = s.deploy(bad)
    assert failed.status == Status.FAILED
    assert failed.error == "post_deploy: `test -f migrate-ok` exited with 1"
    [rollback] = [j for j in s.service.jobs("site") if j.trigger == Trigger.ROLLBACK]
    assert (rollback.status, rollback.sha) == (Status.SUCCEEDED, good)
    assert "post_deploy" in [step.name for step in rollback.steps]
    assert f"post for {good}" in s.log(rollback.id)
    assert s.remote.deployed() == good


# -- pull --------------------------------------------------------------------------------


def test_pull_pulls_the_services_before_up(site: Callable[..., Site]) -> None:
    s = site(pull=True, services=["web"])
    job = s.deploy(s.remote.commit_and_push({"index.html": "v2\n"}))
    assert job.status == Status.SUCCEEDED, job.error
    assert [step.name for step in job.steps] == ["fetch", "checkout", "pull", "compose"]
    argvs = [c["argv"] for c in s.docker.calls()]
    assert argvs == [
        ["compose", "pull", "--", "web"],
        ["compose", "up", "-d", "--build", "--", "web"],
    ]


# -- paths -------------------------------------------------------------------------------


def test_paths_skip_a_docs_push_and_deploy_an_api_push(site: Callable[..., Site]) -> None:
    s = site(paths=["api/**", "docker-compose.yml"])
    first = s.deploy(s.remote.commit_and_push({"api/app.py": "v1\n"}))
    assert first.status == Status.SUCCEEDED  # no earlier good deploy: it deploys
    docs = s.deploy(s.remote.commit_and_push({"docs/readme.md": "words\n"}))
    assert docs.status == Status.SKIPPED
    assert docs.note is not None and docs.note.startswith(
        f"no change under paths since {first.sha[:12]}"
    )
    assert len(s.docker.ups()) == 1
    api = s.deploy(s.remote.commit_and_push({"api/app.py": "v2\n"}))
    assert api.status == Status.SUCCEEDED
    assert s.remote.deployed() == api.sha  # the docs commit came along
    [line] = s.service.summaries(["site"])
    assert line.status == "succeeded"


def test_paths_never_skip_a_manual_deploy_or_a_rollback(site: Callable[..., Site]) -> None:
    s = site(paths=["api/**"])
    first = s.deploy(s.remote.commit_and_push({"api/app.py": "v1\n"}))
    second = s.deploy(s.remote.commit_and_push({"api/app.py": "v2\n"}))
    assert first.status == second.status == Status.SUCCEEDED
    manual, _ = s.service.run("site", sha=second.sha)  # nothing changed: still deploys
    rollback, _ = s.service.rollback("site")
    Worker(s.service).work(burst=True)
    assert s.service.job(manual.id).status == Status.SUCCEEDED
    assert (s.service.job(rollback.id).status, s.service.job(rollback.id).sha) == (
        Status.SUCCEEDED,
        first.sha,
    )


def test_paths_deploy_when_the_last_good_deploy_was_pruned(
    site: Callable[..., Site], settings: Settings
) -> None:
    s = site(paths=["api/**"])
    assert s.deploy(s.remote.commit_and_push({"api/app.py": "v1\n"})).status == Status.SUCCEEDED
    with s.service.store.write() as tx:
        tx.run("DELETE FROM jobs WHERE repo = 'site'")
    job = s.deploy(s.remote.commit_and_push({"docs/x.md": "words\n"}))
    assert job.status == Status.SUCCEEDED  # nothing to compare with: it deploys


# -- tags --------------------------------------------------------------------------------


def tag(remote: Remote, name: str, *, annotated: bool) -> str:
    """Tag the dev clone's HEAD, push the tag; return the tag's object (what Gitea sends)."""
    if annotated:
        git(remote.dev, "tag", "-a", name, "-m", f"release {name}")
    else:
        git(remote.dev, "tag", name)
    git(remote.dev, "push", "-q", "origin", f"refs/tags/{name}")
    return git(remote.dev, "rev-parse", f"refs/tags/{name}")


@pytest.mark.parametrize("annotated", [True, False])
def test_a_matching_tag_push_deploys_the_tagged_commit(
    site: Callable[..., Site], annotated: bool
) -> None:
    s = site(tags="v*")
    commit = s.remote.commit_and_push({"index.html": "v1.0\n"})
    pushed = tag(s.remote, "v1.0", annotated=annotated)
    assert (pushed != commit) is annotated
    job = s.deploy(pushed, ref="refs/tags/v1.0")
    assert job.status == Status.SUCCEEDED, job.error
    assert job.sha == commit  # an annotated tag peeled to its commit
    assert s.remote.deployed() == commit
    assert git(s.remote.checkout, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached


def test_a_tags_entry_ignores_branch_pushes_and_other_tags(site: Callable[..., Site]) -> None:
    s = site(tags="v*")
    sha = s.remote.commit_and_push({"index.html": "x\n"})
    branch = s.push(sha, status=200)
    assert branch["status"] == "ignored" and "deploys tags v*" in branch["reason"]
    tag(s.remote, "nightly-1", annotated=False)
    other = s.push(sha, ref="refs/tags/nightly-1", status=200)
    assert other["reason"] == "tag push (nightly-1) does not match v*"


def test_an_older_tag_pushed_after_a_newer_one_does_not_move_production_back(
    site: Callable[..., Site],
) -> None:
    s = site(tags="v*")
    old_commit = s.remote.commit_and_push({"index.html": "1.9\n"})
    old_tag = tag(s.remote, "v1.9", annotated=True)
    new_commit = s.remote.commit_and_push({"index.html": "1.10\n"})
    new_tag = tag(s.remote, "v1.10", annotated=True)
    assert s.deploy(new_tag, ref="refs/tags/v1.10").sha == new_commit
    late = s.deploy(old_tag, ref="refs/tags/v1.9")  # delivered late, or replayed
    assert (late.status, late.sha) == (Status.SUCCEEDED, new_commit)
    assert late.note == f"pushed {old_tag[:12]}; deployed the newest tag v1.10, {new_commit[:12]}"
    assert s.remote.deployed() == new_commit
    assert s.service.remote_head(s.service.repo("site")) == new_commit  # reconcile's head
    manual, _ = s.service.run("site", sha=old_commit)  # an older tag only by hand
    Worker(s.service).work(burst=True)
    assert s.remote.deployed() == old_commit and s.service.job(manual.id).status == Status.SUCCEEDED
