"""repos.yml: validation errors name the file, the repo and the key; reloads keep the last good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deployhook.errors import RegistryError, SecretNotConfigured, UnknownRepo
from deployhook.registry import Registry, Repo, load, parse, resolve_secrets

FILE = Path("/etc/deployhook/repos.yml")


def test_defaults_apply_and_repo_keys_win() -> None:
    repos = parse(
        """
defaults:
  branch: production
  timeout: 300
  secret_env: SHARED_SECRET
repos:
  a:
    path: /srv/a
  b:
    path: /srv/b
    branch: main
    secret_file: /run/secrets/b
""",
        file=FILE,
    )
    assert repos["a"] == Repo(
        name="a", path=Path("/srv/a"), branch="production", timeout=300, secret_env="SHARED_SECRET"
    )
    assert repos["b"].branch == "main"
    assert repos["b"].timeout == 300
    assert repos["b"].secret_env is None  # its own secret_file replaces the default env
    assert repos["b"].secret_file == Path("/run/secrets/b")


def test_builtin_defaults_match_contract() -> None:
    repo = parse("repos:\n  a:\n    path: /srv/a\n", file=FILE)["a"]
    assert (
        repo.branch,
        repo.remote,
        repo.timeout,
        repo.health_timeout,
        repo.rollback,
        repo.on_local_changes,
        repo.remove_orphans,
        repo.prune_images,
        repo.submodules,
        repo.mode,
    ) == ("main", "origin", 900, 120, True, "fail", False, False, False, "compose")


def test_full_contract_example_validates() -> None:
    repos = parse(
        """
defaults:
  branch: main
  timeout: 900
repos:
  mycofi-earth-website:
    path: /opt/websites/mycofi-earth-website
    branch: main
    remote: origin
    source: jeff/mycofi-earth-website
    secret_env: MYCOFI_SECRET
    compose_files: [docker-compose.yml]
    project_name: mycofi
    services: []
    timeout: 900
    health_timeout: 120
    rollback: true
    on_local_changes: fail
    remove_orphans: false
    prune_images: false
    submodules: false
    mirror:
      url: https://github.com/jeff/mycofi-earth-website.git
      token_env: GITHUB_MIRROR_TOKEN
    gitea:
      url: https://gitea.example.com
      token_env: GITEA_TOKEN
      commit_status: true
      mirror_sync: false
    notify_env: DEPLOY_NOTIFY
    node: gpu-box
    mode: compose
    image_registry: registry.example.com/jeff
""",
        file=FILE,
    )
    repo = repos["mycofi-earth-website"]
    assert repo.source == ("jeff/mycofi-earth-website",)
    assert repo.mirror is not None and repo.mirror.token_env == "GITHUB_MIRROR_TOKEN"
    assert repo.gitea is not None and repo.gitea.commit_status is True


def test_project_example_registry_ships_no_repos_and_valid_examples(tmp_path: Path) -> None:
    """The tracked repos.yml serves quietly as it is; its commented examples are valid."""
    example = Path(__file__).resolve().parents[2] / "repos.yml"
    assert load(example) == {}
    text = example.read_text()
    commented = text[text.index("\n# repos:\n") + 1 : text.index("\nrepos: {}")].splitlines()
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in commented)
    (tmp_path / "examples.yml").write_text(uncommented)
    assert sorted(load(tmp_path / "examples.yml")) == ["example-app", "example-site"]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("repos:\n  a:\n    path: /x\n    brnach: main\n", "repos.a.brnach", "unknown key"),
        ("repos:\n  a:\n    branch: main\n", "repos.a.path", "is required"),
        ("repos:\n  a:\n    path: /x\n    timeout: soon\n", "repos.a.timeout", "positive"),
        ("repos:\n  a:\n    path: /x\n    timeout: 0\n", "repos.a.timeout", "positive"),
        (
            "repos:\n  a:\n    path: /x\n    health_timeout: -1\n",
            "repos.a.health_timeout",
            "seconds",
        ),
        (
            "repos:\n  a:\n    path: /x\n    rollback: 'yes please'\n",
            "repos.a.rollback",
            "true or false",
        ),
        (
            "repos:\n  a:\n    path: /x\n    on_local_changes: stash\n",
            "repos.a.on_local_changes",
            "fail or reset",
        ),
        ("repos:\n  a:\n    path: /x\n    services: web\n", "repos.a.services", "list"),
        (
            "repos:\n  a:\n    path: /x\n    secret_env: 'MY-SECRET'\n",
            "repos.a.secret_env",
            "environment variable",
        ),
        (
            "repos:\n  a:\n    path: /x\n    branch: --upload-pack=x\n",
            "repos.a.branch",
            "must be a branch name",
        ),
        ("repos:\n  a:\n    path: /x\n    timeout: true\n", "repos.a.timeout", "positive"),
        (
            "repos:\n  a:\n    path: /x\n    mirror: {token_env: T}\n",
            "repos.a.mirror.url",
            "required",
        ),
        (
            "repos:\n  a:\n    path: /x\n    gitea: {url: u, tokn_env: T}\n",
            "repos.a.gitea.tokn_env",
            "unknown key",
        ),
        ("repos:\n  a:\n    path: /x\n    mode: k8s\n", "repos.a.mode", "compose or swarm"),
        (
            "repos:\n  a:\n    path: /x\n    gitea: {url: https://g}\n",
            "repos.a.gitea",
            "needs `source`",
        ),
        ("repos:\n  ../etc:\n    path: /x\n", "repos.../etc", "invalid name"),
        ("repos:\n  .hidden:\n    path: /x\n", "repos..hidden", "invalid name"),
        ("repos:\n  'a b':\n    path: /x\n", "repos.a b", "invalid name"),
        ("repos:\n  a:\n    path: /x\n  b:\n    path: /x/\n", "repos.b.path", "already the path"),
        ("defaults:\n  path: /x\nrepos: {}\n", "defaults.path", "not to defaults"),
        ("defaults:\n  tiemout: 3\nrepos: {}\n", "defaults.tiemout", "unknown key"),
        ("repo:\n  a:\n    path: /x\n", "repo", "unknown top-level key"),
        ("repos: [a, b]\n", "repos", "mapping"),
        ("- a\n", "top level", "mapping"),
        (
            "repos:\n  a:\n    path: /x\n    secret_env: A\n    secret_file: /f\n",
            "repos.a.secret_file",
            "not both",
        ),
    ],
)
def test_invalid_registry_names_file_repo_and_key(text: str, where: str, problem: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse(text, file=FILE)
    message = str(info.value)
    assert message.startswith(f"{FILE}: {where}: "), message
    assert problem in message
    assert "\n" not in message


def test_duplicate_keys_are_an_error_not_last_wins() -> None:
    with pytest.raises(RegistryError, match=r"line 5: duplicate key 'path' \(first at line 3\)"):
        parse("repos:\n  a:\n    path: /x\n    branch: main\n    path: /y\n", file=FILE)
    with pytest.raises(RegistryError, match="duplicate key 'a'"):
        parse("repos:\n  a:\n    path: /x\n  a:\n    path: /y\n", file=FILE)


def test_yaml_syntax_error_names_line() -> None:
    with pytest.raises(RegistryError, match=r"repos.yml: line \d+"):
        parse("repos:\n  a: [\n", file=FILE)


def test_relative_paths_are_relative_to_the_file() -> None:
    repos = parse("repos:\n  a:\n    path: sites/a\n", file=Path("/etc/dh/repos.yml"))
    assert repos["a"].path == Path("/etc/dh/sites/a")


def test_empty_file_is_an_empty_registry() -> None:
    assert parse("", file=FILE) == {}
    assert parse("repos:\n", file=FILE) == {}


def test_missing_file_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="no such file"):
        load(tmp_path / "nope.yml")


def test_reload_on_change_keeps_last_good(tmp_path: Path) -> None:
    file = tmp_path / "repos.yml"
    file.write_text("repos:\n  a:\n    path: /srv/a\n")
    registry = Registry(file)
    assert registry.names() == ["a"]
    file.write_text("repos:\n  a:\n    path: /srv/a\n  b:\n    path: /srv/b\n")
    assert registry.names() == ["a", "b"]
    file.write_text("repos:\n  a:\n    path: /srv/a\n  c:\n    pth: oops\n")
    assert registry.names() == ["a", "b"]
    assert registry.error is not None and "repos.c.pth" in registry.error
    with pytest.raises(UnknownRepo):
        registry.get("c")
    os.replace(_write(tmp_path / "new.yml", "repos:\n  c:\n    path: /srv/c\n"), file)
    assert registry.names() == ["c"]
    assert registry.error is None


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_invalid_at_start_serves_nothing_and_says_why(tmp_path: Path) -> None:
    file = _write(tmp_path / "repos.yml", "repos:\n  a: 5\n")
    registry = Registry(file)
    assert registry.names() == []
    assert registry.error is not None and "repos.a" in registry.error


def test_secrets_from_env_file_and_default(tmp_path: Path) -> None:
    secret_file = _write(tmp_path / "s", "  from-file-0123456789 \n")
    a = Repo(name="a", path=tmp_path, secret_env="A_SECRET")
    b = Repo(name="b", path=tmp_path, secret_file=secret_file)
    c = Repo(name="c", path=tmp_path)
    rotating = "one-0123456789abcdef, two-0123456789abcdef\nthree-0123456789abcdef"
    assert resolve_secrets(a, default=None, environ={"A_SECRET": rotating}) == (
        "one-0123456789abcdef",
        "two-0123456789abcdef",
        "three-0123456789abcdef",
    )
    assert resolve_secrets(b, default=None) == ("from-file-0123456789",)
    assert resolve_secrets(c, default="dflt-0123456789abcdef", environ={}) == (
        "dflt-0123456789abcdef",
    )


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("short", "5 characters; a secret needs at least 16"),
        ("x,Zq8#p1Lm9v2Ws4Tq7RkY0", "split at ',' into 1 + 21 characters"),
        ("a-long-enough-secret-1\nshort", "split at a newline into 22 + 5 characters"),
        ("0123456789abcde", "15 characters"),
    ],
)
def test_comma_in_a_secret_never_splits_off_a_weak_one(
    tmp_path: Path, value: str, said: str
) -> None:
    """Trust finding 9: `x,Zq8#...` made `x` verify; now the whole secret is refused."""
    repo = Repo(name="a", path=tmp_path, secret_env="A_SECRET")
    with pytest.raises(SecretNotConfigured, match="too short") as refused:
        resolve_secrets(repo, default=None, environ={"A_SECRET": value})
    assert said in str(refused.value)
    assert resolve_secrets(repo, default=None, environ={"A_SECRET": "0123456789abcdef"}) == (
        "0123456789abcdef",
    )


@pytest.mark.parametrize(
    ("repo_kwargs", "environ", "default"),
    [
        ({"secret_env": "UNSET"}, {}, "dflt-0123456789abcdef"),
        ({"secret_env": "EMPTY"}, {"EMPTY": " , \n"}, "dflt-0123456789abcdef"),
        ({"secret_file": Path("/nonexistent/secret")}, {}, "dflt-0123456789abcdef"),
        ({}, {}, "dflt"),
        ({}, {}, None),
        ({}, {}, ""),
    ],
)
def test_unresolvable_secret_raises(
    tmp_path: Path, repo_kwargs: dict[str, object], environ: dict[str, str], default: str | None
) -> None:
    repo = Repo(name="a", path=tmp_path, **repo_kwargs)  # type: ignore[arg-type]
    with pytest.raises(SecretNotConfigured):
        resolve_secrets(repo, default=default, environ=environ)
