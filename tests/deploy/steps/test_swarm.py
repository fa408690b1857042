"""`mode: swarm` steps through a recording fake `docker`: argv, the per-commit tag, refusals.

The real swarm (deploy, update, failed health, rollback) is in tests/e2e/test_swarm.py.
"""

from __future__ import annotations

import json
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from tests.conftest import write_registry
from tests.helpers import SECRET, Remote, make_remote

FAKE = textwrap.dedent("""\
    #!{python}
    # Records each call (argv, cwd, DEPLOYHOOK_IMAGE_TAG); `compose ... config` prints
    # config.yml beside it with $TAG replaced, as compose would interpolate it.
    import json, os, sys
    here = os.path.dirname(os.path.abspath(__file__))
    args = sys.argv[1:]
    if args[:2] == ["compose", "version"]:
        print("Docker Compose version v2.99.0-fake"); sys.exit(0)
    with open(os.path.join(here, "calls.jsonl"), "a") as fh:
        fh.write(json.dumps({{"argv": args, "cwd": os.getcwd(),
                             "tag": os.environ.get("DEPLOYHOOK_IMAGE_TAG"),
                             "registry": os.environ.get("DEPLOYHOOK_IMAGE_REGISTRY")}}) + "\\n")
    if "config" in args:
        text = open(os.path.join(here, "config.yml")).read()
        print(text.replace("$TAG", os.environ.get("DEPLOYHOOK_IMAGE_TAG", "")))
""")


class FakeSwarmDocker:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.path = root / "docker"
        self.path.write_text(FAKE.format(python=sys.executable))
        self.path.chmod(self.path.stat().st_mode | stat.S_IEXEC)
        self.root = root

    def config(self, services: dict[str, Any]) -> None:
        (self.root / "config.yml").write_text(json.dumps({"services": services}))

    def calls(self) -> list[dict[str, Any]]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def fake(tmp_path: Path) -> FakeSwarmDocker:
    return FakeSwarmDocker(tmp_path / "fake-swarm-docker")


def _open(tmp_path: Path, fake: FakeSwarmDocker, entry: dict[str, Any]) -> Service:
    registry = write_registry(tmp_path / "repos.yml", {"stack": entry})
    return Service.open(
        Settings.load(
            {},
            registry=registry,
            data_dir=tmp_path / "data",
            secret=SECRET,
            reconcile_interval=0,
            compose=(str(fake.path), "compose"),
        )
    )


def _deploy(svc: Service, remote: Remote) -> tuple[str, int]:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    job, _ = svc.run("stack", sha=sha)
    Worker(svc).work(burst=True)
    return sha, job.id


def test_swarm_repo_builds_and_deploys_a_stack_tagged_per_commit(
    tmp_path: Path, fake: FakeSwarmDocker
) -> None:
    remote = make_remote(tmp_path, "stack")
    fake.config(
        {"web": {"build": {"context": "."}, "image": "me/web:$TAG"}, "db": {"image": "postgres:16"}}
    )
    svc = _open(
        tmp_path, fake, {"path": str(remote.checkout), "mode": "swarm", "health_timeout": 0}
    )
    try:
        sha, job_id = _deploy(svc, remote)
        job = svc.store.job(job_id)
        assert job.status == Status.SUCCEEDED, job.error
        assert [s.name for s in job.steps] == ["fetch", "checkout", "build", "stack_deploy"]
        calls = fake.calls()
        assert [c["argv"] for c in calls] == [
            ["compose", "config"],
            ["compose", "build"],
            [
                "stack",
                "deploy",
                "--with-registry-auth",
                "--resolve-image",
                "never",
                "-c",
                "docker-compose.yml",
                "stack",
            ],
        ]
        assert {c["tag"] for c in calls} == {sha[:12]}
        assert {c["cwd"] for c in calls} == {str(remote.checkout)}
    finally:
        svc.close()


def test_swarm_repo_with_a_registry_pushes_and_names_its_files(
    tmp_path: Path, fake: FakeSwarmDocker
) -> None:
    remote = make_remote(tmp_path, "stack")
    fake.config({"web": {"build": ".", "image": "reg.example.com/jeff/web:$TAG"}})
    svc = _open(
        tmp_path,
        fake,
        {
            "path": str(remote.checkout),
            "mode": "swarm",
            "health_timeout": 0,
            "image_registry": "reg.example.com/jeff",
            "compose_files": ["a.yml", "b.yml"],
            "project_name": "Shop.Front",
            "remove_orphans": True,
            "services": ["web"],
        },
    )
    try:
        _sha, job_id = _deploy(svc, remote)
        assert svc.store.job(job_id).status == Status.SUCCEEDED
        files = ["-f", "a.yml", "-f", "b.yml", "-p", "Shop.Front"]
        assert [c["argv"] for c in fake.calls()] == [
            ["compose", *files, "config"],
            ["compose", *files, "build", "--", "web"],
            ["compose", *files, "push", "--", "web"],
            [
                "stack",
                "deploy",
                "--with-registry-auth",
                "--resolve-image",
                "always",
                "--prune",
                "-c",
                "a.yml",
                "-c",
                "b.yml",
                "shop-front",
            ],
        ]
        assert {c["registry"] for c in fake.calls()} == {"reg.example.com/jeff"}
    finally:
        svc.close()


@pytest.mark.parametrize(
    ("image", "registry", "complaint"),
    [
        ("me/web:latest", None, "is not tagged with ${DEPLOYHOOK_IMAGE_TAG}"),
        (None, None, "names none"),
        ("other.example.com/web:$TAG", "reg.example.com/jeff", "not under image_registry"),
    ],
)
def test_swarm_refuses_images_a_stack_deploy_would_not_roll_out(
    tmp_path: Path, fake: FakeSwarmDocker, image: str | None, registry: str | None, complaint: str
) -> None:
    remote = make_remote(tmp_path, "stack")
    fake.config({"web": {"build": ".", **({"image": image} if image else {})}})
    entry = {
        "path": str(remote.checkout),
        "mode": "swarm",
        "health_timeout": 0,
        "rollback": False,
        **({"image_registry": registry} if registry else {}),
    }
    svc = _open(tmp_path, fake, entry)
    try:
        _sha, job_id = _deploy(svc, remote)
        job = svc.store.job(job_id)
        assert job.status == Status.FAILED
        assert "service web" in (job.error or "") and complaint in (job.error or "")
        assert [c["argv"][-1] for c in fake.calls()] == ["config"]  # nothing built or deployed
    finally:
        svc.close()
