"""The registry (repos.yml): its model, schema, live reloading, edits and secrets."""

from deployhook.registry.live import Registry
from deployhook.registry.model import NAME_RE, Gitea, Hooks, Mirror, Repo
from deployhook.registry.schema import load, parse
from deployhook.registry.secrets import resolve_secrets, secret_values

__all__ = [
    "NAME_RE",
    "Gitea",
    "Hooks",
    "Mirror",
    "Registry",
    "Repo",
    "load",
    "parse",
    "resolve_secrets",
    "secret_values",
]
