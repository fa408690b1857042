"""`*_file` keys: every token a repo names may come from a file instead of a variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployhook import redact
from deployhook.errors import RegistryError, SecretNotConfigured
from deployhook.registry import Token, parse, repo_token, secret_values

FILE = Path("/etc/deployhook/repos.yml")

FULL = """
repos:
  site:
    path: /srv/site
    source: jeff/site
    notify_file: secrets/notify
    mirror:
      url: https://github.com/jeff/site.git
      token_file: ./secrets/mirror-token
    gitea:
      url: https://git.example.com
      token_file: /run/secrets/gitea_token
"""


def test_file_keys_parse_and_resolve_against_the_registry_directory() -> None:
    repo = parse(FULL, file=FILE)["site"]
    assert repo.notify_file == Path("/etc/deployhook/secrets/notify")
    assert repo.mirror is not None and repo.mirror.token_file == Path(
        "/etc/deployhook/secrets/mirror-token"
    )
    assert repo.gitea is not None and repo.gitea.token_file == Path("/run/secrets/gitea_token")
    assert [(t.key, t.env, t.file) for t in repo.tokens] == [
        ("notify", None, Path("/etc/deployhook/secrets/notify")),
        ("mirror.token", None, Path("/etc/deployhook/secrets/mirror-token")),
        ("gitea.token", None, Path("/run/secrets/gitea_token")),
    ]
    assert repo.private_variables == set()


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (
            "repos:\n  a:\n    path: /x\n    notify_env: N\n    notify_file: /f\n",
            "repos.a.notify_file",
            "set notify_env or notify_file, not both",
        ),
        (
            "repos:\n  a:\n    path: /x\n    mirror: {url: u, token_env: T, token_file: /f}\n",
            "repos.a.mirror.token_file",
            "set token_env or token_file, not both",
        ),
        (
            "repos:\n  a:\n    path: /x\n    source: j/a\n"
            "    gitea: {url: u, token_env: T, token_file: /f}\n",
            "repos.a.gitea.token_file",
            "set token_env or token_file, not both",
        ),
        (
            "defaults:\n  notify_env: N\n  notify_file: /f\nrepos:\n  a:\n    path: /x\n",
            "defaults.notify_file",
            "not both",
        ),
        ("repos:\n  a:\n    path: /x\n    notify_file: 7\n", "repos.a.notify_file", "file path"),
        ("repos:\n  a:\n    path: /x\n    notify_file: ''\n", "repos.a.notify_file", "file path"),
        (
            "repos:\n  a:\n    path: /x\n    mirror: {url: u, token_file: [a]}\n",
            "repos.a.mirror.token_file",
            "must be a non-empty string, got ['a']",
        ),
        (
            "repos:\n  a:\n    path: /x\n    mirror: {url: u, tokenfile: /f}\n",
            "repos.a.mirror.tokenfile",
            "unknown key (expected one of url, token_env, token_file)",
        ),
        (
            "repos:\n  a:\n    path: /x\n    notify_files: /f\n",
            "repos.a.notify_files",
            "unknown key",
        ),
    ],
)
def test_invalid_file_keys_name_the_key(text: str, where: str, problem: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse(text, file=FILE)
    assert f"{FILE}: {where}: " in str(info.value)
    assert problem in str(info.value)


def test_a_repos_own_notify_file_replaces_the_defaults_variable() -> None:
    repos = parse(
        "defaults:\n  notify_env: TEAM_NOTIFY\nrepos:\n  a:\n    path: /x\n"
        "  b:\n    path: /y\n    notify_file: /run/secrets/b_notify\n",
        file=FILE,
    )
    assert (repos["a"].notify_env, repos["a"].notify_file) == ("TEAM_NOTIFY", None)
    assert (repos["b"].notify_env, repos["b"].notify_file) == (
        None,
        Path("/run/secrets/b_notify"),
    )


def test_file_tokens_are_read_stripped_and_registered(tmp_path: Path) -> None:
    registry = tmp_path / "repos.yml"
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "notify").write_text("json://u:notify-pass-0123@h/x ntfy://t0pic\n")
    (tmp_path / "secrets" / "mirror-token").write_text("ghp_mirror_token_from_a_file_42\n")
    text = FULL.replace("/run/secrets/gitea_token", str(tmp_path / "absent"))
    repo = parse(text, file=registry)["site"]
    notify, mirror, gitea = repo.tokens
    assert repo_token(mirror) == "ghp_mirror_token_from_a_file_42"
    assert repo_token(notify) == "json://u:notify-pass-0123@h/x ntfy://t0pic"
    assert redact.mask("push with ghp_mirror_token_from_a_file_42") == "push with [redacted]"
    assert redact.mask("to ntfy://t0pic") == "to [redacted]"  # one URL alone, too
    with pytest.raises(SecretNotConfigured) as caught:
        repo_token(gitea)
    assert str(caught.value) == (
        f"gitea token: secret file {tmp_path / 'absent'} (gitea.token_file) cannot be read: "
        "No such file or directory"
    )
    values = secret_values([repo], default=None)
    assert "ghp_mirror_token_from_a_file_42" in values


def test_a_token_named_by_a_variable_says_which_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITEA_TOKEN", raising=False)
    with pytest.raises(SecretNotConfigured) as caught:
        repo_token(Token("gitea.token", "GITEA_TOKEN", None))
    assert str(caught.value) == (
        "gitea token: environment variable GITEA_TOKEN (gitea.token_env) is unset or empty"
    )
