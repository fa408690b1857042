"""The registry (repos.yml): its model, schema, live reloading, edits and secrets."""

from deployhook.registry.live import Registry
from deployhook.registry.model import NAME_RE, Gitea, GitHub, Hooks, Mirror, Repo, Token
from deployhook.registry.schema import load, parse
from deployhook.registry.secrets import (
    repo_token,
    resolve_secrets,
    secret_values,
    token,
    unresolvable,
    webhook_secrets,
)

__all__ = [
    "NAME_RE",
    "GitHub",
    "Gitea",
    "Hooks",
    "Mirror",
    "Registry",
    "Repo",
    "Token",
    "load",
    "parse",
    "repo_token",
    "resolve_secrets",
    "secret_values",
    "token",
    "unresolvable",
    "webhook_secrets",
]
