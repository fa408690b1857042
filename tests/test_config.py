"""Settings: where the registry and the store are found when nothing says (docs/settings.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deployhook.config import REGISTRY_CANDIDATES, Settings, find_registry, registry_not_found

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
