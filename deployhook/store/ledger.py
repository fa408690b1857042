"""The delivery ledger and per-repo state: every delivery, what became of it, and why."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

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


def record(tx: Tx, item: CheckedDelivery, decision: Decision) -> None:
    """Add the ledger row of a delivery and what became of it."""
    job = decision.job or (decision.first.job if decision.first else None)
    kept = decision.first or decision
    tx.run(
        "INSERT INTO deliveries (repo, delivery_id, event, received_at, outcome, reason, job_id,"
        " http_status, answer, sha, ref) VALUES (:repo, :delivery_id, :event, :received_at,"
        " :outcome, :reason, :job_id, :http_status, :answer, :sha, :ref)",
        repo=item.repo[:200],
        delivery_id=item.delivery_id,
        event=item.event,
        received_at=item.received_at,
        outcome=str(decision.outcome),
        reason=redact.mask(decision.reason) if decision.reason else None,
        job_id=job.id if job else None,
        http_status=item.status_of(decision),
        answer=None if decision.outcome == Outcome.REJECTED else json.dumps(kept.to_record()),
        sha=item.sha,
        ref=item.ref,
    )


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


def admit(tx: Tx, item: CheckedDelivery) -> Decision:
    """Decide and record what a checked delivery becomes (docs/webhooks.md, from 'duplicate' on)."""
    decision = _decide(tx, item)
    record(tx, item, decision)
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


def deliveries(tx: Tx, repo: str, *, limit: int) -> list[Delivery]:
    rows = tx.all(
        "SELECT * FROM deliveries WHERE repo = :repo ORDER BY id DESC LIMIT :limit",
        repo=repo,
        limit=limit,
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


def prune(tx: Tx, *, keep: int, known: list[str]) -> int:
    """Keep the newest `keep` rows per known repo, and `keep` in all for unknown names."""
    removed = 0
    pruned: totals.Totals = defaultdict(float)
    for repo in known:
        cutoff = tx.value(
            "SELECT id FROM deliveries WHERE repo = :repo ORDER BY id DESC LIMIT 1 OFFSET :keep",
            repo=repo,
            keep=keep,
        )
        if cutoff is not None:
            for row in tx.all(
                "SELECT outcome, COUNT(*) AS n FROM deliveries WHERE repo = :repo"
                " AND id <= :cutoff GROUP BY outcome",
                repo=repo,
                cutoff=cutoff,
            ):
                pruned[(totals.DELIVERIES, repo, row["outcome"])] += row["n"]
            removed += tx.run(
                "DELETE FROM deliveries WHERE repo = :repo AND id <= :cutoff",
                repo=repo,
                cutoff=cutoff,
            )
    names = {f"k{i}": name for i, name in enumerate(known)}
    not_known = (" WHERE repo NOT IN (" + ", ".join(f":{k}" for k in names) + ")") if names else ""
    cutoff = tx.value(
        "SELECT id FROM deliveries" + not_known + " ORDER BY id DESC LIMIT 1 OFFSET :keep",
        keep=keep,
        **names,
    )
    if cutoff is not None:
        where = (not_known + " AND" if names else " WHERE") + " id <= :cutoff"
        for row in tx.all(
            "SELECT outcome, COUNT(*) AS n FROM deliveries" + where + " GROUP BY outcome",
            cutoff=cutoff,
            **names,
        ):
            pruned[(totals.DELIVERIES, totals.OTHER_REPO, row["outcome"])] += row["n"]
        removed += tx.run("DELETE FROM deliveries" + where, cutoff=cutoff, **names)
    totals.add(tx, pruned)
    return removed
