"""The delivery ledger and per-repo state: every delivery, what became of it, and why.

Bounded under hostile traffic (docs/webhooks.md): names and reasons are cut; past a
number of rejected deliveries a minute per repo (or for unknown names together), the
rest are only counted (pruned_totals, so /metrics still counts every one) and one row
of the minute says how many; and each scope is pruned to its `keep` as rows arrive.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from deployhook import redact
from deployhook.models import (
    Decision,
    Delivery,
    DeliveryKind,
    JobRef,
    Outcome,
    RepoState,
    Trigger,
)
from deployhook.store import queue, totals
from deployhook.store.backend import Tx


@dataclass(frozen=True, slots=True)
class CheckedDelivery:
    """A delivery that passed (or failed) the checks that need no store.

    kind says what it is: a push to the deploy branch, a ping, something ignored, or a
    rejection (with its error). status_of says which HTTP status the answer to a
    decision carries: the web layer's rule, recorded in the ledger with each row.
    """

    repo: str
    kind: DeliveryKind
    received_at: float
    status_of: Callable[[Decision], int]
    delivery_id: str | None = None
    event: str | None = None
    sha: str | None = None
    ref: str | None = None
    reason: str | None = None
    error: Exception | None = None
    node: str = ""
    repo_url: str | None = None
    known: bool = True  # False: the name is not in the registry


# What a row keeps of a name and a reason from the request: enough to tell what it was.
MAX_NAME = 100
MAX_REASON = 300
# The scope of rejected deliveries to names not in the registry, all together.
STRANGERS = ""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much of the ledger is kept (Settings: keep_deliveries, rejected_per_minute)."""

    keep: int = 1000
    rejected_per_minute: int = 120


@dataclass
class Ledger:
    """The limits, and this process's count of rows added per scope since its last prune.

    A scope is pruned in the transaction that adds its every `keep // 100`-th row: the
    bound holds within 1 % per web process, at a prune per that many rows.
    """

    limits: Limits = field(default_factory=Limits)
    _added: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def due(self, scope: str) -> bool:
        with self._lock:
            self._added[scope] += 1
            if self._added[scope] < max(1, self.limits.keep // 100):
                return False
            del self._added[scope]
            return True


def _scope(item: CheckedDelivery) -> str:
    return item.repo[:MAX_NAME] if item.known else STRANGERS


def record(tx: Tx, item: CheckedDelivery, decision: Decision) -> int:
    """Add the ledger row of a delivery and what became of it; return the row's id."""
    job = decision.job or (decision.first.job if decision.first else None)
    kept = decision.first or decision
    row = tx.one(
        "INSERT INTO deliveries (repo, delivery_id, event, received_at, outcome, reason, job_id,"
        " http_status, answer, sha, ref, stranger) VALUES (:repo, :delivery_id, :event,"
        " :received_at, :outcome, :reason, :job_id, :http_status, :answer, :sha, :ref,"
        " :stranger) RETURNING id",
        repo=item.repo[:MAX_NAME],
        delivery_id=item.delivery_id,
        event=item.event,
        received_at=item.received_at,
        outcome=str(decision.outcome),
        reason=redact.mask(decision.reason)[:MAX_REASON] if decision.reason else None,
        job_id=job.id if job else None,
        http_status=item.status_of(decision),
        answer=None if decision.outcome == Outcome.REJECTED else json.dumps(kept.to_record()),
        sha=item.sha,
        ref=item.ref[:MAX_REASON] if item.ref else None,
        stranger=0 if item.known else 1,
    )
    assert row is not None
    return int(row["id"])


def _record_rejected(tx: Tx, item: CheckedDelivery, decision: Decision, limits: Limits) -> bool:
    """Record a rejected delivery within its scope's rows a minute; past them, count it.

    Returns whether a row was added. The first one left out in a minute gets a row that
    says how many were (it counts as one; the others go to the pruned totals), so the
    counters in /metrics still add up to every delivery.
    """
    scope, minute = _scope(item), int(item.received_at // 60)
    row = tx.one(
        "SELECT minute, stored, left_out, summary_id FROM rejected_minutes WHERE scope = :scope",
        scope=scope,
    )
    if row is None or row["minute"] != minute:
        row = {"minute": minute, "stored": 0, "left_out": 0, "summary_id": None}
    added = False
    if row["stored"] < limits.rejected_per_minute:
        record(tx, item, decision)
        row["stored"] += 1
        added = True
    else:
        row["left_out"] += 1
        note = (
            f"{row['left_out']} more rejected deliveries in this minute were left out of the "
            f"ledger (over DEPLOYHOOK_REJECTED_PER_MINUTE={limits.rejected_per_minute}); "
            "/metrics counts them"
        )
        if row["summary_id"] is None:
            summary = Decision(decision.outcome, decision.kind, reason=note, error=decision.error)
            row["summary_id"] = record(tx, item, summary)
            added = True
        else:
            tx.run(
                "UPDATE deliveries SET reason = :reason WHERE id = :id",
                reason=note,
                id=row["summary_id"],
            )
            repo = item.repo[:MAX_NAME] if item.known else totals.OTHER_REPO
            totals.add(tx, {(totals.DELIVERIES, repo, str(Outcome.REJECTED)): 1.0})
    tx.run(
        "INSERT INTO rejected_minutes (scope, minute, stored, left_out, summary_id)"
        " VALUES (:scope, :minute, :stored, :left_out, :summary_id) ON CONFLICT (scope)"
        " DO UPDATE SET minute = excluded.minute, stored = excluded.stored,"
        " left_out = excluded.left_out, summary_id = excluded.summary_id",
        scope=scope,
        **row,
    )
    return added


def ensure_state(tx: Tx, repo: str) -> None:
    tx.run("INSERT INTO repo_state (repo) VALUES (:repo) ON CONFLICT (repo) DO NOTHING", repo=repo)


def state(tx: Tx, repo: str) -> RepoState:
    row = tx.one("SELECT * FROM repo_state WHERE repo = :repo", repo=repo)
    if row is None:
        return RepoState(repo=repo)
    return RepoState(
        repo=row["repo"],
        held=bool(row["held"]),
        held_at=row["held_at"],
        held_sha=row["held_sha"],
        held_ref=row["held_ref"],
        held_delivery=row["held_delivery"],
        seen_head=row["seen_head"],
        seen_at=row["seen_at"],
        repo_url=row["repo_url"],
        problem=row["problem"],
    )


def see_head(tx: Tx, repo: str, sha: str, *, now: float, repo_url: str | None = None) -> bool:
    """Remember the newest branch head deployhook heard of (reconcile compares with it).

    Returns whether the repo is on hold, which the intake needs next: one statement.
    """
    row = tx.one(
        "INSERT INTO repo_state (repo, seen_head, seen_at, repo_url)"
        " VALUES (:repo, :sha, :now, :url) ON CONFLICT (repo) DO UPDATE SET"
        " seen_head = excluded.seen_head, seen_at = excluded.seen_at,"
        " repo_url = COALESCE(excluded.repo_url, repo_state.repo_url) RETURNING held",
        sha=sha,
        now=now,
        url=repo_url,
        repo=repo,
    )
    return bool(row and row["held"])


def _first(tx: Tx, item: CheckedDelivery) -> Decision | None:
    """What the first accepted or ignored delivery with this id became, if any."""
    row = tx.one(
        "SELECT answer, outcome FROM deliveries"
        " WHERE repo = :repo AND delivery_id = :delivery_id"
        " AND outcome NOT IN ('rejected', 'duplicate') ORDER BY id LIMIT 1",
        repo=item.repo,
        delivery_id=item.delivery_id,
    )
    if row is None:
        return None
    kept = json.loads(row["answer"]) if row["answer"] else {}
    return Decision.from_record(kept, outcome=Outcome(row["outcome"]))


def admit(tx: Tx, item: CheckedDelivery, ledger: Ledger | None = None) -> Decision:
    """Decide and record what a checked delivery becomes (docs/webhooks.md, from 'duplicate' on)."""
    ledger = ledger or Ledger()
    decision = _decide(tx, item)
    if decision.outcome == Outcome.REJECTED:
        added = _record_rejected(tx, item, decision, ledger.limits)
    else:
        record(tx, item, decision)
        added = True
    if added and ledger.due(_scope(item)):
        if item.known:
            prune_repo(tx, item.repo[:MAX_NAME], keep=ledger.limits.keep)
        else:
            prune_strangers(tx, keep=ledger.limits.keep)
    return decision


def _decide(tx: Tx, item: CheckedDelivery) -> Decision:
    if item.kind == DeliveryKind.REJECTED:
        return Decision(
            Outcome.REJECTED, item.kind, reason=item.reason or "rejected", error=item.error
        )
    if item.delivery_id:
        first = _first(tx, item)
        if first is not None:
            return Decision(
                Outcome.DUPLICATE,
                item.kind,
                reason=f"delivery {item.delivery_id} was already {first.outcome}",
                first=first,
            )
    if item.kind == DeliveryKind.PING:
        return Decision(Outcome.IGNORED, item.kind, reason="ping")
    if item.kind == DeliveryKind.IGNORED:
        return Decision(Outcome.IGNORED, item.kind, reason=item.reason)
    assert item.kind == DeliveryKind.PUSH and item.sha is not None
    if see_head(tx, item.repo, item.sha, now=item.received_at, repo_url=item.repo_url):
        tx.run(
            "UPDATE repo_state SET held_sha = :sha, held_ref = :ref, held_delivery = :d"
            " WHERE repo = :repo",
            sha=item.sha,
            ref=item.ref,
            d=item.delivery_id,
            repo=item.repo,
        )
        reason = "the repo is on hold; the newest held push deploys on release"
        return Decision(Outcome.HELD, item.kind, reason=reason)
    job, coalesced = queue.enqueue(
        tx,
        repo=item.repo,
        sha=item.sha,
        ref=item.ref,
        trigger=Trigger.PUSH,
        delivery=item.delivery_id,
        node=item.node,
        now=item.received_at,
        repo_url=item.repo_url,
        join_running=True,
    )
    return Decision(
        Outcome.COALESCED if coalesced else Outcome.QUEUED,
        item.kind,
        reason=f"joined {job.status} job {job.id}" if coalesced else f"queued job {job.id}",
        job=JobRef.of(job),
        coalesced=coalesced,
    )


def deliveries(tx: Tx, repo: str, *, limit: int, before: int | None = None) -> list[Delivery]:
    """The repo's newest ledger rows, newest first; before: only rows older than that seq."""
    rows = tx.all(
        "SELECT * FROM deliveries WHERE repo = :repo"
        + (" AND id < :before" if before is not None else "")
        + " ORDER BY id DESC LIMIT :limit",
        repo=repo,
        limit=limit,
        **({"before": before} if before is not None else {}),
    )
    return [
        Delivery(
            id=int(r["id"]),
            repo=r["repo"],
            delivery_id=r["delivery_id"],
            event=r["event"],
            received_at=r["received_at"],
            outcome=Outcome(r["outcome"]),
            reason=r["reason"],
            job=r["job_id"],
            http_status=int(r["http_status"]),
            sha=r["sha"],
        )
        for r in rows
    ]


def set_hold(tx: Tx, repo: str, *, held: bool, now: float) -> RepoState:
    ensure_state(tx, repo)
    if held:
        tx.run(
            "UPDATE repo_state SET held = 1, held_at = COALESCE(held_at, :now) WHERE repo = :repo",
            now=now,
            repo=repo,
        )
    else:
        tx.run(
            "UPDATE repo_state SET held = 0, held_at = NULL, held_sha = NULL,"
            " held_ref = NULL, held_delivery = NULL WHERE repo = :repo",
            repo=repo,
        )
    return state(tx, repo)


def _prune_before(tx: Tx, where: str, *, cutoff: int, label: str, **params: Any) -> int:
    """Delete the rows `where` up to id cutoff, adding them to the pruned totals first."""
    pruned: totals.Totals = defaultdict(float)
    for row in tx.all(
        f"SELECT outcome, COUNT(*) AS n FROM deliveries WHERE {where} AND id <= :cutoff"
        " GROUP BY outcome",
        cutoff=cutoff,
        **params,
    ):
        pruned[(totals.DELIVERIES, label, row["outcome"])] += row["n"]
    totals.add(tx, pruned)
    return tx.run(
        f"DELETE FROM deliveries WHERE {where} AND id <= :cutoff", cutoff=cutoff, **params
    )


def prune_repo(tx: Tx, repo: str, *, keep: int) -> int:
    """Keep a repo's newest `keep` rows."""
    cutoff = tx.value(
        "SELECT id FROM deliveries WHERE repo = :repo ORDER BY id DESC LIMIT 1 OFFSET :keep",
        repo=repo,
        keep=keep,
    )
    if cutoff is None:
        return 0
    return _prune_before(tx, "repo = :repo", cutoff=int(cutoff), label=repo, repo=repo)


def prune_strangers(tx: Tx, *, keep: int) -> int:
    """Keep the newest `keep` rows of names not in the registry, all together."""
    cutoff = tx.value(
        "SELECT id FROM deliveries WHERE stranger = 1 ORDER BY id DESC LIMIT 1 OFFSET :keep",
        keep=keep,
    )
    if cutoff is None:
        return 0
    return _prune_before(tx, "stranger = 1", cutoff=int(cutoff), label=totals.OTHER_REPO)


def prune(tx: Tx, *, keep: int, known: list[str]) -> int:
    """Keep the newest `keep` rows per known repo, and `keep` in all for unknown names
    (names sent to, and repos since removed from the registry)."""
    removed = sum(prune_repo(tx, repo, keep=keep) for repo in known)
    names = {f"k{i}": name for i, name in enumerate(known)}
    not_known = "repo NOT IN (" + ", ".join(f":{k}" for k in names) + ")" if names else "1 = 1"
    cutoff = tx.value(
        f"SELECT id FROM deliveries WHERE {not_known} ORDER BY id DESC LIMIT 1 OFFSET :keep",
        keep=keep,
        **names,
    )
    if cutoff is not None:
        removed += _prune_before(
            tx, not_known, cutoff=int(cutoff), label=totals.OTHER_REPO, **names
        )
    return removed
