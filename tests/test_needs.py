"""A test that needs a tool skips saying what to install, or fails where CI requires it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import needs


def test_missing_compose_v1_skips_saying_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker-compose here
    monkeypatch.setitem(needs.REQUIRED, "compose-v1", False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        needs.compose_v1()
    assert str(skipped.value) == (
        "`docker-compose` (Compose v1) is not on PATH: install Compose v1: "
        "`apt-get install docker-compose` (or .ci/install-system.sh (as root, Debian 12: "
        "all of them))"
    )


def test_in_ci_a_missing_tool_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(needs.REQUIRED, "compose-v1", True)
    with pytest.raises(pytest.fail.Exception) as failed:
        needs.compose_v1()
    assert str(failed.value).startswith(
        "DEPLOYHOOK_REQUIRE_DOCKER=1 but `docker-compose` (Compose v1) is not on PATH; "
        "install Compose v1"
    )


def test_a_v2_named_docker_compose_is_not_v1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker-compose"
    fake.write_text("#!/bin/sh\necho v2.29.1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(needs.REQUIRED, "compose-v1", False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        needs.compose_v1()
    assert str(skipped.value).startswith(f"{fake} is Compose v2.29.1, not v1: install")


@pytest.mark.parametrize("what", sorted(needs.HOW))
def test_every_need_names_a_package_or_the_install_script(what: str) -> None:
    assert "apt-get install" in needs.HOW[what] or ".ci/install-system.sh" in needs.HOW[what]
    assert needs.REQUIRE_VARIABLE[what].startswith("DEPLOYHOOK_REQUIRE_")
