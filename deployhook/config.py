"""Settings: built-in defaults < environment (DEPLOYHOOK_*) < command-line flags."""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployhook import redact
from deployhook.errors import ConfigError

PREFIX = "DEPLOYHOOK_"
# How `serve` hands its worker the pipe the worker tells it is well through (server.py,
# deploy/worker.py): the descriptor's number. Not a setting.
WATCHDOG_ENV = "DEPLOYHOOK_WATCHDOG_FD"
# The admin token guards root-equivalent actions: long enough not to be guessed online.
MIN_ADMIN_TOKEN = 16
# Settings that may come from a file instead, as Docker and Compose secrets provide them:
# DEPLOYHOOK_<NAME>_FILE is a path whose content (stripped) is the value.
FROM_FILE = ("secret", "admin_token", "database_url")

# Where the registry is looked for when DEPLOYHOOK_REGISTRY is unset, first found wins
# (docs/settings.md): a live registry beside a checkout of deployhook (config/ is
# git-ignored, so `git pull` never touches it), the file in the current directory (a
# checkout's tracked example), the system-wide one. Relative ones: from the current
# directory.
REGISTRY_CANDIDATES: tuple[Path, ...] = (
    Path("config/repos.yml"),
    Path("repos.yml"),
    Path("/etc/deployhook/repos.yml"),
)


def find_registry(
    cwd: Path | None = None, candidates: tuple[Path, ...] = REGISTRY_CANDIDATES
) -> Path | None:
    """The first candidate registry file that exists (absolute), or None."""
    base = Path.cwd() if cwd is None else cwd
    for candidate in candidates:
        path = base / candidate  # an absolute candidate stays as it is
        if path.is_file():
            return path
    return None


def registry_not_found(cwd: Path | None = None) -> str:
    """What to say when DEPLOYHOOK_REGISTRY is unset and no candidate exists."""
    base = Path.cwd() if cwd is None else cwd
    looked = ", ".join(str(base / c) for c in REGISTRY_CANDIDATES)
    return (
        f"no registry found (looked for {looked}): run this where deployhook serve runs, "
        f"or set {PREFIX}REGISTRY"
    )


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"{PREFIX}{name}: {value} must not be negative")
    return value


def _flag(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"", "0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{PREFIX}{name}: {raw!r} is not a boolean (use 1 or 0)")


def _bind(name: str, raw: str) -> str:
    if raw.startswith("unix:"):
        return raw
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigError(f"{PREFIX}{name}: {raw!r} is not HOST:PORT")
    return raw


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in allowed:
            raise ConfigError(f"{PREFIX}{name}: {raw!r} is not one of {', '.join(allowed)}")
        return raw

    return parse


def _read_file(variable: str, path: str) -> str:
    """The content of a *_FILE setting's file, stripped, and now registered as secret."""
    try:
        return redact.read_file(Path(path))
    except ValueError as exc:
        raise ConfigError(f"{variable}: {path} {exc}") from None


def _optional(_name: str, raw: str) -> str | None:
    return raw or None


def _path(_name: str, raw: str) -> Path:
    return Path(raw)


def _command(name: str, raw: str) -> tuple[str, ...] | None:
    if not raw.strip():
        return None
    try:
        return tuple(shlex.split(raw))
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name}: {exc}") from None


def _database_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    if not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{PREFIX}{name}: only postgresql://... URLs are supported")
    return raw


def _from_files(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """The settings given as DEPLOYHOOK_<NAME>_FILE: name -> (value, path)."""
    found: dict[str, tuple[Any, str]] = {}
    for name in FROM_FILE:
        variable = f"{name.upper()}_FILE"
        path = (env.get(PREFIX + variable) or "").strip()
        if not path:
            continue
        if (env.get(PREFIX + name.upper()) or "").strip():
            raise ConfigError(
                f"{PREFIX}{name.upper()} and {PREFIX}{variable} are both set: "
                "give the value or the file, not both"
            )
        found[name] = (_PARSERS[name](variable, _read_file(PREFIX + variable, path)), path)
    return found


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, resolved once per process."""

    registry: Path = Path("repos.yml")
    data_dir: Path = Path("data")
    bind: str = "127.0.0.1:8000"
    web_processes: int = 2
    web_threads: int = 32
    secret: str | None = field(default=None, repr=False)
    admin_token: str | None = field(default=None, repr=False)
    workers: int = 2
    compose: tuple[str, ...] | None = None
    public_url: str | None = None
    max_body: int = 5 * 1024 * 1024
    max_output: int = 1024 * 1024
    log_format: str = "auto"
    log_level: str = "info"
    private_status: bool = False
    keep_jobs: int = 100
    keep_deliveries: int = 1000
    reconcile_interval: int = 300
    database_url: str | None = field(default=None, repr=False)
    node: str = ""  # "" is the default node
    stop_grace: int = 600
    worker_id: str | None = None
    worker_watchdog: int = 60
    rejected_per_minute: int = 120
    prune_interval: int = 300
    # (setting, path) of those read from DEPLOYHOOK_<NAME>_FILE: children get the path.
    files: tuple[tuple[str, str], ...] = ()

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from an environment mapping, then apply non-None overrides.

        Unset, the registry is the first of REGISTRY_CANDIDATES that exists, and the data
        dir is `data/` beside it.
        """
        env = os.environ if environ is None else environ
        files = _from_files(env)
        values: dict[str, Any] = {name: value for name, (value, _path) in files.items()}
        values["files"] = tuple((name, path) for name, (_value, path) in files.items())
        for name, parse in _PARSERS.items():
            raw = env.get(PREFIX + name.upper())
            if raw is not None and name not in files:
                values[name] = parse(name.upper(), raw.strip() if name != "secret" else raw)
        for name, given in overrides.items():
            if given is None:
                continue
            if name in FROM_FILE:  # given outright: no longer from its file
                values["files"] = tuple(f for f in values["files"] if f[0] != name)
            if isinstance(given, str) and name in _PARSERS:
                values[name] = _PARSERS[name](name.upper(), given)
            else:
                values[name] = given
        if "registry" not in values:
            values["registry"] = find_registry() or Path("repos.yml")
        if "data_dir" not in values:
            # Beside the registry, not in the current directory: every command that
            # finds the server's registry finds its store too.
            values["data_dir"] = values["registry"].parent / "data"
        settings = cls(**values)
        # Read: now secret. Nothing this process prints may show them from here on.
        redact.register([settings.secret, settings.admin_token, settings.database_url])
        if settings.admin_token and len(settings.admin_token) < MIN_ADMIN_TOKEN:
            source = "ADMIN_TOKEN_FILE" if "admin_token" in dict(settings.files) else "ADMIN_TOKEN"
            raise ConfigError(
                f"{PREFIX}{source}: {len(settings.admin_token)} characters, at least "
                f"{MIN_ADMIN_TOKEN} needed (make one: openssl rand -hex 32)"
            )
        if settings.web_processes < 1:
            raise ConfigError(f"{PREFIX}WEB_PROCESSES: must be at least 1")
        if settings.workers < 1:
            raise ConfigError(f"{PREFIX}WORKERS: must be at least 1")
        return settings

    def to_environ(self) -> dict[str, str]:
        """Render these settings as DEPLOYHOOK_* variables, for child processes."""
        env: dict[str, str] = {}
        from_files = dict(self.files)
        for name, path in from_files.items():
            env[f"{PREFIX}{name.upper()}_FILE"] = path  # the child reads the file itself
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None or value == "" or item.name == "files" or item.name in from_files:
                continue
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, tuple):
                text = shlex.join(value)
            else:
                text = str(value)
            env[PREFIX + item.name.upper()] = text
        return env

    @property
    def database_path(self) -> Path:
        return self.data_dir / "deployhook.sqlite3"


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "registry": _path,
    "data_dir": _path,
    "bind": _bind,
    "web_processes": _positive_int,
    "web_threads": _positive_int,
    "secret": _optional,
    "admin_token": _optional,
    "workers": _positive_int,
    "compose": _command,
    "public_url": lambda _n, raw: raw.rstrip("/") or None,
    "max_body": _positive_int,
    "max_output": _positive_int,
    "log_format": _choice("auto", "json", "console"),
    "log_level": _choice("debug", "info", "warning", "error"),
    "private_status": _flag,
    "keep_jobs": _positive_int,
    "keep_deliveries": _positive_int,
    "reconcile_interval": _positive_int,
    "database_url": _database_url,
    "node": lambda _n, raw: raw,
    "stop_grace": _positive_int,
    "worker_id": _optional,
    "worker_watchdog": _positive_int,
    "rejected_per_minute": _positive_int,
    "prune_interval": _positive_int,
}
