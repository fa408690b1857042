"""The `github:` block: parsed strictly, every mistake named by file, repo and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployhook.errors import RegistryError
from deployhook.registry import GitHub, parse

FILE = Path("/etc/deployhook/repos.yml")
BASE = "repos:\n  a:\n    path: /x\n    source: jeff/a\n"


def test_github_block_defaults_and_every_key() -> None:
    repo = parse(BASE + "    github: {token_env: GITHUB_TOKEN}\n", file=FILE)["a"]
    assert repo.github == GitHub(token_env="GITHUB_TOKEN")
    assert (repo.github.commit_status, repo.github.api_url, repo.github.repo) == (
        True,
        "https://api.github.com",
        None,
    )
    full = parse(
        "repos:\n  a:\n    path: /x\n    github:\n      token_file: secrets/gh\n"
        "      commit_status: false\n      api_url: https://ghe.example.com/api/v3/\n"
        "      repo: acme/website\n",
        file=FILE,
    )["a"]
    assert full.github == GitHub(
        token_file=Path("/etc/deployhook/secrets/gh"),
        commit_status=False,
        api_url="https://ghe.example.com/api/v3",
        repo="acme/website",
    )
    assert [t.key for t in full.tokens] == ["github.token"]


def test_defaults_may_hold_the_github_block() -> None:
    repos = parse(
        "defaults:\n  github: {token_env: GH}\nrepos:\n  a:\n    path: /x\n    source: j/a\n"
        "  b:\n    path: /y\n    source: j/b\n",
        file=FILE,
    )
    assert repos["a"].github == repos["b"].github == GitHub(token_env="GH")
    assert repos["a"].private_variables == {"GH"}


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (BASE + "    github: {token_env: T, tokn: x}\n", "repos.a.github.tokn", "unknown key"),
        (BASE + "    github: {token_env: T, url: x}\n", "repos.a.github.url", "unknown key"),
        (BASE + "    github: GITHUB_TOKEN\n", "repos.a.github", "must be a mapping"),
        (BASE + "    github: {}\n", "repos.a.github.token_env", "is required (or token_file)"),
        (
            BASE + "    github: {token_env: T, token_file: /f}\n",
            "repos.a.github.token_file",
            "set token_env or token_file, not both",
        ),
        (BASE + "    github: {token_env: 'my-token'}\n", "repos.a.github.token_env", "variable"),
        (
            BASE + "    github: {token_env: T, commit_status: 'yes'}\n",
            "repos.a.github.commit_status",
            "true or false",
        ),
        (
            BASE + "    github: {token_env: T, api_url: api.github.com}\n",
            "repos.a.github.api_url",
            "an http:// or https:// URL",
        ),
        (
            BASE + "    github: {token_env: T, repo: acme}\n",
            "repos.a.github.repo",
            "owner/name",
        ),
        (
            BASE + "    github: {token_env: T, repo: a/b/c}\n",
            "repos.a.github.repo",
            "owner/name",
        ),
        (
            "repos:\n  a:\n    path: /x\n    github: {token_env: T}\n",
            "repos.a.github",
            "needs `source` or `github.repo`",
        ),
    ],
)
def test_invalid_github_block_names_the_key(text: str, where: str, problem: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse(text, file=FILE)
    assert f"{FILE}: {where}: " in str(info.value)
    assert problem in str(info.value)
