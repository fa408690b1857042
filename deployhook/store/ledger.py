"""The delivery ledger and per-repo state: every delivery, what became of it, and why."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from deployhook.models import Delivery, Job, Outcome, RepoState, Trigger
from deployhook.store import queue, totals
from deployhook.store.backend import Row, Tx


@dataclass(frozen=True, slots=True)
class Intake:
    """A delivery that passed (or failed) the checks that need no store.

    kind is "push" (to the deploy branch), "ping", "ignored" or "rejected".
    """

    repo: str
    kind: str
    received_at: float
    delivery_id: str | None = None
    event: str | None = None
    sha: str | None = None
    ref: str | None = None
    reason: str | None = None
    http_status: int = 200
    node: str = ""
    repo_url: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The HTTP answer to a delivery, and the ledger's record of it."""

    http_status: int
    body: dict[str, Any]
    outcome: Outcome
    job: Job | None = None


def job_answer(job: Job, *, coalesced: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": str(job.status),
        "job": job.id,
        "repo": job.repo,
        "sha": job.sha,
        "status_url": f"/jobs/{job.id}",
    }
    if coalesced:
        body["coalesced"] = True
    return body


def record(
    tx: Tx,
    item: Intake,
    *,
    outcome: Outcome,
    http_status: int,
    reason: str | None,
    job_id: int | None = None,
    answer: dict[str, Any] | None = None,
) -> None:
    tx.run(
        "INSERT INTO deliveries (repo, delivery_id, event, received_at, outcome, reason, job_id,"
        " http_status, answer, sha, ref) VALUES (:repo, :delivery_id, :event, :received_at,"
        " :outcome, :reason, :job_id, :http_status, :answer, :sha, :ref)",
        repo=item.repo[:200],
        delivery_id=item.delivery_id,
        event=item.event,
        received_at=item.received_at,
        outcome=str(outcome),
        reason=reason,
        job_id=job_id,
        http_status=http_status,
        answer=None if answer is None else json.dumps(answer),
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


def _first_answer(tx: Tx, item: Intake) -> Row | None:
    return tx.one(
        "SELECT http_status, answer, job_id, outcome FROM deliveries"
        " WHERE repo = :repo AND delivery_id = :delivery_id"
        " AND outcome NOT IN ('rejected', 'duplicate') ORDER BY id LIMIT 1",
        repo=item.repo,
        delivery_id=item.delivery_id,
    )


def admit(tx: Tx, item: Intake) -> Answer:
    """Decide and record what a checked delivery becomes (docs/webhooks.md, from 'duplicate' on)."""
    if item.kind == "rejected":
        reason = item.reason or "rejected"
        record(tx, item, outcome=Outcome.REJECTED, http_status=item.http_status, reason=reason)
        return Answer(item.http_status, {"error": reason}, Outcome.REJECTED)
    if item.delivery_id:
        first = _first_answer(tx, item)
        if first is not None:
            body = json.loads(first["answer"]) if first["answer"] else {}
            body["duplicate"] = True
            record(
                tx,
                item,
                outcome=Outcome.DUPLICATE,
                http_status=first["http_status"],
                reason=f"delivery {item.delivery_id} was already {first['outcome']}",
                job_id=first["job_id"],
                answer=body,
            )
            return Answer(int(first["http_status"]), body, Outcome.DUPLICATE)
    if item.kind in {"ping", "ignored"}:
        body = (
            {"status": "pong"}
            if item.kind == "ping"
            else {"status": "ignored", "reason": item.reason}
        )
        record(
            tx,
            item,
            outcome=Outcome.IGNORED,
            http_status=200,
            reason="ping" if item.kind == "ping" else item.reason,
            answer=body,
        )
        return Answer(200, body, Outcome.IGNORED)
    assert item.kind == "push" and item.sha is not None
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
        body = {"status": "held", "reason": reason}
        record(tx, item, outcome=Outcome.HELD, http_status=200, reason=reason, answer=body)
        return Answer(200, body, Outcome.HELD)
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
    body = job_answer(job, coalesced=coalesced)
    outcome = Outcome.COALESCED if coalesced else Outcome.QUEUED
    reason = f"joined {job.status} job {job.id}" if coalesced else f"queued job {job.id}"
    record(tx, item, outcome=outcome, http_status=202, reason=reason, job_id=job.id, answer=body)
    return Answer(202, body, outcome, job)


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
