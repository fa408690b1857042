"""A checkout's Compose project as Compose itself resolves it: its name and services.

Compose v2 is asked (`config --format json`, in the checkout, with the environment the
deploy's compose ran with). Its answer holds the interpolated environment, so it is
parsed here and never logged or stored. Compose v1 cannot say: for it (and for a v2 that
refuses to answer) the files and `.env` are read by the rules below. v1 (Python, 1.29)
and v2 (Go, compose-go) differ in where they read `.env`, in `name:` and in how they
normalize names; each rule was checked against both binaries
(tests/e2e/test_project_e2e.py).

Either way the environment is the child's (deploy/process.py): deployhook's own
secrets are not in it, so a `.env` that interpolates them resolves as Compose did.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dotenv
import yaml

from deployhook.deploy import compose, process
from deployhook.registry import Repo

CONFIG_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Project:
    """A Compose project: its name (the `com.docker.compose.project` label) and services."""

    name: str
    services: set[str] | None  # None: not known here, take every container of the project


def resolve(
    repo: Repo,
    compose_base: tuple[str, ...],
    *,
    environ: Mapping[str, str] | None = None,
    timeout: float = CONFIG_TIMEOUT_S,
) -> Project:
    """The project as Compose resolves it in the checkout, with the child environment."""
    env = process.child_environ() if environ is None else dict(environ)
    if not compose.is_v1(compose_base):
        asked = _ask(repo, compose_base, env=env, timeout=timeout)
        if asked is not None:
            return asked
    return Project(
        project_name(repo, compose_base, environ=env),
        current_services(repo, compose_base, environ=env),
    )


def _ask(
    repo: Repo, compose_base: tuple[str, ...], *, env: dict[str, str], timeout: float
) -> Project | None:
    """Compose v2's own answer (`config --format json`), or None if it gave none."""
    try:
        done = compose.config(compose_base, repo, "--format", "json", env=env, timeout=timeout)
        doc = json.loads(done.stdout) if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
        return None
    services = doc.get("services")
    wanted = set(repo.services) if repo.services else None
    if wanted is None and isinstance(services, dict):
        wanted = {str(name) for name in services}
    return Project(doc["name"], wanted)


def _normalize_v1(name: str) -> str:
    # compose/cli/command.py get_project_name (1.29)
    return re.sub(r"[^-_a-z0-9]", "", name.lower())


def _normalize_v2(name: str) -> str:
    # compose-go loader.NormalizeProjectName
    return "".join(re.findall(r"[a-z0-9_-]", name.lower())).lstrip("_-")


_VAR_RE = re.compile(
    r"\$(?:(\$)|([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(:?[-+?])([^}]*))?\})"
)


def _interpolate(text: str, env: Mapping[str, str]) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alt}, ${VAR+alt}, $$."""

    def expand(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(3)
        value, op, arg = env.get(name), m.group(4), m.group(5) or ""
        if op in {":-", ":?"}:
            return value if value else (arg if op == ":-" else "")
        if op in {"-", "?"}:
            return value if value is not None else (arg if op == "-" else "")
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _VAR_RE.sub(expand, text)


def _dotenv(directory: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """A `.env` file's values, `${VAR}` expanded from environ and the lines above, as
    Compose does (python-dotenv's own expansion would read this process's environment)."""
    file = directory / ".env"
    if not file.is_file():
        return {}
    try:
        raw = dotenv.dotenv_values(file, encoding="utf-8-sig", interpolate=False)
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, str] = {}
    for key, value in raw.items():
        if value is not None:
            values[key] = _interpolate(value, {**values, **environ})
    return values


@dataclass(frozen=True, slots=True)
class _Config:
    """Which compose files Compose reads in a checkout, and the environment it sees."""

    files: tuple[Path, ...]
    workdir: Path
    env: dict[str, str]


def _config(repo: Repo, *, v1: bool, environ: Mapping[str, str]) -> _Config:
    # Compose runs in the checkout and sees its real path (getcwd), not a symlink to it.
    cwd = Path(os.path.realpath(repo.path))
    root_env = _dotenv(cwd, environ)
    explicit = [cwd / f for f in repo.compose_files]
    from_env = environ.get("COMPOSE_FILE") or root_env.get("COMPOSE_FILE")
    if not explicit and from_env:
        sep = (
            environ.get("COMPOSE_PATH_SEPARATOR")
            or root_env.get("COMPOSE_PATH_SEPARATOR")
            or os.pathsep
        )
        explicit = [cwd / f for f in from_env.split(sep) if f]
    files = explicit or compose.discovered_files(cwd, v1=v1)
    workdir = Path(os.path.normpath(files[0].parent)) if files else cwd
    if v1:
        # 1.29 reads .env beside the first file only when files were named on the
        # command line or in the process environment; else the one in the cwd.
        named = bool(repo.compose_files or environ.get("COMPOSE_FILE"))
        layers = [_dotenv(workdir, environ) if named else root_env]
    else:
        # v2 reads the cwd's .env unless -f moved the project directory, then the
        # project directory's; the first value of a key wins.
        layers = ([] if repo.compose_files else [root_env]) + [_dotenv(workdir, environ)]
    env: dict[str, str] = {}
    for layer in reversed(layers):
        env.update(layer)
    env.update(environ)  # the process environment always wins over .env
    return _Config(tuple(files), workdir, env)


class _AnyTagLoader(yaml.SafeLoader):
    """A SafeLoader that reads Compose's own tags (!reset, !override) as plain values."""


_AnyTagLoader.add_multi_constructor(
    "!",
    lambda loader, _suffix, node: (
        loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
    ),
)


def _documents(files: tuple[Path, ...]) -> list[dict[str, Any]]:
    docs = []
    for file in files:
        with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
            text = file.read_text(encoding="utf-8")
            doc = yaml.load(text, Loader=_AnyTagLoader)  # noqa: S506 - a SafeLoader subclass
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def project_name(
    repo: Repo, compose_base: tuple[str, ...], *, environ: Mapping[str, str] | None = None
) -> str:
    """The compose project name as Compose sets it in the `com.docker.compose.project` label.

    `-p`, else COMPOSE_PROJECT_NAME (process environment, then `.env`), else (v2 only)
    the top-level `name:` of the compose files, else the project directory's name.
    v1 normalizes every source; v2 takes `-p` and COMPOSE_PROJECT_NAME as they are
    (compose refuses an invalid one) and normalizes the others.
    """
    v1 = compose.is_v1(compose_base)
    normalize = _normalize_v1 if v1 else _normalize_v2
    if repo.project_name:
        return normalize(repo.project_name) if v1 else repo.project_name
    env = process.child_environ() if environ is None else environ
    cfg = _config(repo, v1=v1, environ=env)
    if cfg.env.get("COMPOSE_PROJECT_NAME"):
        name = cfg.env["COMPOSE_PROJECT_NAME"]
        return normalize(name) if v1 else name
    if not v1:
        raw = ""
        for doc in _documents(cfg.files):
            if isinstance(doc.get("name"), str) and doc["name"]:
                raw = doc["name"]  # a later file overrides an earlier one
        if raw:
            return normalize(_interpolate(raw, cfg.env))
    return normalize(cfg.workdir.name) if cfg.workdir.name else "default"


def current_services(
    repo: Repo, compose_base: tuple[str, ...], *, environ: Mapping[str, str] | None = None
) -> set[str] | None:
    """The services the compose files declare (active profiles only); None if unknown.

    Containers of other services are orphans that `up` left alone: not this deploy's.
    """
    if repo.services:
        return set(repo.services)
    env = process.child_environ() if environ is None else environ
    cfg = _config(repo, v1=compose.is_v1(compose_base), environ=env)
    docs = _documents(cfg.files)
    if not docs or any("include" in doc for doc in docs):
        return None  # included files bring services we don't resolve: take them all
    profiles = {p.strip() for p in cfg.env.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    declared: dict[str, list[str]] = {}
    for doc in docs:
        services = doc.get("services")
        for name, spec in services.items() if isinstance(services, dict) else ():
            wanted = spec.get("profiles") if isinstance(spec, dict) else None
            if isinstance(wanted, list):  # a later file's profiles replace an earlier's
                declared[str(name)] = [str(p) for p in wanted]
            else:
                declared.setdefault(str(name), [])
    return {
        name
        for name, wanted in declared.items()
        if not wanted or "*" in profiles or profiles & set(wanted)
    }
