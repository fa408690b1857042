"""Shell completion (click's, `_DEPLOYHOOK_COMPLETE=bash_source deployhook`): commands,
and repo names from the registry."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from deployhook.cli import main
from tests.conftest import write_registry


def complete(words: str, **env: str) -> list[str]:
    result = CliRunner().invoke(
        main,
        [],
        prog_name="deployhook",
        env={
            "_DEPLOYHOOK_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
            **env,
        },
    )
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_the_bash_script_names_the_variable() -> None:
    result = CliRunner().invoke(
        main, [], prog_name="deployhook", env={"_DEPLOYHOOK_COMPLETE": "bash_source"}
    )
    assert "_DEPLOYHOOK_COMPLETE=bash_complete" in result.stdout
    assert "complete -o nosort -F _deployhook_completion deployhook" in result.stdout


def test_commands_and_repo_names_complete(tmp_path: Path) -> None:
    registry = write_registry(
        tmp_path / "repos.yml",
        {"website": {"path": "/srv/w"}, "shop": {"path": "/srv/s"}, "staging": {"path": "/s"}},
    )
    env = {"DEPLOYHOOK_REGISTRY": str(registry)}
    assert complete("deployhook deli", **env) == ["deliver", "deliveries"]
    assert complete("deployhook deploy s", **env) == ["shop", "staging"]
    assert complete("deployhook logs ", **env) == ["website", "shop", "staging"]
    assert complete("deployhook repos remove w", **env) == ["website"]
    assert complete("deployhook deliveries x", **env) == []


def test_a_broken_registry_completes_nothing_and_says_nothing(tmp_path: Path) -> None:
    (tmp_path / "repos.yml").write_text("repos: [\n")
    assert complete("deployhook deploy ", DEPLOYHOOK_REGISTRY=str(tmp_path / "repos.yml")) == []
    assert complete("deployhook status ", DEPLOYHOOK_WORKERS="two") == []
