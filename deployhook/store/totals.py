"""What /metrics counts: aggregates of the kept rows, plus what pruning removed.

Counters must never go backwards, yet the worker prunes old jobs and deliveries. So
pruning adds the rows it deletes to `pruned_totals` first, and a counter is the kept
rows plus the pruned ones: every process that reads the store answers the same number.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

from deployhook.store.backend import Row, Tx

# Upper bounds (seconds) of the deploy duration histogram; +Inf is implied.
DURATION_BUCKETS: tuple[float, ...] = (5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600)
# The statuses whose duration is a deploy's duration (cancelled and interrupted runs
# stop at arbitrary points).
TIMED_STATUSES = ("succeeded", "failed")
# Deliveries to names that are not in the registry share one label value: their names
# come from the request path, and a label per name would let anyone grow the metrics.
OTHER_REPO = "_other"

JOBS = "jobs"
DELIVERIES = "deliveries"
DURATION_BUCKET = "duration_bucket"
DURATION_SUM = "duration_sum"


def bucket_label(duration: float) -> str:
    """The label of the smallest bucket that holds duration ("inf" past the last)."""
    idx = bisect.bisect_left(DURATION_BUCKETS, duration)
    return "inf" if idx == len(DURATION_BUCKETS) else f"{DURATION_BUCKETS[idx]:g}"


Totals = dict[tuple[str, str, str], float]


def add(tx: Tx, counts: Totals) -> None:
    """Add (metric, repo, label) -> amount to the pruned totals."""
    tx.many(
        "INSERT INTO pruned_totals (metric, repo, label, value)"
        " VALUES (:metric, :repo, :label, :value) ON CONFLICT (metric, repo, label)"
        " DO UPDATE SET value = pruned_totals.value + excluded.value",
        [
            {"metric": m, "repo": r, "label": lbl, "value": v}
            for (m, r, lbl), v in counts.items()
            if v
        ],
    )


def count_jobs(rows: list[Row]) -> Totals:
    """What the job rows about to be pruned add to the totals."""
    counts: Totals = defaultdict(float)
    for row in rows:
        repo = row["repo"]
        counts[(JOBS, repo, row["status"])] += 1
        if (
            row["status"] in TIMED_STATUSES
            and row["started_at"] is not None
            and row["finished_at"] is not None
        ):
            duration = max(0.0, row["finished_at"] - row["started_at"])
            counts[(DURATION_BUCKET, repo, bucket_label(duration))] += 1
            counts[(DURATION_SUM, repo, "")] += duration
    return counts


@dataclass(frozen=True, slots=True)
class Count:
    """How many rows of a repo carry one label (an outcome, a status)."""

    repo: str
    label: str
    n: float


@dataclass(frozen=True, slots=True)
class Pruned:
    """What pruning removed: an amount of one metric for a repo and label."""

    metric: str
    repo: str
    label: str
    value: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything /metrics shows, read in one transaction."""

    deliveries: list[Count] = field(default_factory=list)  # by outcome
    jobs: list[Count] = field(default_factory=list)  # by status
    durations: list[tuple[str, float]] = field(default_factory=list)  # repo, seconds
    last_good: dict[str, float] = field(default_factory=dict)  # repo -> finished at
    pruned: list[Pruned] = field(default_factory=list)
    held: list[str] = field(default_factory=list)


def snapshot(tx: Tx) -> Snapshot:
    return Snapshot(
        deliveries=[
            Count(r["repo"], r["outcome"], float(r["n"]))
            for r in tx.all(
                "SELECT repo, outcome, COUNT(*) AS n FROM deliveries GROUP BY repo, outcome"
            )
        ],
        jobs=[
            Count(r["repo"], r["status"], float(r["n"]))
            for r in tx.all("SELECT repo, status, COUNT(*) AS n FROM jobs GROUP BY repo, status")
        ],
        durations=[
            (r["repo"], max(0.0, float(r["d"])))
            for r in tx.all(
                "SELECT repo, finished_at - started_at AS d FROM jobs"
                " WHERE status IN ('succeeded', 'failed') AND started_at IS NOT NULL"
                " AND finished_at IS NOT NULL"
            )
        ],
        last_good={
            r["repo"]: float(r["at"])
            for r in tx.all(
                "SELECT repo, MAX(finished_at) AS at FROM jobs WHERE status = 'succeeded'"
                " GROUP BY repo"
            )
            if r["at"] is not None
        },
        pruned=[
            Pruned(r["metric"], r["repo"], r["label"], float(r["value"]))
            for r in tx.all("SELECT metric, repo, label, value FROM pruned_totals")
        ],
        held=[r["repo"] for r in tx.all("SELECT repo FROM repo_state WHERE held = 1")],
    )
