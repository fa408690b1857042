"""`deployhook repos ...` on real files, real git checkouts and a real store."""

from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from deployhook import registry
from deployhook.cli import main
from deployhook.config import Settings
from deployhook.web import create_app
from tests import needs
from tests.cli_logging import restore_logging  # noqa: F401 - an autouse fixture
from tests.conftest import write_registry
from tests.helpers import SECRET, FakeDocker, FakeEngine, Remote, git, make_remote

EXAMPLE = Path(__file__).resolve().parents[2] / "repos.yml"


def run(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke the CLI the way a shell would, with the settings as DEPLOYHOOK_* variables."""
    environ = {**settings.to_environ(), **(env or {})}
    return CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- add / remove: the file keeps its comments and layout ---------------------------------


def test_add_then_remove_returns_the_file_byte_for_byte(settings: Settings, tmp_path: Path) -> None:
    target = make_remote(tmp_path, "blog")
    settings.registry.write_bytes(EXAMPLE.read_bytes())
    before = settings.registry.read_bytes()
    added = run(
        settings,
        "repos",
        "add",
        "blog",
        "--path",
        str(target.checkout),
        "--branch",
        "production",
        "--source",
        "jeff/blog",
        "--secret-env",
        "BLOG_SECRET",
        "--compose-file",
        "docker-compose.yml",
        "--compose-file",
        "prod.yml",
        "--project-name",
        "blog",
        "--service",
        "web",
        "--service",
        "db",
        "--timeout",
        "300",
        "--health-timeout",
        "0",
        "--no-rollback",
        "--on-local-changes",
        "reset",
    )
    assert added.exit_code == 0, added.output
    text = settings.registry.read_text()
    # The example's `repos: {}` becomes the block of the one entry, in place: every
    # comment above it (the commented examples too) stays as it was.
    head, tail = before.decode().split("repos: {}\n")
    assert "# A site whose webhook secret" in head and "# deployhook's registry" in head
    assert (
        text
        == head
        + (
            "repos:\n  blog:\n"
            f"    path: {target.checkout}\n"
            "    branch: production\n    source: jeff/blog\n"
            "    secret_env: BLOG_SECRET\n"
            "    compose_files: [docker-compose.yml, prod.yml]\n"
            "    project_name: blog\n    services: [web, db]\n    timeout: 300\n"
            "    health_timeout: 0\n    rollback: false\n"
            "    on_local_changes: reset\n"
        )
        + tail
    )
    blog = registry.load(settings.registry)["blog"]
    assert (blog.branch, blog.services, blog.rollback, blog.timeout) == (
        "production",
        ("web", "db"),
        False,
        300,
    )
    removed = run(settings, "repos", "remove", "blog")
    assert removed.exit_code == 0, removed.output
    assert settings.registry.read_bytes() == before


SHAPES = {
    "empty mapping": "repos: {}\n",
    "empty mapping with a comment": "repos: {}   # none yet\n# the end\n",
    "defaults after repos": (
        "# top\nrepos:\n  a:\n    path: /srv/a\n"
        "    compose_files: [x.yml]   # flow\n"
        "# about the defaults\ndefaults:\n  branch: main\n"
    ),
    "defaults before, spaced entries, closing comment": (
        "defaults:\n  timeout: 600   # ten minutes\n\nrepos:   # on this host\n"
        "  # the first\n  a:\n    path: /srv/a\n    services:\n      - web   # the site\n"
        "      - db\n\n  # the second\n  b:\n    path: /srv/b\n    mirror:\n"
        "      url: https://example.com/b.git   # GitHub\n\n# the end\n"
    ),
    "four-space indent": "repos:\n    a:\n        path: /srv/a\n        services:\n"
    "        -   web\n",
    "document start after a comment": "# the registry\n---\nrepos:\n  a:\n    path: /srv/a\n",
    "quoted keys and values": "repos:\n  'a':\n    path: \"/srv/a\"\n    branch: 'main'\n",
    "flow-style entry": "repos:\n  a: {path: /srv/a, branch: main}\n",
}


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
def test_add_and_remove_keep_every_shape_of_file(
    settings: Settings, remote: Remote, shape: str
) -> None:
    settings.registry.write_text(SHAPES[shape])
    assert (
        run(
            settings, "repos", "add", "new", "--path", str(remote.checkout), "--service", "web"
        ).exit_code
        == 0
    )
    text = settings.registry.read_text()
    for line in SHAPES[shape].splitlines():
        if "#" in line:
            assert line.split("#", 1)[1] in text  # every comment survives
    repos = registry.load(settings.registry)
    assert repos["new"].path == remote.checkout
    assert repos["new"].services == ("web",)
    if "timeout: 600" in SHAPES[shape]:
        assert repos["new"].timeout == 600  # the defaults block applies to the new repo
    assert run(settings, "repos", "remove", "new").exit_code == 0
    assert settings.registry.read_text() == SHAPES[shape]


def test_remove_first_entry_keeps_the_next_entrys_comment(settings: Settings) -> None:
    settings.registry.write_text(
        "repos:\n  # about a\n  a:\n    path: /srv/a\n\n"
        "  # about b\n  b:\n    path: /srv/b   # b's path\n"
    )
    result = run(settings, "repos", "remove", "a")
    assert result.exit_code == 0, result.output
    assert (
        settings.registry.read_text()
        == "repos:\n  # about b\n  b:\n    path: /srv/b   # b's path\n"
    )


def test_add_to_file_without_repos_key_or_only_comments(settings: Settings, remote: Remote) -> None:
    for text in ("# nothing yet\n", "defaults:\n  branch: main\n", ""):
        settings.registry.write_text(text)
        assert run(settings, "repos", "add", "site", "--path", str(remote.checkout)).exit_code == 0
        assert settings.registry.read_text().startswith(text)
        assert list(registry.load(settings.registry)) == ["site"]


def test_relative_path_is_made_absolute_from_the_current_directory(
    settings: Settings, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.registry.write_text("repos: {}\n")
    monkeypatch.chdir(remote.checkout.parent)
    result = run(settings, "repos", "add", "site", "--path", remote.checkout.name)
    assert result.exit_code == 0, result.output
    assert f"path: {remote.checkout}\n" in settings.registry.read_text()


def test_add_keeps_mode_and_owner(settings: Settings, remote: Remote) -> None:
    settings.registry.write_text("repos: {}\n")
    settings.registry.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(settings.registry, 4321, 4322)
    assert run(settings, "repos", "add", "site", "--path", str(remote.checkout)).exit_code == 0
    st = settings.registry.stat()
    assert st.st_mode & 0o7777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (4321, 4322)


def test_add_through_a_symlink_edits_the_real_file(
    settings: Settings, remote: Remote, tmp_path: Path
) -> None:
    real = tmp_path / "etc" / "repos.yml"
    real.parent.mkdir()
    real.write_text("repos: {}\n")
    settings.registry.unlink()
    settings.registry.symlink_to(real)
    assert run(settings, "repos", "add", "site", "--path", str(remote.checkout)).exit_code == 0
    assert settings.registry.is_symlink()
    assert "site:" in real.read_text()


# -- refusals: exit 2, one line naming the file and the key, the file untouched ---------------


@pytest.fixture
def two_repos(settings: Settings, remote: Remote, tmp_path: Path) -> Remote:
    other = make_remote(tmp_path, "other")
    settings.registry.write_text(
        f"# keep me\nrepos:\n  site:\n    path: {remote.checkout}\n"
        f"  other:\n    path: {other.checkout}\n"
    )
    return other


def refused(settings: Settings, *args: str) -> str:
    before = settings.registry.read_bytes()
    stamp = settings.registry.stat().st_mtime_ns
    result = run(settings, *args)
    assert result.exit_code == 2, result.output
    assert settings.registry.read_bytes() == before
    assert settings.registry.stat().st_mtime_ns == stamp
    assert (
        sorted(
            p.name for p in settings.registry.parent.iterdir() if p.name.startswith(".repos.yml")
        )
        == []
    )
    return one_error_line(result)


def test_add_refuses_a_duplicate(settings: Settings, two_repos: Remote, tmp_path: Path) -> None:
    third = make_remote(tmp_path, "third")
    line = refused(settings, "repos", "add", "site", "--path", str(third.checkout))
    assert str(settings.registry) in line
    assert "repos.site" in line
    assert "already exists" in line


@pytest.mark.parametrize("name", ["-dash-first", "has space", "..", "a/b", "ünïcode"])
def test_add_refuses_an_invalid_name(
    settings: Settings, two_repos: Remote, tmp_path: Path, name: str
) -> None:
    third = make_remote(tmp_path, "third")
    line = refused(settings, "repos", "add", "--path", str(third.checkout), "--", name)
    assert str(settings.registry) in line
    assert "invalid name" in line


def test_add_refuses_a_path_that_does_not_exist(
    settings: Settings, two_repos: Remote, tmp_path: Path
) -> None:
    line = refused(settings, "repos", "add", "new", "--path", str(tmp_path / "nope"))
    assert f"{settings.registry}: repos.new.path:" in line
    assert "does not exist" in line


def test_add_refuses_a_directory_that_is_no_git_checkout(
    settings: Settings, two_repos: Remote, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()
    line = refused(settings, "repos", "add", "new", "--path", str(tmp_path / "plain"))
    assert "repos.new.path" in line
    assert "not a git checkout" in line


def test_add_refuses_a_second_repo_on_the_same_path(
    settings: Settings, two_repos: Remote, remote: Remote
) -> None:
    line = refused(settings, "repos", "add", "again", "--path", str(remote.checkout))
    assert "repos.again.path" in line
    assert "already the path of repo 'site'" in line


def test_add_refuses_both_secret_options(
    settings: Settings, two_repos: Remote, tmp_path: Path
) -> None:
    third = make_remote(tmp_path, "third")
    result = run(
        settings,
        "repos",
        "add",
        "new",
        "--path",
        str(third.checkout),
        "--secret-env",
        "A",
        "--secret-file",
        "/run/secrets/a",
    )
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_add_refuses_an_invalid_secret_env_name(
    settings: Settings, two_repos: Remote, tmp_path: Path
) -> None:
    third = make_remote(tmp_path, "third")
    line = refused(
        settings, "repos", "add", "new", "--path", str(third.checkout), "--secret-env", "NOT-A-VAR"
    )
    assert "repos.new.secret_env" in line


def test_add_refuses_to_edit_an_already_invalid_file(settings: Settings, remote: Remote) -> None:
    settings.registry.write_text("repos:\n  a:\n    path: /srv/a\n    tiemout: 5\n")
    line = refused(settings, "repos", "add", "new", "--path", str(remote.checkout))
    assert "repos.a.tiemout" in line


def test_remove_refuses_an_unknown_repo(settings: Settings, two_repos: Remote) -> None:
    line = refused(settings, "repos", "remove", "ghost")
    assert str(settings.registry) in line
    assert "'ghost'" in line


def test_add_to_a_missing_registry_file_is_refused(settings: Settings, remote: Remote) -> None:
    settings.registry.unlink()
    result = run(settings, "repos", "add", "site", "--path", str(remote.checkout))
    assert result.exit_code == 2
    assert "no such file" in one_error_line(result)
    assert not settings.registry.exists()


def test_failed_rename_leaves_the_old_file_and_no_temp_file(
    settings: Settings, two_repos: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    third = make_remote(tmp_path, "third")
    before = settings.registry.read_bytes()

    def crash(src: Any, dst: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", crash)  # the OS boundary: the rename itself fails
    result = run(settings, "repos", "add", "third", "--path", str(third.checkout))
    assert result.exit_code == 1
    assert "not changed" in one_error_line(result)
    assert settings.registry.read_bytes() == before
    assert (
        sorted(p.name for p in settings.registry.parent.iterdir() if p.name.startswith(".")) == []
    )


# -- the running app sees the change without a restart --------------------------------------


def test_running_app_picks_up_added_and_removed_repo(
    settings: Settings, service: Any, tmp_path: Path
) -> None:
    app = create_app(settings, service_=service, configure_logging=False)
    client = app.test_client()
    blog = make_remote(tmp_path, "blog")
    assert client.get("/deploy/blog").status_code == 404
    assert run(settings, "repos", "add", "blog", "--path", str(blog.checkout)).exit_code == 0
    answer = client.get("/deploy/blog")
    assert answer.status_code == 200
    assert answer.get_json()["branch"] == "main"
    assert run(settings, "repos", "remove", "blog").exit_code == 0
    assert client.get("/deploy/blog").status_code == 404
    assert client.get("/deploy/site").status_code == 200


# -- list -----------------------------------------------------------------------------------


def test_list_shows_each_repo_with_its_last_status(
    settings: Settings, service: Any, remote: Remote, tmp_path: Path
) -> None:
    from deployhook.deploy.worker import Worker

    other = make_remote(tmp_path, "other")
    write_registry(
        settings.registry,
        {
            "site": {"path": str(remote.checkout), "health_timeout": 0},
            "other": {"path": str(other.checkout), "branch": "main"},
        },
    )
    sha = remote.commit_and_push({"index.html": "v2\n"})
    service.run("site")
    Worker(service).work(burst=True)
    result = run(settings, "repos", "list")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:4] == ["site", "main", str(remote.checkout), "succeeded"]
    assert sha[:12] in lines[0]
    assert lines[1].split()[:3] == ["other", "main", str(other.checkout)]
    assert lines[1].endswith("never deployed")


def test_list_json_has_each_entry_and_its_state(
    settings: Settings, service: Any, remote: Remote, tmp_path: Path
) -> None:
    import json

    from deployhook.deploy.worker import Worker

    service.run("site", sha=remote.deployed())
    Worker(service).work(burst=True)
    result = run(settings, "repos", "list", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    [site] = doc["repos"]
    assert doc["registry_error"] is None
    assert (site["repo"], site["path"], site["source"], site["status"], site["mode"]) == (
        "site",
        str(remote.checkout),
        ["jeff/site"],
        "succeeded",
        "compose",
    )
    assert site["last_job"]["sha"] == remote.deployed()
    write_registry(settings.registry, {})
    assert json.loads(run(settings, "repos", "list", "--json").stdout)["repos"] == []


def test_list_of_an_invalid_registry_exits_2(settings: Settings) -> None:
    settings.registry.write_text("repos:\n  a:\n    branch: main\n")
    result = run(settings, "repos", "list")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(settings.registry) in line
    assert "repos.a.path" in line


# -- check ----------------------------------------------------------------------------------


def test_check_passes_a_good_setup(
    settings: Settings, remote: Remote, fake_docker: FakeDocker, fake_engine: FakeEngine
) -> None:
    result = run(settings, "repos", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "1 repo OK (docker engine 99.0.0-fake (API 1.43), Docker Compose version v2.99.0-fake)"
    )
    [call] = fake_docker.calls()  # (`compose version` answers without a record)
    assert call["argv"] == ["compose", "config", "-q"]
    assert call["cwd"] == str(remote.checkout)
    assert any(path.endswith("/_ping") for path in fake_engine.requests)


def test_check_says_when_the_engine_does_not_answer(
    settings: Settings, fake_docker: FakeDocker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first deploy would fail with "Cannot connect to the Docker daemon": say it now."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    result = run(settings, "repos", "check")
    assert result.exit_code == 2
    assert one_error_line(result) == (
        f"this host: docker: docker engine unreachable: unix://{tmp_path}/no-engine.sock: "
        "No such file or directory (every deploy needs it)"
    )


def test_check_says_when_the_compose_command_does_not_run(
    settings: Settings, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    missing = tmp_path / "bin" / "docker-compose"
    result = run(settings, "repos", "check", env={"DEPLOYHOOK_COMPOSE": str(missing)})
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == (
        f"this host: compose: cannot run `{missing} version`: No such file or directory"
    )
    assert lines[1:] == [
        f"{settings.registry}: repos.site: compose: cannot run {missing}: No such file or directory"
    ]


def test_check_with_no_repos_still_checks_the_host(
    settings: Settings, fake_docker: FakeDocker, fake_engine: FakeEngine
) -> None:
    settings.registry.write_text("repos: {}\n")
    result = run(settings, "repos", "check")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"no repos in {settings.registry} yet (docker engine ")
    assert "`deployhook repos add NAME --path /path/to/checkout`" in result.stdout


def test_check_says_when_this_user_cannot_write_the_checkout(
    settings: Settings, remote: Remote, fake_docker: FakeDocker, fake_engine: FakeEngine
) -> None:
    """A checkout owned by another user: git could neither fetch nor check out."""
    objects = remote.checkout / ".git" / "objects"
    with unwritable(objects):
        result = run(settings, "repos", "check")
    assert result.exit_code == 2
    user = f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
    assert one_error_line(result) == (
        f"{settings.registry}: repos.site: path: {objects} is not writable by {user}: git "
        "cannot fetch or check out there (run deployhook as the checkout's owner, see "
        "docs/install.md)"
    )
    assert run(settings, "repos", "check").exit_code == 0


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """directory made unwritable for this user: by its mode, or for root (who writes
    anywhere) by the immutable flag."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"as root, needs chattr +i (e2fsprogs) on an ext4 or xfs tmp: {done.stderr}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_check_reports_one_line_per_problem(
    settings: Settings,
    remote: Remote,
    fake_docker: FakeDocker,
    fake_engine: FakeEngine,
    tmp_path: Path,
) -> None:
    wrong_branch = make_remote(tmp_path, "wrongbranch")
    no_compose = make_remote(tmp_path, "nocompose", files={"index.html": "x\n"})
    bad_compose = make_remote(tmp_path, "badcompose")
    (tmp_path / "plain").mkdir()
    write_registry(
        settings.registry,
        {
            "gone": {"path": str(tmp_path / "gone")},
            "plain": {"path": str(tmp_path / "plain")},
            "wrongbranch": {"path": str(wrong_branch.checkout), "branch": "nope"},
            "nosecret": {"path": str(remote.checkout), "secret_env": "UNSET_SECRET_VAR"},
            "nocompose": {"path": str(no_compose.checkout)},
            "missingfile": {"path": str(bad_compose.checkout), "compose_files": ["prod.yml"]},
        },
    )
    result = run(settings, "repos", "check")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    prefix = f"{settings.registry}: repos."
    assert all(line.startswith(prefix) for line in lines), lines
    by_repo = {line.removeprefix(prefix).split(":", 1)[0]: line for line in lines}
    assert len(lines) == len(by_repo) == 6, lines
    assert "does not exist" in by_repo["gone"]
    assert "not a git checkout" in by_repo["plain"]
    assert "branch nope not found on remote origin" in by_repo["wrongbranch"]
    assert "UNSET_SECRET_VAR" in by_repo["nosecret"]
    assert "no compose.yaml" in by_repo["nocompose"]
    assert "prod.yml not found" in by_repo["missingfile"]


def test_check_reports_a_rejected_compose_file_without_its_output(
    settings: Settings, fake_docker: FakeDocker, fake_engine: FakeEngine
) -> None:
    fake_docker.set(fail=True)
    result = run(settings, "repos", "check")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "rejects the project (exit 1)" in line
    assert "fake compose" not in result.output  # compose's own output is never shown


def test_check_of_an_invalid_registry_is_one_line(settings: Settings) -> None:
    settings.registry.write_text("repos:\n  a:\n    path: /srv/a\n  a:\n    path: /srv/b\n")
    result = run(settings, "repos", "check")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert str(settings.registry) in line
    assert "duplicate key 'a'" in line


def test_check_with_real_compose_never_prints_interpolated_secrets(
    settings: Settings, tmp_path: Path, fake_engine: FakeEngine
) -> None:
    needs.compose_v2()
    leak = "hunter2-do-not-print-me"
    good = make_remote(
        tmp_path,
        "good",
        files={
            "docker-compose.yml": "services:\n  web:\n    image: busybox\n"
            "    environment:\n      TOKEN: ${TOKEN}\n"
        },
    )
    (good.checkout / ".env").write_text(f"TOKEN={leak}\n")
    broken = make_remote(
        tmp_path,
        "broken",
        files={
            "docker-compose.yml": 'services:\n  web:\n    image: busybox\n    ports: ["${TOKEN}"]\n'
        },
    )
    (broken.checkout / ".env").write_text(f"TOKEN={leak}\n")
    write_registry(
        settings.registry,
        {"good": {"path": str(good.checkout)}, "broken": {"path": str(broken.checkout)}},
    )
    result = run(settings, "repos", "check", env={"DEPLOYHOOK_COMPOSE": "docker compose"})
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "repos.broken: compose:" in line
    assert leak not in result.output
    git(good.checkout, "status")  # the checkout is untouched by the check
    assert SECRET not in result.output


def test_concurrent_adds_lose_no_entry(settings: Settings) -> None:
    """Each edit holds the file's lock and re-reads it: no add overwrites another."""
    import threading

    from deployhook.registry import edit as registry_edit

    settings.registry.write_text("# shared\nrepos: {}\n")
    names = [f"site{i}" for i in range(8)]
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            registry_edit.add_repo(settings.registry, name, {"path": f"/srv/{name}"})
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(registry.load(settings.registry)) == sorted(names)
    assert settings.registry.read_text().startswith("# shared\n")


# -- remove --down: the stack goes too ---------------------------------------------------

COMMENTED = """\
# deployhook's registry
repos:
  # the website (jeff/site)
  site:
    path: {site}
    source: jeff/site   # from Gitea
    health_timeout: 0
    rollback: false

  # the blog stays
  blog:
    path: /srv/blog     # its own checkout
"""


def test_remove_down_runs_compose_down_and_keeps_the_files_comments(
    settings: Settings, remote: Remote, fake_docker: FakeDocker, service: Any
) -> None:
    settings.registry.write_text(COMMENTED.format(site=remote.checkout))
    result = run(settings, "repos", "remove", "site", "--down")
    assert result.exit_code == 0, result.output
    assert settings.registry.read_text() == (
        "# deployhook's registry\nrepos:\n  # the blog stays\n  blog:\n"
        "    path: /srv/blog     # its own checkout\n"
    )
    [call] = fake_docker.starts()
    assert call["argv"] == ["compose", "down"]  # no -v: volumes are kept
    assert call["cwd"] == str(remote.checkout)
    # the children's environment of a deploy: none of deployhook's secrets
    assert "DEPLOYHOOK_SECRET" not in call["env"] and "DEPLOYHOOK_ADMIN_TOKEN" not in call["env"]
    assert "DEPLOYHOOK_SECRET" in settings.to_environ()
    assert result.stdout.splitlines() == [
        f"removed site from {settings.registry} (its checkout, volumes and history are kept)",
        f"$ {fake_docker.path} compose down",
        "fake compose: compose down",
        "site is down",
    ]


def test_remove_down_uses_the_entrys_files_and_project(
    settings: Settings, remote: Remote, fake_docker: FakeDocker
) -> None:
    write_registry(
        settings.registry,
        {
            "site": {
                "path": str(remote.checkout),
                "compose_files": ["docker-compose.yml", "prod.yml"],
                "project_name": "mysite",
                "remove_orphans": True,
            }
        },
    )
    assert run(settings, "repos", "remove", "site", "--down").exit_code == 0
    [call] = fake_docker.starts()
    assert call["argv"] == [
        "compose",
        "-f",
        "docker-compose.yml",
        "-f",
        "prod.yml",
        "-p",
        "mysite",
        "down",
        "--remove-orphans",
    ]


def test_remove_down_cancels_the_queued_and_running_jobs_first(
    settings: Settings, remote: Remote, fake_docker: FakeDocker, service: Any
) -> None:
    import threading
    import time

    from deployhook.deploy.worker import Worker
    from deployhook.models import Status

    fake_docker.set(sleep=60)
    worker = Worker(service)
    thread = threading.Thread(target=worker.work, name="test-worker")
    thread.start()
    try:
        running, _ = service.run("site", sha=remote.deployed())
        deadline = time.monotonic() + 30
        while not fake_docker.starts() and time.monotonic() < deadline:
            time.sleep(0.05)
        queued, _ = service.run("site", sha=remote.commit_and_push({"index.html": "v2\n"}))
        assert queued.status == Status.QUEUED
        fake_docker.set()
        result = run(settings, "repos", "remove", "site", "--down")
    finally:
        worker.stop()
        thread.join(timeout=30)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert f"cancelled job {queued.id} (manual at {queued.sha[:12]})" in lines
    assert f"asked the worker to stop job {running.id}; waiting for it to end" in lines
    assert lines[-1] == "site is down"
    assert service.job(running.id).status == Status.CANCELLED
    assert service.job(queued.id).status == Status.CANCELLED
    up, down = fake_docker.starts()
    assert "up" in up["argv"] and down["argv"] == ["compose", "down"]
    assert down["start"] >= (service.job(running.id).finished_at or 0)  # after it ended


def test_remove_down_waits_no_longer_than_it_may(
    settings: Settings,
    remote: Remote,
    fake_docker: FakeDocker,
    service: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job whose worker is gone never ends by itself: compose down is not run beside it."""
    import deployhook.service

    monkeypatch.setattr(deployhook.service, "TAKE_DOWN_WAIT_S", 0.5)
    job, _ = service.run("site", sha=remote.deployed())
    service.store.claim(worker="a-worker-that-died", node="", lease_s=300)
    result = run(settings, "repos", "remove", "site", "--down")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"deployhook: job {job.id} of site is still running after 0.5 s: compose down not "
        "run (is a deploy worker alive?)"
    )
    assert fake_docker.starts() == []
    assert "site" not in registry.load(settings.registry)  # removed all the same


def test_remove_down_failing_compose_exits_1(
    settings: Settings, remote: Remote, fake_docker: FakeDocker
) -> None:
    fake_docker.set(fail=True)
    result = run(settings, "repos", "remove", "site", "--down")
    assert result.exit_code == 1
    assert one_error_line(result) == (
        f"deployhook: compose down exited with 1 in {remote.checkout}"
    )


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"mode": "swarm"}, "repos.site.mode: swarm: --down runs compose down"),
        ({"path": "/nonexistent/site"}, "repos.site.path: /nonexistent/site does not exist"),
    ],
)
def test_remove_down_refuses_before_changing_anything(
    settings: Settings,
    remote: Remote,
    fake_docker: FakeDocker,
    entry: dict[str, str],
    problem: str,
) -> None:
    write_registry(settings.registry, {"site": {"path": str(remote.checkout), **entry}})
    before = settings.registry.read_bytes()
    result = run(settings, "repos", "remove", "site", "--down")
    assert result.exit_code == 2
    assert problem in one_error_line(result)
    assert settings.registry.read_bytes() == before
    assert fake_docker.starts() == []
