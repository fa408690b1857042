"""The DeployhookError family: each class says when it is raised.

Each edge translates them in one place: the web layer maps classes to HTTP statuses,
the CLI turns them into one line on stderr and an exit code.
"""

from __future__ import annotations


class DeployhookError(Exception):
    """Base of every error deployhook raises on purpose."""


class ConfigError(DeployhookError):
    """Raised when a setting, the registry file or a repo entry is invalid."""


class RegistryError(ConfigError):
    """Raised when repos.yml cannot be read or does not validate.

    The message names the file, the repo and the key, so one line tells the admin what
    to fix.
    """


class NoStore(ConfigError):
    """Raised when a read-only command finds no store where the settings say it is.

    Only `serve` and `worker` (and commands that queue a job) create one: a command
    that only reads must not leave an empty store where the server will never look.
    """


class UnknownRepo(DeployhookError):
    """Raised when a name is not in the registry."""


class UnknownJob(DeployhookError):
    """Raised when a job id is not in the store."""


class SecretNotConfigured(DeployhookError):
    """Raised when a repo's webhook secret cannot be resolved (env var unset, file missing)."""


class DeliveryRejected(DeployhookError):
    """Base of the reasons a webhook delivery is refused before it reaches the queue."""


class BodyTooLarge(DeliveryRejected):
    """Raised when a body is over DEPLOYHOOK_MAX_BODY, by Content-Length or while reading."""


class UnsupportedContentType(DeliveryRejected):
    """Raised when a body is neither JSON nor a form with a `payload` field."""


class MissingSignature(DeliveryRejected):
    """Raised when a delivery carries no usable signature header."""


class BadSignature(DeliveryRejected):
    """Raised when the signature does not match the body under any configured secret."""


class BadPayload(DeliveryRejected):
    """Raised when a verified body is not JSON or not a push payload."""


class SourceMismatch(DeliveryRejected):
    """Raised when the payload's repository.full_name is not the repo's `source`."""


class StoreUnavailable(DeployhookError):
    """Raised when the store cannot be written (disk full, read-only, locked for too long)."""


class WriteFailed(DeployhookError):
    """Raised when an edited file (repos.yml) cannot be written; the old one is left intact."""


class InvalidRequest(DeployhookError):
    """Raised when an API or CLI argument is malformed (a sha that is not a commit id)."""


class Conflict(DeployhookError):
    """Raised when an admin action does not apply to the current state (409)."""


class Unauthorized(DeployhookError):
    """Raised when an admin request has no valid token."""


class CrossSite(DeployhookError):
    """Raised when a browser's credentials come with a state-changing request from another
    site (Fetch Metadata or Origin say so): a cross-site request forgery."""


class AdminDisabled(DeployhookError):
    """Raised when an admin endpoint is called but DEPLOYHOOK_ADMIN_TOKEN is unset."""


class StepFailed(DeployhookError):
    """Raised inside a deploy step; its message becomes the job's one-line error."""


class NothingToDo(DeployhookError):
    """Raised inside a deploy when there is nothing to deploy; the job ends `skipped` and
    its message becomes the job's note."""


class JobCancelled(StepFailed):
    """Raised inside a deploy when an admin cancelled the job."""


class JobTimedOut(StepFailed):
    """Raised inside a deploy when the job ran past its repo's `timeout`."""
