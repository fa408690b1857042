"""The operations the HTTP API and the CLI share, over one store and one registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deployhook import log
from deployhook.config import Settings
from deployhook.deploy.steps import git as gitsync
from deployhook.errors import Conflict, StepFailed
from deployhook.intake import receive as intake
from deployhook.intake.receive import Request
from deployhook.models import Decision, Job, Trigger, WorkerInfo
from deployhook.registry import Registry, Repo, secret_values
from deployhook.store import Store, open_store
from deployhook.text import check_sha

# A worker beats every few seconds; one silent for this long is taken for dead.
WORKER_STALE_S = 30.0


@dataclass
class Service:
    """Settings, store and registry, opened once per process."""

    settings: Settings
    store: Store
    registry: Registry

    @classmethod
    def open(cls, settings: Settings) -> Service:
        registry = Registry(settings.registry)
        registry.refresh(force=True)
        return cls(settings=settings, store=open_store(settings), registry=registry)

    def close(self) -> None:
        self.store.close()

    def mask_secrets(self) -> None:
        """Register every secret and token we know of, so no log or shown output holds one."""
        log.redact(
            [self.settings.admin_token, *secret_values(self.registry, default=self.settings.secret)]
        )

    # -- deliveries ------------------------------------------------------------------

    def receive(self, request: Request, *, status_of: Callable[[Decision], int]) -> Decision:
        """Judge, record and (for a push to the deploy branch) queue one webhook delivery."""
        return intake.receive(
            request,
            registry=self.registry,
            store=self.store,
            max_body=self.settings.max_body,
            default_secret=self.settings.secret,
            status_of=status_of,
        )

    # -- deploys ---------------------------------------------------------------------

    def run(self, repo: Repo, *, sha: str | None = None) -> tuple[Job, bool]:
        """Queue a manual deploy of sha, by default the remote branch head."""
        remote_head = sha is None
        if sha is None:
            try:
                sha = gitsync.remote_head(repo, timeout=20)
            except StepFailed as exc:
                raise Conflict(
                    f"cannot read the head of {repo.branch} on {repo.remote}: {exc}"
                ) from None
        return self.store.enqueue(
            repo=repo.name,
            sha=check_sha(sha),
            ref=repo.ref,
            trigger=Trigger.MANUAL,
            node=repo.node,
            remote_head=remote_head,
        )

    def rollback(self, repo: Repo, *, to: str | None = None) -> tuple[Job, bool]:
        """Queue a rollback to `to`, by default the newest good sha other than the deployed one."""
        if to is None:
            deployed = self.store.newest_good_sha(repo.name)
            to = self.store.newest_good_sha(repo.name, other_than=deployed)
            if to is None:
                raise Conflict(f"{repo.name} has no earlier good deploy to roll back to")
        return self.store.enqueue(
            repo=repo.name,
            sha=check_sha(to),
            ref=repo.ref,
            trigger=Trigger.ROLLBACK,
            node=repo.node,
        )

    def release(self, repo: Repo) -> Job | None:
        return self.store.release(repo.name, node=repo.node)

    # -- status ----------------------------------------------------------------------

    def repo_status(self, repo: Repo) -> dict[str, Any]:
        """The body of GET /deploy/<repo>."""
        view = self.store.overview(repo.name)
        return {
            "repo": repo.name,
            "branch": repo.branch,
            "deployed_sha": view.deployed_sha,
            "held": view.state.held,
            "last_job": view.last_job.to_dict() if view.last_job else None,
            "queued": 1 if view.queued else 0,
            "problem": view.state.problem,
        }

    def live_workers(self) -> list[WorkerInfo]:
        """Workers that beat recently, less those whose liveness lock says they died."""
        beating = self.store.workers(since=time.time() - WORKER_STALE_S)
        # A killed worker's last beat stays fresh for a while; its lock goes at once.
        return [
            w
            for w in beating
            if not (self.store.can_tell_liveness(w.host) and self.store.worker_alive(w.id) is False)
        ]

    def problems(self) -> list[str]:
        """What /healthz reports as degraded (deliveries are still accepted)."""
        found = []
        if self.settings.private_status and not self.settings.admin_token:
            found.append(
                "DEPLOYHOOK_PRIVATE_STATUS is on but DEPLOYHOOK_ADMIN_TOKEN is unset: "
                "status answers 401 to everyone"
            )
        self.registry.refresh()
        if self.registry.error:
            found.append(f"registry invalid, last good one in use: {self.registry.error}")
        workers = self.live_workers()
        nodes = {w.node for w in workers}
        needed = {repo.node for repo in self.registry}
        if not workers:
            found.append("no deploy worker is alive: pushes are queued but not deployed")
        else:
            for node in sorted(needed - nodes):
                label = f"node {node!r}" if node else "the default node"
                found.append(f"no live worker for {label}: its repos' jobs wait")
        return found
