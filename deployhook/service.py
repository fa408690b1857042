"""The use cases the HTTP API and the CLI share, over one store and one registry.

Both edges call only this: they translate requests and commands to these calls, and the
answers and errors back. The store is opened on first use, so commands that need only
the registry (`repos check`, `deliver`, `hook create`) never open or create one.
"""

from __future__ import annotations

import functools
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployhook import summary, tail
from deployhook.config import Settings, find_registry
from deployhook.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NoStore,
    SecretNotConfigured,
    StepFailed,
    UnknownJob,
)
from deployhook.intake.receive import Intake, Request, Routed
from deployhook.models import (
    FD_WARN_SHARE,
    JOB_STUCK_GRACE_S,
    Decision,
    Delivery,
    Job,
    LogLine,
    Mode,
    RepoState,
    Status,
    Trigger,
    WorkerInfo,
    iso,
)
from deployhook.registry import (
    Registry,
    Repo,
    Token,
    resolve_secrets,
    secret_values,
    token,
    webhook_secrets,
)
from deployhook.store import Store, open_store, totals
from deployhook.text import check_sha

if TYPE_CHECKING:
    from deployhook import preflight

# A worker beats every few seconds; one silent for this long is taken for dead.
WORKER_STALE_S = 30.0
# A worker claims a job the moment it is queued when it has a free slot; one queued this
# long while a live worker of its node has a free slot (and its repo runs nothing) is
# not being picked up.
CLAIM_OVERDUE_S = 30.0
# Workers silent for longer than this (and never stopped) are not shown: a host that was
# retired long ago should not clutter the page forever.
WORKERS_SHOWN_FOR_S = 24 * 3600.0
REMOTE_TIMEOUT_S = 20
# How long `repos remove --down` waits for a cancelled running job to end.
TAKE_DOWN_WAIT_S = 120.0


class Service:
    """Settings, registry and (opened on first use) store, once per process."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        store: Store | None = None,
        *,
        create_store: bool = True,
    ):
        self.settings = settings
        self.registry = registry
        self._store = store
        self._create_store = create_store

    @classmethod
    def open(cls, settings: Settings, *, create_store: bool = True) -> Service:
        """create_store=False: for commands that only read; a missing store is NoStore."""
        registry = Registry(settings.registry)
        registry.refresh(force=True)
        return cls(settings, registry, create_store=create_store)

    @functools.cached_property
    def store(self) -> Store:
        if self._store is None and not self._create_store:
            missing = self.store_missing()
            if missing:
                raise NoStore(missing)
        return self._store or open_store(self.settings)

    def store_missing(self) -> str | None:
        """Why there is no store to read yet (SQLite only: a server creates it), or None."""
        path = self.settings.database_path
        if self.settings.database_url or path.exists():
            return None
        return (
            f"no store yet at {path}: `deployhook serve` (or `deployhook worker`) creates it. "
            f"If a server runs, its store is elsewhere: run this where it runs, or give "
            f"DEPLOYHOOK_DATA_DIR (or DEPLOYHOOK_REGISTRY) as it has them"
        )

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()

    # -- the registry ------------------------------------------------------------------

    def repo(self, name: str) -> Repo:
        """One repo by name, or UnknownRepo."""
        return self.registry.get(name)

    def repos(self) -> list[Repo]:
        """Every repo, in the registry file's order."""
        return list(self.registry)

    @property
    def registry_error(self) -> str | None:
        """Why the registry file is refused (the last good one serves), or None."""
        return self.registry.error

    def add_repo_command(self) -> str:
        """The exact command that adds a repo to the registry this process serves.

        `cd DIR &&` when the file is found from this process's directory (a command run
        elsewhere would look elsewhere), DEPLOYHOOK_REGISTRY=... when it is not found at
        all; bare for /etc/deployhook/repos.yml. The program as this process runs it.
        """
        here = Path.cwd()
        program = Path(sys.executable).parent / "deployhook"
        cli = "deployhook"
        if program.is_file() and shutil.which("deployhook") != str(program):
            cli = str(program.relative_to(here) if program.is_relative_to(here) else program)
        command = f"{shlex.quote(cli)} repos add NAME --path /path/to/checkout"
        registry = self.settings.registry.absolute()
        found = find_registry(here)
        if found is None or found.resolve() != registry.resolve():
            return f"DEPLOYHOOK_REGISTRY={shlex.quote(str(registry))} {command}"
        if registry.is_relative_to(here):
            return f"cd {shlex.quote(str(here))} && {command}"
        return command

    @property
    def registry_is_example(self) -> bool:
        """Whether the registry is the example tracked in a git checkout of deployhook."""
        shipped = Path(__file__).resolve().parents[1] / "repos.yml"
        return self.settings.registry.resolve() == shipped

    def add_repo(self, name: str, entry: dict[str, Any]) -> Repo:
        """Add an entry to repos.yml, keeping the file's comments and layout."""
        from deployhook.registry import edit  # ruamel.yaml: only for an edit

        return edit.add_repo(self.settings.registry, name, entry)

    def remove_repo(self, name: str) -> None:
        from deployhook.registry import edit

        edit.remove_repo(self.settings.registry, name)

    def down_problem(self, repo: Repo) -> str | None:
        """Why `repos remove --down` cannot take repo's stack down, or None."""
        where = f"{self.settings.registry}: repos.{repo.name}"
        if repo.mode != Mode.COMPOSE:
            return (
                f"{where}.mode: {repo.mode}: --down runs compose down; "
                "remove a stack with `docker stack rm`"
            )
        if not repo.path.is_dir():
            return (
                f"{where}.path: {repo.path} does not exist: nothing to take down "
                "(remove it without --down)"
            )
        return None

    def take_down(
        self,
        repo: Repo,
        *,
        output: Callable[[str], None],
        wait_s: float | None = None,
        poll_s: float = 0.2,
    ) -> None:
        """Stop a repo's stack for good (`repos remove --down`): cancel its queued and
        running jobs, wait for a running one to end, then `compose down` in its checkout,
        with the children's environment of a deploy (volumes kept).

        Raises Conflict when a job does not end in time (compose down is then not run:
        it would race the deploy), StepFailed when compose down fails.
        """
        from deployhook.deploy import compose, process

        problem = self.down_problem(repo)
        if problem:
            raise ConfigError(problem)
        wait_s = TAKE_DOWN_WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        while True:
            active = self.store.active_jobs(repo.name)
            if not active:
                break
            for job in active:
                if job.status == Status.RUNNING and job.cancel_requested:
                    continue
                try:
                    done = self.store.cancel(job.id)
                except Conflict:  # it ended meanwhile
                    continue
                if done.status == Status.CANCELLED:
                    output(f"cancelled job {done.id} ({done.trigger} at {done.sha[:12]})")
                else:
                    output(f"asked the worker to stop job {done.id}; waiting for it to end")
            if time.monotonic() >= deadline:
                running = ", ".join(str(j.id) for j in active)
                raise Conflict(
                    f"job {running} of {repo.name} is still running after {wait_s:g} s: "
                    "compose down not run (is a deploy worker alive?)"
                )
            time.sleep(poll_s)
        argv = compose.down_argv(compose.command(self.settings.compose), repo)
        output("$ " + " ".join(argv))
        code = process.run(
            argv,
            cwd=repo.path,
            output=output,
            deadline=process.Deadline(repo.timeout),
            cancel=threading.Event(),
            env=process.child_environ(),
        )
        if code != 0:
            raise StepFailed(f"compose down exited with {code} in {repo.path}")

    def check_repos(self) -> preflight.Report:
        """This host's and each repo's problems, as `repos check` shows them."""
        from deployhook import preflight  # git and the Docker SDK: only for a check

        return preflight.check_all(self.repos(), self.settings)

    def secret(self, repo: Repo) -> str:
        """The repo's current webhook secret (the first, when several rotate)."""
        return resolve_secrets(repo, default=self.settings.secret)[0]

    # -- deliveries ------------------------------------------------------------------

    @functools.cached_property
    def intake(self) -> Intake:
        """The judge of webhook deliveries (docs/webhooks.md), on this registry and store."""
        return Intake(
            registry=self.registry,
            store=self.store,
            max_body=self.settings.max_body,
            default_secret=self.settings.secret,
        )

    def receive(self, request: Request, *, status_of: Callable[[Decision], int]) -> Decision:
        """Judge, record and (for a push to the deploy branch) queue one webhook delivery."""
        return self.intake.receive(request, status_of=status_of)

    def receive_routed(self, request: Request, *, status_of: Callable[[Decision], int]) -> Routed:
        """`POST /deploy`: an organisation's delivery, routed to the entries it verifies for."""
        return self.intake.receive_routed(request, status_of=status_of)

    # -- deploys ---------------------------------------------------------------------

    def remote_head(self, repo: Repo) -> str:
        """The sha at the tip of the repo's branch on its remote."""
        from deployhook.deploy.steps import git

        return git.remote_head(repo, timeout=REMOTE_TIMEOUT_S)

    def run(self, name: str, *, sha: str | None = None) -> tuple[Job, bool]:
        """Queue a manual deploy of sha, by default the remote branch head."""
        repo = self.repo(name)
        remote_head = sha is None
        if sha is None:
            try:
                sha = self.remote_head(repo)
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

    def rollback(self, name: str, *, to: str | None = None) -> tuple[Job, bool]:
        """Queue a rollback to `to`, by default the newest good sha other than the deployed one."""
        repo = self.repo(name)
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

    def cancel(self, job_id: int) -> Job:
        """Cancel a queued job now, or ask a running one's worker to stop it."""
        return self.store.cancel(job_id)

    def hold(self, name: str) -> RepoState:
        return self.store.hold(self.repo(name).name)

    def release(self, name: str) -> Job | None:
        """Lift a hold; the newest push that arrived while held is queued (and returned)."""
        repo = self.repo(name)
        return self.store.release(repo.name, node=repo.node)

    # -- status ----------------------------------------------------------------------

    def job(self, job_id: int) -> Job:
        return self.store.job(job_id)

    def jobs(self, name: str, *, limit: int = 20) -> list[Job]:
        return self.store.jobs(self.repo(name).name, limit=limit)

    def latest_job(self, name: str) -> Job:
        """The repo's newest job, whatever its status; UnknownJob when it has none."""
        repo = self.repo(name)
        found = self.store.jobs(repo.name, limit=1)
        if not found:
            raise UnknownJob(f"repo {repo.name} has no jobs yet")
        return found[0]

    def deliveries(
        self, name: str, *, limit: int = 50, before: int | None = None
    ) -> tuple[list[Delivery], int | None]:
        """One page of the repo's ledger, newest first, and the `before` of the next page
        (None: this is the last). before: only rows older than that seq."""
        if before is not None and before < 1:
            raise InvalidRequest(f"before must be a positive seq, got {before}")
        rows = self.store.deliveries(self.repo(name).name, limit=limit + 1, before=before)
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    def summaries(self, names: list[str] | None = None) -> list[summary.RepoSummary]:
        """One line per repo (default: every repo), in name order."""
        repos = {r.name: r for r in self.registry}
        wanted = sorted(repos) if names is None else [self.repo(n).name for n in names]
        views = self.store.overviews(wanted)
        return [summary.summarize(repos[n], v) for n, v in zip(wanted, views, strict=True)]

    def repo_history(
        self, name: str, *, jobs: int = 30, deliveries: int = 30
    ) -> tuple[summary.RepoSummary, list[Job], list[Delivery]]:
        """One repo's page: its line, its newest jobs and its newest ledger rows."""
        [line] = self.summaries([name])
        return (
            line,
            self.store.jobs(line.repo, limit=jobs),
            self.store.deliveries(line.repo, limit=deliveries),
        )

    def overview(self) -> dict[str, Any]:
        """The body of GET /api/overview: every repo at a glance."""
        return {
            "repos": [r.to_dict() for r in self.summaries()],
            "generated_at": iso(time.time()),
            "registry_error": self.registry_error,
        }

    def repo_status(self, name: str) -> dict[str, Any]:
        """The body of GET /deploy/<repo>."""
        repo = self.repo(name)
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

    def output(
        self, job_id: int, *, follow: bool = False, gone: Callable[[], bool] = lambda: False
    ) -> Iterator[str]:
        """A job's output lines, secrets masked; raises UnknownJob at once if there is none."""
        secret_values(self.registry, default=self.settings.secret)  # rotated files: read again
        return tail.lines(self.store, job_id, follow=follow, gone=gone)

    def new_output(self, job_id: int, *, after: int = 0) -> list[LogLine]:
        """A job's output lines past line number `after`, as stored (masked when written)."""
        return self.store.log_lines(job_id, after=after)

    def metrics_snapshot(self) -> totals.Snapshot:
        return self.store.metrics_snapshot()

    def live_workers(self) -> list[WorkerInfo]:
        """Workers that beat recently, less those whose liveness lock says they died."""
        beating = self.store.workers(since=time.time() - WORKER_STALE_S)
        # A killed worker's last beat stays fresh for a while; its lock goes at once.
        return [
            w
            for w in beating
            if not (self.store.can_tell_liveness(w.host) and self.store.worker_alive(w.id) is False)
        ]

    def workers_by_node(self, *, now: float | None = None) -> list[dict[str, Any]]:
        """Every node that has repos or workers: its repos, workers, and whether one is alive.

        The default node (repos without `node:`, workers without DEPLOYHOOK_NODE) is `None`.
        """
        now = time.time() if now is None else now
        pinned: dict[str, list[str]] = {}
        for repo in self.registry:
            pinned.setdefault(repo.node, []).append(repo.name)
        workers: dict[str, list[dict[str, Any]]] = {}
        for worker in self.store.workers(since=now - WORKERS_SHOWN_FOR_S):
            age = max(now - worker.heartbeat_at, 0.0)
            workers.setdefault(worker.node, []).append(
                {
                    "id": worker.id,
                    "host": worker.host,
                    "pid": worker.pid,
                    "slots": worker.slots,
                    "started_at": iso(worker.started_at),
                    "heartbeat_at": iso(worker.heartbeat_at),
                    "heartbeat_age_s": round(age, 1),
                    "alive": age <= WORKER_STALE_S,
                }
            )
        return [
            {
                "node": node or None,
                "repos": sorted(pinned.get(node, [])),
                "workers": workers.get(node, []),
                "alive": any(w["alive"] for w in workers.get(node, [])),
            }
            for node in sorted(set(pinned) | set(workers))
        ]

    def unwritable(self) -> str | None:
        """Why deliveries cannot be stored now, or None when they can."""
        return self.store.writable()

    def problems(self) -> list[str]:
        """What /healthz reports as degraded (deliveries are still accepted)."""
        found = []
        if self.settings.private_status and not self.settings.admin_token:
            found.append(
                "status is private but no admin token is set: DEPLOYHOOK_PRIVATE_STATUS is on, "
                "DEPLOYHOOK_ADMIN_TOKEN is unset, status answers 401 to everyone"
            )
        self.registry.refresh()
        if self.registry.error:
            found.append(f"registry invalid, last good one in use: {self.registry.error}")
        for repo in self.registry:
            try:
                resolve_secrets(repo, default=self.settings.secret)
            except SecretNotConfigured as exc:
                found.append(f"repo {repo.name} cannot verify pushes (they answer 503): {exc}")
        workers = self.live_workers()
        nodes = {w.node for w in workers}
        needed = {repo.node for repo in self.registry}
        if not workers:
            found.append("no deploy worker is alive: pushes are queued but not deployed")
        else:
            for node in sorted(needed - nodes):
                label = f"node {node!r}" if node else "the default node"
                found.append(f"no live worker for {label}: its repos' jobs wait")
        found.extend(self._worker_problems(workers))
        return found

    def _worker_problems(self, workers: list[WorkerInfo]) -> list[str]:
        """A worker alive but not doing its work: a job stuck past its timeout, a job
        waiting while a worker has a free slot, a worker near its descriptor limit."""
        found = []
        now = time.time()
        running = self.store.running_jobs()
        for job in running:
            repo = self.registry.find(job.repo)
            if repo is None or job.started_at is None:
                continue
            age = now - job.started_at
            if age > repo.timeout + JOB_STUCK_GRACE_S:
                found.append(
                    f"a deploy is stuck: job {job.id} of {job.repo} has run {age:.0f} s, past "
                    f"its timeout ({repo.timeout:g} s) and a {JOB_STUCK_GRACE_S:.0f} s grace"
                )
        busy = {job.repo for job in running}
        slots: dict[str, int] = {}
        for worker in workers:
            slots[worker.node] = slots.get(worker.node, 0) + worker.slots
        used: dict[str, int] = {}
        for job in running:
            used[job.node] = used.get(job.node, 0) + 1
        for job in self.store.waiting_jobs(since=now - CLAIM_OVERDUE_S):
            if job.repo in busy or used.get(job.node, 0) >= slots.get(job.node, 0):
                continue  # it waits for its repo's running job, or for a free slot
            found.append(
                f"a queued job is not picked up: job {job.id} of {job.repo} has waited "
                f"{now - job.created_at:.0f} s while a worker has a free slot"
            )
            break
        for worker in workers:
            if (
                worker.fds is not None
                and worker.fd_limit
                and (worker.fds >= worker.fd_limit * FD_WARN_SHARE)
            ):
                found.append(
                    f"a deploy worker is near its file descriptor limit: {worker.id} has "
                    f"{worker.fds} of {worker.fd_limit} open"
                )
        return found

    # -- the forge ---------------------------------------------------------------------

    def create_hook(self, name: str) -> str:
        """Create (or update) the Gitea push webhook that deploys NAME; say what was done."""
        from deployhook.forges import gitea

        repo = self.repo(name)
        registry_file: Path = self.settings.registry
        if not self.settings.public_url:
            raise ConfigError("DEPLOYHOOK_PUBLIC_URL is not set: Gitea needs the URL to deliver to")
        try:
            target = gitea.connect(repo)
        except gitea.ForgeNotConfigured as exc:
            raise ConfigError(f"{registry_file}: {exc}") from None
        url = f"{self.settings.public_url}/deploy/{repo.name}"
        try:
            action, hook_id = gitea.ensure_hook(
                target, url=url, secret=self.secret(repo), branch=repo.branch
            )
        except gitea.ForgeError as exc:
            token_env = (
                Token("gitea.token", repo.gitea.token_env, repo.gitea.token_file).origin
                if repo.gitea
                else None
            )
            raise gitea.ForgeError(gitea.explain(exc, target, token_env=token_env)) from None
        return (
            f"{action} hook {hook_id} on {target.full_name} ({target.client.url}) "
            f"delivering pushes to {repo.branch} to {url}"
        )

    def create_org_hook(
        self, org: str, *, gitea_url: str, token_env: str, secret_env: str | None
    ) -> list[str]:
        """Create (or update) an organisation's push webhook on Gitea, pointing at
        `POST /deploy`; say what was done, and which entries its secret routes to."""
        from deployhook.forges import gitea

        if not self.settings.public_url:
            raise ConfigError("DEPLOYHOOK_PUBLIC_URL is not set: Gitea needs the URL to deliver to")
        if not gitea_url.startswith(("https://", "http://")):
            raise ConfigError(f"--gitea-url: {gitea_url!r} is not an http:// or https:// URL")
        try:
            api_token = token(token_env, what="--token-env")
            secrets = webhook_secrets(secret_env, default=self.settings.secret)
        except SecretNotConfigured as exc:
            raise ConfigError(str(exc)) from None
        client = gitea.Gitea(gitea_url.rstrip("/"), api_token)
        url = f"{self.settings.public_url}/deploy"
        try:
            action, hook_id = gitea.ensure_org_hook(client, org, url=url, secret=secrets[0])
        except gitea.ForgeError as exc:
            raise gitea.ForgeError(
                gitea.explain_org(exc, client, org, token_env=token_env)
            ) from None
        lines = [
            f"{action} hook {hook_id} on organisation {org} ({client.url}) "
            f"delivering pushes to {url}"
        ]
        routed = []
        for repo in self.registry:
            try:
                own = resolve_secrets(repo, default=self.settings.secret)
            except SecretNotConfigured:
                continue
            if repo.source and secrets[0] in own:
                routed.append(f"{repo.name} ({', '.join(repo.source)})")
        if routed:
            lines.append("its secret deploys: " + "; ".join(routed))
        else:
            lines.append(
                "warning: no entry with a source has this secret: every delivery answers 403 "
                "until one has (secret_env, and source: owner/name)"
            )
        return lines
