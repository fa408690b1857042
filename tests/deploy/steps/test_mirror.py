"""Mirror pushes to real bare repositories: a file:// URL, and a smart-HTTP server that
requires the token, so the token really travels (and is proven absent everywhere else)."""

from __future__ import annotations

import base64
import logging
import secrets
import shutil
import string
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from deployhook.config import Settings
from deployhook.deploy.steps import mirror
from deployhook.deploy.worker import Worker
from deployhook.errors import StepFailed
from deployhook.models import Status, StepStatus
from deployhook.registry import Mirror, Repo
from deployhook.service import Service
from tests.conftest import write_registry
from tests.git_http import GitHttpServer
from tests.helpers import Remote, git


def refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads", "refs/tags")
    return dict(line.split(" ", 1) for line in out.splitlines())


def fake_token() -> str:
    """A real-looking GitHub token, made up for this run."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def bare(path: Path) -> Path:
    git(path.parent, "init", "-q", "--bare", str(path))
    return path


def publish_branches(remote: Remote) -> None:
    """Give the origin more than the deploy branch: a feature branch, an old one, tags."""
    git(remote.dev, "checkout", "-q", "-b", "feature")
    remote.commit({"feature.txt": "f1\n"}, "feature")
    git(remote.dev, "checkout", "-q", "-b", "old", "main")
    remote.commit({"old.txt": "o\n"}, "old")
    git(remote.dev, "checkout", "-q", "main")
    git(remote.dev, "tag", "-a", "-m", "release 1", "v1")
    git(remote.dev, "tag", "light")
    git(remote.dev, "push", "-q", "origin", "main", "feature", "old", "v1", "light")


def change_everything(remote: Remote) -> str:
    """New branch and tag, a force-pushed branch, a deleted branch and a deleted tag."""
    git(remote.dev, "checkout", "-q", "-b", "fresh", "main")
    remote.commit({"fresh.txt": "x\n"}, "fresh")
    git(remote.dev, "tag", "v2")
    git(remote.dev, "checkout", "-q", "feature")
    git(remote.dev, "reset", "-q", "--hard", "main")
    rewritten = remote.commit({"feature.txt": "rewritten\n"}, "feature, rewritten")
    git(remote.dev, "checkout", "-q", "main")
    git(remote.dev, "push", "-q", "--force", "origin", "fresh", "feature", "v2")
    git(remote.dev, "push", "-q", "origin", ":old", ":refs/tags/light")
    return rewritten


def repo_for(remote: Remote, url: str, token_env: str | None = None) -> Repo:
    return Repo(name="site", path=remote.checkout, mirror=Mirror(url=url, token_env=token_env))


def test_mirror_brings_every_branch_and_tag_and_prunes(tmp_path: Path, remote: Remote) -> None:
    publish_branches(remote)
    target = bare(tmp_path / "mirror.git")
    repo = repo_for(remote, f"file://{target}")
    lines: list[str] = []

    mirror.push(repo, data_dir=tmp_path / "data", timeout=lambda: 60, output=lines.append)
    assert refs(target) == refs(remote.origin)
    assert {"refs/heads/feature", "refs/heads/old", "refs/tags/v1", "refs/tags/light"} <= set(
        refs(target)
    )

    rewritten = change_everything(remote)
    changed = mirror.push(repo, data_dir=tmp_path / "data", timeout=lambda: 60, output=lines.append)
    after = refs(target)
    assert after == refs(remote.origin)
    assert after["refs/heads/feature"] == rewritten
    assert "refs/heads/old" not in after and "refs/tags/light" not in after
    assert {"refs/heads/fresh", "refs/tags/v2"} <= set(after)
    assert changed == 5  # fresh, v2, feature (forced), old and light deleted
    assert any("forced update" in line for line in lines)


def test_mirror_cache_keeps_no_url_on_disk(tmp_path: Path, remote: Remote) -> None:
    target = bare(tmp_path / "mirror.git")
    repo = repo_for(remote, f"file://{target}")
    mirror.push(repo, data_dir=tmp_path / "data", timeout=lambda: 60, output=lambda _l: None)
    cache = mirror.cache_path(tmp_path / "data", repo)
    assert (cache / "HEAD").is_file()
    assert not (cache / "FETCH_HEAD").exists()
    for path in cache.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert str(remote.origin).encode() not in data, path
            assert str(target).encode() not in data, path


def test_mirror_failure_fails_the_step_not_the_deploy(
    settings: Settings, remote: Remote, open_service: Any, tmp_path: Path
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "mirror": {"url": f"file://{tmp_path}/no-such-mirror.git"},
            }
        },
    )
    service = open_service(settings)
    job, _ = service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    ended = service.store.job(job.id)
    assert ended.status == Status.SUCCEEDED
    step = {s.name: s for s in ended.steps}["mirror"]
    assert step.status == StepStatus.FAILED
    assert step.error and "git push failed" in step.error


def test_mirror_token_named_but_unset_fails_the_step(
    remote: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIRROR_TOKEN", raising=False)
    repo = repo_for(remote, "https://github.invalid/jeff/site.git", token_env="MIRROR_TOKEN")
    with pytest.raises(StepFailed, match=r"MIRROR_TOKEN \(mirror.token_env\) is unset"):
        mirror.push(repo, data_dir=tmp_path / "data", timeout=lambda: 60, output=lambda _l: None)


def test_mirror_token_from_a_file(remote: Remote, tmp_path: Path) -> None:
    token_file = tmp_path / "mirror-token"
    token_file.write_text(fake_token() + "\n")
    repo = Repo(
        name="site",
        path=remote.checkout,
        mirror=Mirror(url="https://github.invalid/jeff/site.git", token_file=token_file),
    )
    assert mirror.resolve_token(repo) == token_file.read_text().strip()
    token_file.unlink()
    with pytest.raises(StepFailed, match=r"mirror-token \(mirror.token_file\) cannot be read"):
        mirror.resolve_token(repo)


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:jeff/site.git",
        "ssh://git@github.com/jeff/site.git",
        "file:///srv/mirror.git",
    ],
)
def test_ssh_and_local_urls_get_no_token(url: str) -> None:
    assert mirror.auth_config(url, fake_token()) == {}


def test_https_url_gets_basic_auth_header() -> None:
    token = fake_token()
    [(key, value)] = mirror.auth_config("https://github.com/jeff/site.git", token).items()
    assert key == "http.extraHeader"
    scheme, _, encoded = value.removeprefix("Authorization: ").partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"x-access-token:{token}"


def test_safe_url_drops_credentials() -> None:
    assert (
        mirror.safe_url("https://jeff:pw@github.com/jeff/site.git")
        == "https://github.com/jeff/site.git"
    )
    assert mirror.safe_url("git@github.com:jeff/site.git") == "git@github.com:jeff/site.git"


# -- the token path, over smart HTTP -------------------------------------------------------


class CmdlineSampler:
    """Reads every process's argv (as `ps` does) until stopped."""

    def __init__(self) -> None:
        self.samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ps = shutil.which("ps")
        while not self._stop.is_set():
            if ps:
                self.samples.append(
                    subprocess.run(
                        [ps, "-eww", "-o", "pid=,args="],
                        capture_output=True,
                        text=True,
                        check=False,
                    ).stdout
                )
            lines = []
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    try:
                        lines.append(
                            (proc / "cmdline")
                            .read_bytes()
                            .replace(b"\0", b" ")
                            .decode("utf-8", "replace")
                        )
                    except OSError:
                        continue
            self.samples.append("\n".join(lines))
            self._stop.wait(0.02)

    def __enter__(self) -> CmdlineSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def git_http(tmp_path: Path) -> Iterator[Callable[..., GitHttpServer]]:
    servers: list[GitHttpServer] = []

    def make(**kwargs: Any) -> GitHttpServer:
        server = GitHttpServer(tmp_path / "served", **kwargs)
        servers.append(server)
        return server

    (tmp_path / "served").mkdir()
    yield make
    for server in servers:
        server.close()


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()


def test_token_travels_to_http_mirror_and_leaks_nowhere(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    tmp_path: Path,
    git_http: Callable[..., GitHttpServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = fake_token()
    encoded = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    publish_branches(remote)
    target = bare(tmp_path / "served" / "mirror.git")
    server = git_http(authorization=basic(token), delay_s=1.0)
    monkeypatch.setenv("MIRROR_TOKEN", token)
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "mirror": {"url": server.url("mirror.git"), "token_env": "MIRROR_TOKEN"},
            }
        },
    )
    service: Service = open_service(settings)
    job, _ = service.run("site", sha=remote.deployed())

    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events, CmdlineSampler() as sampler:
        Worker(service).work(burst=True)

    ended = service.store.job(job.id)
    assert ended.status == Status.SUCCEEDED, ended.error
    assert {s.name: s.status for s in ended.steps}["mirror"] == StepStatus.SUCCEEDED
    assert refs(target) == refs(remote.origin)
    assert server.authorized > 0  # the token arrived, and was checked on every request
    # The sampler saw the push in flight (the server held it for a second)...
    assert any("deployhook-mirror" in sample for sample in sampler.samples)
    # ...and the token in no process's argv, in no form.
    for secret in (token, encoded):
        assert not any(secret in sample for sample in sampler.samples)
        for path in settings.data_dir.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        for path in (remote.checkout / ".git").rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
        assert secret not in repr(events)
        assert secret not in caplog.text
        output = "\n".join(r.line for r in service.store.log_lines(job.id))
        assert secret not in output
    assert "mirror: " in output


def test_wrong_token_is_refused_and_fails_only_the_step(
    settings: Settings,
    remote: Remote,
    *,
    open_service: Any,
    tmp_path: Path,
    git_http: Callable[..., GitHttpServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare(tmp_path / "served" / "mirror.git")
    server = git_http(authorization=basic(fake_token()))
    monkeypatch.setenv("MIRROR_TOKEN", fake_token())
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "health_timeout": 0,
                "mirror": {"url": server.url("mirror.git"), "token_env": "MIRROR_TOKEN"},
            }
        },
    )
    service: Service = open_service(settings)
    job, _ = service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    ended = service.store.job(job.id)
    assert ended.status == Status.SUCCEEDED
    step = {s.name: s for s in ended.steps}["mirror"]
    assert step.status == StepStatus.FAILED
    assert server.refused > 0 and server.authorized == 0


def test_sha256_repositories_are_mirrored(tmp_path: Path) -> None:
    origin, dev, checkout = tmp_path / "o.git", tmp_path / "dev", tmp_path / "co"
    git(tmp_path, "init", "-q", "--bare", "--object-format=sha256", str(origin))
    git(tmp_path, "init", "-q", "--object-format=sha256", "-b", "main", str(dev))
    (dev / "a.txt").write_text("a\n")
    git(dev, "add", "a.txt")
    git(dev, "commit", "-q", "-m", "a")
    git(dev, "tag", "v1")
    git(dev, "push", "-q", str(origin), "main", "v1")
    git(tmp_path, "clone", "-q", str(origin), str(checkout))
    target = tmp_path / "m.git"
    git(tmp_path, "init", "-q", "--bare", "--object-format=sha256", str(target))
    repo = Repo(name="site", path=checkout, mirror=Mirror(url=f"file://{target}"))
    mirror.push(repo, data_dir=tmp_path / "data", timeout=lambda: 60, output=lambda _l: None)
    assert refs(target) == refs(origin)
    assert len(refs(target)["refs/heads/main"]) == 64
