"""Settings: defaults, the environment, files (DEPLOYHOOK_<NAME>_FILE, as Docker and Compose
secrets provide them), and where the registry and the store are found (docs/settings.md)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployhook import redact
from deployhook.cli import main
from deployhook.config import REGISTRY_CANDIDATES, Settings, find_registry, registry_not_found
from deployhook.errors import ConfigError
from tests.conftest import write_registry
from tests.helpers import SECRET, gitea_headers, gitea_push_body, make_fake_docker, make_remote
from tests.server import serve

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_candidates_are_the_documented_list_in_its_order() -> None:
    assert (
        Path("config/repos.yml"),
        Path("repos.yml"),
        Path("/etc/deployhook/repos.yml"),
    ) == REGISTRY_CANDIDATES
    section = DOCS.read_text().split("## DEPLOYHOOK_REGISTRY", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\d\. `([^`]+)`", section, flags=re.MULTILINE)
    assert listed == ["./config/repos.yml", "./repos.yml", "/etc/deployhook/repos.yml"]


def test_first_existing_candidate_wins(tmp_path: Path) -> None:
    system = tmp_path / "etc" / "repos.yml"
    candidates = (Path("config/repos.yml"), Path("repos.yml"), system)
    here = tmp_path / "here"
    here.mkdir()
    assert find_registry(here, candidates) is None
    system.parent.mkdir()
    system.write_text("repos: {}\n")
    assert find_registry(here, candidates) == system
    (here / "repos.yml").write_text("repos: {}\n")
    assert find_registry(here, candidates) == here / "repos.yml"
    (here / "config").mkdir()
    (here / "config" / "repos.yml").mkdir()  # a directory is not a registry
    assert find_registry(here, candidates) == here / "repos.yml"
    (here / "config" / "repos.yml").rmdir()
    (here / "config" / "repos.yml").write_text("repos: {}\n")
    assert find_registry(here, candidates) == here / "config" / "repos.yml"


def test_settings_find_the_registry_from_the_cwd_and_the_store_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "repos.yml").write_text("repos: {}\n")
    (tmp_path / "repos.yml").write_text("repos: {}\n")  # the tracked example: not used
    monkeypatch.chdir(tmp_path)
    settings = Settings.load({})
    assert settings.registry == tmp_path / "config" / "repos.yml"
    assert settings.data_dir == tmp_path / "config" / "data"
    # Handed on to serve's children as absolute paths: they agree whatever their cwd.
    env = settings.to_environ()
    assert env["DEPLOYHOOK_REGISTRY"] == str(tmp_path / "config" / "repos.yml")
    assert env["DEPLOYHOOK_DATA_DIR"] == str(tmp_path / "config" / "data")


def test_a_given_registry_puts_the_store_beside_it_unless_the_data_dir_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    given = Settings.load({"DEPLOYHOOK_REGISTRY": "/srv/deploy/repos.yml"})
    assert (given.registry, given.data_dir) == (
        Path("/srv/deploy/repos.yml"),
        Path("/srv/deploy/data"),
    )
    both = Settings.load(
        {"DEPLOYHOOK_REGISTRY": "/srv/deploy/repos.yml", "DEPLOYHOOK_DATA_DIR": "/var/lib/dh"}
    )
    assert both.data_dir == Path("/var/lib/dh")
    flag = Settings.load({}, registry=tmp_path / "r.yml")
    assert flag.data_dir == tmp_path / "data"


def test_nothing_found_keeps_the_old_relative_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if Path("/etc/deployhook/repos.yml").exists():
        pytest.skip("this machine has /etc/deployhook/repos.yml")
    settings = Settings.load({})
    assert (settings.registry, settings.data_dir) == (Path("repos.yml"), Path("data"))
    message = registry_not_found()
    for where in (tmp_path / "config/repos.yml", tmp_path / "repos.yml"):
        assert str(where) in message
    assert "/etc/deployhook/repos.yml" in message and "DEPLOYHOOK_REGISTRY" in message


TOKEN = "admin-token-from-a-file-0123456789"
DB_URL = "postgresql://deployhook:p4ss-from-a-file@db.example.com/deployhook"


def secret_file(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / "run-secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(content)
    path.chmod(0o600)
    return path


@pytest.mark.parametrize(
    ("setting", "content", "value"),
    [
        ("secret", f"  {SECRET}\n", SECRET),
        ("admin_token", f"{TOKEN}\n", TOKEN),
        ("database_url", f"{DB_URL}\r\n", DB_URL),
    ],
)
def test_a_file_gives_the_value_stripped_and_secret(
    tmp_path: Path, setting: str, content: str, value: str
) -> None:
    path = secret_file(tmp_path, setting, content)
    name = f"DEPLOYHOOK_{setting.upper()}_FILE"
    settings = Settings.load({name: str(path)})
    assert getattr(settings, setting) == value
    assert redact.mask(f"it is {value}") == "it is [redacted]"
    assert value not in repr(settings)


def test_rotation_lines_in_a_secret_file_stay_apart(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "s", f"\n{SECRET}\nanother-secret-of-24-chars\n\n")
    settings = Settings.load({"DEPLOYHOOK_SECRET_FILE": str(path)})
    assert settings.secret == f"{SECRET}\nanother-secret-of-24-chars"


@pytest.mark.parametrize("setting", ["SECRET", "ADMIN_TOKEN", "DATABASE_URL"])
def test_both_forms_at_once_is_one_line_naming_both(tmp_path: Path, setting: str) -> None:
    path = secret_file(tmp_path, "x", DB_URL if setting == "DATABASE_URL" else TOKEN)
    env = {f"DEPLOYHOOK_{setting}": TOKEN, f"DEPLOYHOOK_{setting}_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        Settings.load(env)
    assert str(caught.value) == (
        f"DEPLOYHOOK_{setting} and DEPLOYHOOK_{setting}_FILE are both set: "
        "give the value or the file, not both"
    )


def test_an_empty_variable_beside_the_file_is_unset(tmp_path: Path) -> None:
    """`.env` copied from `.env.example` holds `DEPLOYHOOK_SECRET=`: that is no value."""
    path = secret_file(tmp_path, "s", SECRET)
    env = {"DEPLOYHOOK_SECRET": "", "DEPLOYHOOK_SECRET_FILE": str(path)}
    assert Settings.load(env).secret == SECRET
    assert Settings.load({"DEPLOYHOOK_SECRET": SECRET, "DEPLOYHOOK_SECRET_FILE": ""}).secret == (
        SECRET
    )


def test_unreadable_empty_or_invalid_files_name_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(
        ConfigError, match=r"^DEPLOYHOOK_SECRET_FILE: .*nope cannot be read: No such"
    ):
        Settings.load({"DEPLOYHOOK_SECRET_FILE": str(missing)})
    empty = secret_file(tmp_path, "empty", " \n")
    with pytest.raises(ConfigError, match=r"^DEPLOYHOOK_ADMIN_TOKEN_FILE: .*empty is empty$"):
        Settings.load({"DEPLOYHOOK_ADMIN_TOKEN_FILE": str(empty)})
    short = secret_file(tmp_path, "short", "short-token")
    with pytest.raises(ConfigError, match=r"^DEPLOYHOOK_ADMIN_TOKEN_FILE: 11 characters"):
        Settings.load({"DEPLOYHOOK_ADMIN_TOKEN_FILE": str(short)})
    mysql = secret_file(tmp_path, "db", "mysql://root:hunter2-hunter2@db/x")
    with pytest.raises(ConfigError) as caught:
        Settings.load({"DEPLOYHOOK_DATABASE_URL_FILE": str(mysql)})
    assert str(caught.value).startswith("DEPLOYHOOK_DATABASE_URL_FILE: only postgresql://")
    assert "hunter2" not in str(caught.value)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        Settings.load({"DEPLOYHOOK_SECRET_FILE": str(binary)})


def test_children_get_the_path_not_the_value(tmp_path: Path) -> None:
    """serve starts gunicorn and the worker with its settings as variables: from a file,
    that is the file's path (the value as well would be 'both set' in the child)."""
    path = secret_file(tmp_path, "token", TOKEN)
    env = {"DEPLOYHOOK_ADMIN_TOKEN_FILE": str(path), "DEPLOYHOOK_SECRET": SECRET}
    settings = Settings.load(env)
    rendered = settings.to_environ()
    assert rendered["DEPLOYHOOK_ADMIN_TOKEN_FILE"] == str(path)
    assert "DEPLOYHOOK_ADMIN_TOKEN" not in rendered
    assert rendered["DEPLOYHOOK_SECRET"] == SECRET
    again = Settings.load({**env, **rendered})
    assert (again.admin_token, again.secret) == (TOKEN, SECRET)
    given = Settings.load(env, admin_token="a-token-given-outright-42")
    assert given.to_environ()["DEPLOYHOOK_ADMIN_TOKEN"] == "a-token-given-outright-42"
    assert "DEPLOYHOOK_ADMIN_TOKEN_FILE" not in given.to_environ()


def test_the_cli_says_both_set_in_one_line_and_exits_2(tmp_path: Path) -> None:
    path = secret_file(tmp_path, "s", SECRET)
    write_registry(tmp_path / "repos.yml", {})
    result = CliRunner().invoke(
        main,
        ["status"],
        env={
            "DEPLOYHOOK_REGISTRY": str(tmp_path / "repos.yml"),
            "DEPLOYHOOK_DATA_DIR": str(tmp_path / "data"),
            "DEPLOYHOOK_SECRET": SECRET,
            "DEPLOYHOOK_SECRET_FILE": str(path),
        },
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "deployhook: DEPLOYHOOK_SECRET and DEPLOYHOOK_SECRET_FILE are both set: "
        "give the value or the file, not both\n"
    )


@pytest.mark.slow
def test_serve_with_secrets_from_files_verifies_and_guards(tmp_path: Path) -> None:
    """A real `deployhook serve`: its web processes and worker read the same files."""
    remote = make_remote(tmp_path)
    fake = make_fake_docker(tmp_path / "fake")
    registry = write_registry(
        tmp_path / "repos.yml",
        {"site": {"path": str(remote.checkout), "source": "jeff/site", "health_timeout": 0}},
    )
    env = {
        "DEPLOYHOOK_REGISTRY": str(registry),
        "DEPLOYHOOK_DATA_DIR": str(tmp_path / "data"),
        "DEPLOYHOOK_SECRET_FILE": str(secret_file(tmp_path, "webhook", SECRET + "\n")),
        "DEPLOYHOOK_ADMIN_TOKEN_FILE": str(secret_file(tmp_path, "admin", TOKEN + "\n")),
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_COMPOSE": f"{fake.path} compose",
        "DEPLOYHOOK_STOP_GRACE": "5",
    }
    assert "DEPLOYHOOK_SECRET" not in os.environ
    with serve(env, cwd=tmp_path) as served:
        body = gitea_push_body(sha=remote.deployed(), full_name="jeff/site")
        request = urllib.request.Request(
            f"{served.url}/deploy/site", data=body, headers=gitea_headers(body), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 202
            job = json.loads(resp.read())["job"]
        admin = urllib.request.Request(
            f"{served.url}/jobs/{job}/log", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(admin, timeout=10) as resp:
            assert resp.status == 200
        wrong = urllib.request.Request(
            f"{served.url}/jobs/{job}/log", headers={"Authorization": f"Bearer {TOKEN}x"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong, timeout=10)
        assert refused.value.code == 401
        refused.value.close()
        assert "both set" not in served.log_text()
