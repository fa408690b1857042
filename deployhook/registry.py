"""repos.yml: load, validate, re-read on change (keeping the last good registry)."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from deployhook.errors import RegistryError, SecretNotConfigured, UnknownRepo

log = structlog.get_logger()

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SECRET_SPLIT_RE = re.compile(r"[,\n]")


@dataclass(frozen=True, slots=True)
class Mirror:
    url: str
    token_env: str | None = None


@dataclass(frozen=True, slots=True)
class Gitea:
    url: str
    token_env: str | None = None
    commit_status: bool = True
    mirror_sync: bool = False


@dataclass(frozen=True, slots=True)
class Repo:
    """One deployable checkout, with every setting resolved (defaults applied)."""

    name: str
    path: Path
    branch: str = "main"
    remote: str = "origin"
    source: tuple[str, ...] = ()
    secret_env: str | None = None
    secret_file: Path | None = None
    compose_files: tuple[str, ...] = ()
    project_name: str | None = None
    services: tuple[str, ...] = ()
    timeout: int = 900
    health_timeout: int = 120
    rollback: bool = True
    on_local_changes: str = "fail"
    remove_orphans: bool = False
    prune_images: bool = False
    submodules: bool = False
    mirror: Mirror | None = None
    gitea: Gitea | None = None
    notify_env: str | None = None
    node: str | None = None
    mode: str = "compose"
    image_registry: str | None = None

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    @property
    def private_variables(self) -> set[str]:
        """Environment variables holding this repo's secrets, tokens and notify URLs."""
        names = {
            self.secret_env,
            self.notify_env,
            self.mirror.token_env if self.mirror else None,
            self.gitea.token_env if self.gitea else None,
        }
        return {n for n in names if n}


@dataclass(frozen=True, slots=True)
class _Key:
    """How one repos.yml key is checked and converted."""

    kind: str
    description: str
    choices: tuple[str, ...] = ()


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
    "on_local_changes": _Key("choice", "fail or reset", ("fail", "reset")),
    "remove_orphans": _Key("bool", "true or false"),
    "prune_images": _Key("bool", "true or false"),
    "submodules": _Key("bool", "true or false"),
    "mirror": _Key("mirror", "a mapping with url and token_env"),
    "gitea": _Key("gitea", "a mapping with url, token_env, commit_status, mirror_sync"),
    "notify_env": _Key("env", "an environment variable name"),
    "node": _Key("str", "a node name"),
    "mode": _Key("choice", "compose or swarm", ("compose", "swarm")),
    "image_registry": _Key("str", "a registry prefix such as registry.example.com/jeff"),
}
_MIRROR_KEYS = {"url": "str", "token_env": "env"}
_GITEA_KEYS = {"url": "str", "token_env": "env", "commit_status": "bool", "mirror_sync": "bool"}


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
    "positive": lambda raw: type(raw) is int and raw >= 1,
    "nonnegative": lambda raw: type(raw) is int and raw >= 0,
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
        description = spec.description if spec else kind
        if kind in _ACCEPTS:
            if not _ACCEPTS[kind](raw):
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return raw.strip() if isinstance(raw, str) else raw
        if kind == "choice":
            if spec is None or raw not in spec.choices:
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return raw
        if kind in {"list", "str_or_list"}:
            items = [raw] if kind == "str_or_list" and isinstance(raw, str) else raw
            if not isinstance(items, list) or not all(_is_text(i) for i in items):
                raise self.fail(where, f"must be {description}, got {raw!r}")
            return tuple(i.strip() for i in items)
        return self.block(where, kind, raw, description)

    def block(self, where: str, kind: str, raw: Any, description: str) -> Mirror | Gitea:
        """A nested mapping: `mirror:` or `gitea:`."""
        keys = _MIRROR_KEYS if kind == "mirror" else _GITEA_KEYS
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be {description}, got {raw!r}")
        unknown = sorted(set(raw) - set(keys), key=str)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}", f"unknown key (expected one of {', '.join(keys)})"
            )
        if "url" not in raw:
            raise self.fail(f"{where}.url", "is required")
        parsed = {k: self.value(f"{where}.{k}", keys[k], v) for k, v in raw.items()}
        return Mirror(**parsed) if kind == "mirror" else Gitea(**parsed)

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
        if {"secret_env", "secret_file"} & own.keys():
            merged.pop("secret_env", None)
            merged.pop("secret_file", None)
        merged.update(own)
        if "secret_env" in merged and "secret_file" in merged:
            raise self.fail(f"repos.{name}.secret_file", "set secret_env or secret_file, not both")
        if merged.get("gitea") is not None and not merged.get("source"):
            raise self.fail(
                f"repos.{name}.gitea",
                "needs `source` (the owner/name of the repo on Gitea) to call its API",
            )
        merged["path"] = self.resolve(Path(os.path.expanduser(merged["path"])))
        if "secret_file" in merged:
            merged["secret_file"] = self.resolve(Path(os.path.expanduser(merged["secret_file"])))
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


def load(file: Path) -> dict[str, Repo]:
    """Read and validate a registry file."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RegistryError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{file}: cannot read: {exc}") from None
    return parse(text, file=file)


def resolve_secrets(
    repo: Repo, *, default: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Return the repo's webhook secrets (several allowed, for rotation).

    Raises SecretNotConfigured when none can be found: a push is then refused, never
    accepted unsigned.
    """
    env = os.environ if environ is None else environ
    if repo.secret_env:
        raw = env.get(repo.secret_env)
        origin = f"environment variable {repo.secret_env}"
    elif repo.secret_file:
        origin = f"secret file {repo.secret_file}"
        try:
            raw = repo.secret_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretNotConfigured(
                f"{origin} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        except UnicodeDecodeError:
            raise SecretNotConfigured(f"{origin} is not UTF-8 text") from None
    else:
        raw = default
        origin = "DEPLOYHOOK_SECRET"
    secrets = tuple(s.strip() for s in _SECRET_SPLIT_RE.split(raw or "") if s.strip())
    if not secrets:
        raise SecretNotConfigured(
            f"no webhook secret for repo {repo.name!r}: {origin} is unset or empty"
        )
    return secrets


def secret_values(repos: Iterable[Repo], *, default: str | None) -> list[str]:
    """Every secret value the repos name: webhook secrets, tokens, notification URLs.

    Every repo's, not only one job's: one stack's output may print another's secret.
    """
    values = [default] if default else []
    for repo in repos:
        with contextlib.suppress(SecretNotConfigured):
            values.extend(resolve_secrets(repo, default=default))
        for name in sorted(repo.private_variables - {repo.secret_env}):
            value = os.environ.get(name)
            if value:
                values.append(value)
    return values


# A changed file is read once two looks this far apart agree (see _settled_stamp).
SETTLE_S = 0.015
SETTLE_TRIES = 8
SETTLED_AGE_S = 1.0
FIRST_LOAD_TRIES = 10


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class Registry:
    """The live registry: re-read when the file changes, last good kept on error."""

    def __init__(self, file: Path, *, check_interval: float = 0.0) -> None:
        self.file = file
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._stamp: _Stamp | None = None
        self._checked_at = 0.0
        self.error: str | None = None
        self.loaded = False

    def _current_stamp(self) -> _Stamp | None:
        try:
            st = self.file.stat()
        except OSError:
            return None
        return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)

    def _settled_stamp(self) -> tuple[_Stamp | None, bool]:
        """The file's stamp once it has stayed the same for SETTLE_S, and whether it did.

        An editor that saves in place truncates, then writes: read in between, the file
        is empty, which is a valid registry with no repos. So a change is read only once
        two looks SETTLE_S apart agree, and an empty file only once it is a second old.
        (File times are too coarse to judge "still" by age alone, except for a file last
        changed long ago.) A file that never settles, rewritten without pause, is left
        for a later look.
        """
        stamp = self._current_stamp()
        for _ in range(SETTLE_TRIES):
            if stamp is None:
                return None, True
            if time.time() - stamp.mtime_ns / 1e9 > SETTLED_AGE_S:
                return stamp, True
            time.sleep(SETTLE_S)
            again = self._current_stamp()
            # Just truncated is a save in progress (on a busy machine the writer's pause
            # can outlast SETTLE_S), not a registry emptied on purpose.
            if again == stamp and stamp.size > 0:
                return stamp, True
            stamp = again
        return stamp, False

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since the last look."""
        now = time.monotonic()
        if not force and self.loaded and now - self._checked_at < self._check_interval:
            return
        stamp = self._current_stamp()
        if not force and self.loaded and stamp == self._stamp:
            self._checked_at = now
            return
        # One thread re-reads (and may wait for the file to settle); the others go on
        # with the registry they have rather than queue up behind it.
        if not self._lock.acquire(blocking=force or not self.loaded):
            return
        try:
            self._reload(force=force, now=now)
        finally:
            self._lock.release()

    def _reload(self, *, force: bool, now: float) -> None:
        stamp, settled = self._settled_stamp()
        for _ in range(FIRST_LOAD_TRIES):
            # With nothing loaded yet there is no last good to fall back on: wait a little
            # for a save in progress (a process starting while an admin saves).
            if settled or self.loaded:
                break
            stamp, settled = self._settled_stamp()
        if not force and self.loaded and (stamp == self._stamp or not settled):
            return
        try:
            repos = load(self.file)
            if self.loaded and self._current_stamp() != stamp:
                return  # written to while we read it: a later look reads it whole
        except RegistryError as exc:
            if self.error != str(exc):
                log.error(
                    "registry_invalid", file=str(self.file), error=str(exc), kept=len(self._repos)
                )
            self.error = str(exc)
        else:
            if self.loaded and self.error is None:
                log.info("registry_reloaded", file=str(self.file), repos=len(repos))
            self._repos = repos
            self.error = None
        self._stamp = stamp
        self._checked_at = now
        self.loaded = True

    def get(self, name: str) -> Repo:
        """Return one repo by name, or raise UnknownRepo."""
        self.refresh()
        repo = self._repos.get(name)
        if repo is None:
            raise UnknownRepo(f"no repo named {name!r} in the registry")
        return repo

    def find(self, name: str) -> Repo | None:
        self.refresh()
        return self._repos.get(name)

    def __iter__(self) -> Iterator[Repo]:
        self.refresh()
        return iter(list(self._repos.values()))

    def names(self) -> list[str]:
        self.refresh()
        return sorted(self._repos)
