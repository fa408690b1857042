"""repos.yml's schema: parse and validate a document into Repo entries.

Every error names the file, the repo and the key, so one line tells the admin what to fix.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from deployhook.errors import RegistryError
from deployhook.models import Mode, OnLocalChanges
from deployhook.registry.model import NAME_RE, Gitea, GitHub, Hooks, Mirror, Repo

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True, slots=True)
class _Key:
    """How one repos.yml key is checked and converted."""

    kind: str
    description: str
    choices: type[StrEnum] | None = None


_REPO_KEYS: dict[str, _Key] = {
    "path": _Key("str", "a path"),
    "branch": _Key("ref", "a branch name"),
    "remote": _Key("ref", "a git remote name"),
    "source": _Key("str_or_list", "an owner/name string or a list of them"),
    "secret_env": _Key("env", "an environment variable name"),
    "secret_file": _Key("str", "a file path"),
    "compose_files": _Key("list", "a list of file names"),
    "project_name": _Key("str", "a compose project name"),
    "services": _Key("list", "a list of service names"),
    "timeout": _Key("positive", "a positive number of seconds"),
    "health_timeout": _Key("nonnegative", "a number of seconds (0: don't wait)"),
    "rollback": _Key("bool", "true or false"),
    "on_local_changes": _Key("choice", "fail or reset", OnLocalChanges),
    "remove_orphans": _Key("bool", "true or false"),
    "prune_images": _Key("bool", "true or false"),
    "submodules": _Key("bool", "true or false"),
    "mirror": _Key("mirror", "a mapping with url and token_env or token_file"),
    "gitea": _Key(
        "gitea", "a mapping with url, token_env or token_file, commit_status, mirror_sync"
    ),
    "github": _Key(
        "github",
        "a mapping with token_env or token_file, commit_status, api_url, repo",
    ),
    "notify_env": _Key("env", "an environment variable name"),
    "notify_file": _Key("str", "a file path"),
    "node": _Key("str", "a node name"),
    "mode": _Key("choice", "compose or swarm", Mode),
    "image_registry": _Key("str", "a registry prefix such as registry.example.com/jeff"),
    "public_badge": _Key("bool", "true or false"),
    "pull": _Key("bool", "true or false"),
    "tags": _Key("glob", "a tag glob such as v*"),
    "paths": _Key("globs", "a list of path globs relative to the checkout (** spans folders)"),
    "hooks": _Key("hooks", "a mapping with pre_deploy and post_deploy command lists"),
}
_HOOK_KEYS = ("pre_deploy", "post_deploy")
_MIRROR_KEYS = {"url": "str", "token_env": "env", "token_file": "str"}
_GITEA_KEYS = {
    "url": "str",
    "token_env": "env",
    "token_file": "str",
    "commit_status": "bool",
    "mirror_sync": "bool",
}
_GITHUB_KEYS = {
    "token_env": "env",
    "token_file": "str",
    "commit_status": "bool",
    "api_url": "url",
    "repo": "owner_name",
}
_BLOCKS: dict[str, tuple[dict[str, str], type[Mirror | Gitea | GitHub]]] = {
    "mirror": (_MIRROR_KEYS, Mirror),
    "gitea": (_GITEA_KEYS, Gitea),
    "github": (_GITHUB_KEYS, GitHub),
}
# A secret is named by a variable or by a file, never both: (key_env, key_file).
_EXCLUSIVE = (("secret_env", "secret_file"), ("notify_env", "notify_file"))


def _is_text(raw: Any) -> bool:
    return isinstance(raw, str) and bool(raw.strip())


def _is_ref(raw: Any) -> bool:
    """A branch or remote name that cannot be taken for an option or a revision."""
    return _is_text(raw) and not raw.startswith("-") and not any(c in raw for c in " ~^:?*[\\")


# kind -> whether a raw YAML value is acceptable for it. bool is not an int here:
# `timeout: true` is a mistake, not 1.
_ACCEPTS: dict[str, Callable[[Any], bool]] = {
    "str": _is_text,
    "ref": _is_ref,
    "env": lambda raw: isinstance(raw, str) and bool(_ENV_NAME_RE.match(raw)),
    "bool": lambda raw: isinstance(raw, bool),
    "url": lambda raw: (
        _is_text(raw)
        and raw.strip().startswith(("https://", "http://"))
        and not any(c.isspace() for c in raw.strip())
    ),
    "owner_name": lambda raw: (
        _is_text(raw) and len(raw.split("/")) == 2 and all(p.strip() for p in raw.split("/"))
    ),
    "positive": lambda raw: type(raw) is int and raw >= 1,
    "nonnegative": lambda raw: type(raw) is int and raw >= 0,
    # A glob that git can match and that cannot be taken for an option.
    "glob": lambda raw: _is_text(raw) and not raw.startswith(("-", "/")) and "\n" not in raw,
}


# What a key inside a block (mirror:, gitea:) must be, said in words.
_KIND_TEXT = {
    "str": "a non-empty string",
    "env": "an environment variable name",
    "bool": "true or false",
    "url": "an http:// or https:// URL",
    "owner_name": "owner/name",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RegistryError(
                    f"line {line}: duplicate key {key!r} (first at line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


class _Checker:
    """Validates one parsed repos.yml; every error names the file, the repo and the key."""

    def __init__(self, file: Path) -> None:
        self.file = file

    def fail(self, where: str, problem: str) -> RegistryError:
        return RegistryError(f"{self.file}: {where}: {problem}")

    def value(self, where: str, kind: str, raw: Any, spec: _Key | None = None) -> Any:
        description = spec.description if spec else _KIND_TEXT.get(kind, kind)
        if kind in _ACCEPTS:
            if not _ACCEPTS[kind](raw):
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return raw.strip() if isinstance(raw, str) else raw
        if kind == "choice":
            if spec is None or spec.choices is None or raw not in set(spec.choices):
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return spec.choices(raw)
        if kind in {"list", "str_or_list"}:
            items = [raw] if kind == "str_or_list" and isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(_is_text(i) for i in items):
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return tuple(i.strip() for i in items)
        if kind == "globs":
            items = self.value(where, "list", raw, spec)
            bad = [i for i in items if not _ACCEPTS["glob"](i) or ".." in i.split("/")]
            if bad:
                raise self.fail(where, f"{bad[0]!r} is not a glob relative to the checkout")
            return items
        if kind == "hooks":
            return self.hooks(where, raw, description)
        return self.block(where, kind, raw, description)

    def hooks(self, where: str, raw: Any, description: str) -> Hooks:
        """`hooks:`: pre_deploy and post_deploy, each a list of shell commands."""
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be {description}, got {raw!r}")
        unknown = sorted(set(raw) - set(_HOOK_KEYS), key=str)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"unknown key (expected one of {', '.join(_HOOK_KEYS)})"
            )
        parsed = {
            k: self.value(f"{where}.{k}", "list", v, _Key("list", "a list of shell commands"))
            for k, v in raw.items()
        }
        return Hooks(**parsed)

    def block(self, where: str, kind: str, raw: Any, description: str) -> Mirror | Gitea | GitHub:
        """A nested mapping: `mirror:`, `gitea:` or `github:`."""
        keys, make = _BLOCKS[kind]
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be {description}, got {raw!r}")
        unknown = sorted(set(raw) - set(keys), key=str)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"unknown key (expected one of {', '.join(keys)})"
            )
        if "url" in keys and "url" not in raw:
            raise self.fail(f"{where}.url", "is required")
        parsed = {k: self.value(f"{where}.{k}", keys[k], v) for k, v in raw.items()}
        if "token_env" in parsed and "token_file" in parsed:
            raise self.fail(f"{where}.token_file", "set token_env or token_file, not both")
        if kind == "github" and not {"token_env", "token_file"} & parsed.keys():
            raise self.fail(f"{where}.token_env", "is required (or token_file): the API needs it")
        if "token_file" in parsed:
            parsed["token_file"] = self.resolve(Path(os.path.expanduser(parsed["token_file"])))
        if "api_url" in parsed:
            parsed["api_url"] = parsed["api_url"].rstrip("/")
        return make(**parsed)

    def settings(self, where: str, raw: Any, *, allow_path: bool) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be a mapping of settings, got {raw!r}")
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in _REPO_KEYS:
                raise self.fail(
                    f"{where}.{key}", "unknown key (a typo would silently disable a setting)"
                )
            if key == "path" and not allow_path:
                raise self.fail(f"{where}.path", "a path belongs to one repo, not to defaults")
            spec = _REPO_KEYS[key]
            out[key] = self.value(f"{where}.{key}", spec.kind, value, spec)
        return out

    def registry(self, doc: Any) -> dict[str, Repo]:
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise self.fail("top level", "must be a mapping with 'repos' (and 'defaults')")
        unknown = sorted(set(doc) - {"defaults", "repos"}, key=str)
        if unknown:
            raise self.fail(str(unknown[0]), "unknown top-level key (expected defaults, repos)")
        defaults = self.settings("defaults", doc.get("defaults"), allow_path=False)
        entries = doc.get("repos") or {}
        if not isinstance(entries, dict):
            raise self.fail("repos", "must be a mapping of name: settings")
        repos: dict[str, Repo] = {}
        paths: dict[Path, str] = {}
        for name, raw in entries.items():
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise self.fail(
                    f"repos.{name}",
                    "invalid name: use letters, digits, '.', '_' "
                    "and '-', starting with a letter or digit",
                )
            own = self.settings(f"repos.{name}", raw, allow_path=True)
            if "path" not in own:
                raise self.fail(f"repos.{name}.path", "is required (the git checkout)")
            repo = self.repo(name, defaults, own)
            if repo.path in paths:
                raise self.fail(
                    f"repos.{name}.path",
                    f"{repo.path} is already the path of repo {paths[repo.path]!r}",
                )
            paths[repo.path] = name
            repos[name] = repo
        return repos

    def repo(self, name: str, defaults: dict[str, Any], own: dict[str, Any]) -> Repo:
        merged = dict(defaults)
        for pair in _EXCLUSIVE:  # a repo's own variable or file replaces both defaults'
            if set(pair) & own.keys():
                for key in pair:
                    merged.pop(key, None)
        merged.update(own)
        for env_key, file_key in _EXCLUSIVE:
            if env_key in merged and file_key in merged:
                where = "defaults" if {env_key, file_key} <= defaults.keys() else f"repos.{name}"
                raise self.fail(f"{where}.{file_key}", f"set {env_key} or {file_key}, not both")
        if merged.get("gitea") is not None and not merged.get("source"):
            raise self.fail(
                f"repos.{name}.gitea",
                "needs `source` (the owner/name of the repo on Gitea) to call its API",
            )
        github = merged.get("github")
        if github is not None and github.repo is None and not merged.get("source"):
            raise self.fail(
                f"repos.{name}.github",
                "needs `source` or `github.repo` (the owner/name of the repo on GitHub)",
            )
        merged["path"] = self.resolve(Path(os.path.expanduser(merged["path"])))
        for key in ("secret_file", "notify_file"):
            if key in merged:
                merged[key] = self.resolve(Path(os.path.expanduser(merged[key])))
        return Repo(name=name, **merged)

    def resolve(self, path: Path) -> Path:
        """Make a path absolute: a relative one is relative to the registry file."""
        if not path.is_absolute():
            path = self.file.parent.absolute() / path
        return Path(os.path.normpath(path))


def parse(text: str, *, file: Path) -> dict[str, Repo]:
    """Parse and validate a repos.yml document; raise RegistryError naming what is wrong."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except RegistryError as exc:
        raise RegistryError(f"{file}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        raise RegistryError(f"{file}: {where}: {problem}") from None
    return _Checker(file).registry(doc)


def read(file: Path) -> bytes:
    """A registry file's bytes, or RegistryError naming the file."""
    try:
        return file.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{file}: no such file") from None
    except OSError as exc:
        raise RegistryError(f"{file}: cannot read: {exc}") from None


def decode(data: bytes, *, file: Path) -> dict[str, Repo]:
    """Parse and validate a registry file's bytes (UTF-8)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{file}: cannot read: {exc}") from None
    return parse(text, file=file)


def load(file: Path) -> dict[str, Repo]:
    """Read and validate a registry file."""
    return decode(read(file), file=file)
