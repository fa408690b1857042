"""GET /metrics: Prometheus text, built from the store at scrape time.

Gunicorn runs several processes, so in-memory counters would differ by process. The
collector reads the store instead: every process answers the same numbers. Counters
are the kept rows plus what pruning removed (store/totals.py), so they never go back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from deployhook import __version__
from deployhook.models import Outcome, Status
from deployhook.service import Service
from deployhook.store import totals
from deployhook.web.auth import status_access
from deployhook.web.context import service

bp = Blueprint("metrics", __name__)

ENDED = [str(s) for s in Status if s.ended]


Pruned = dict[tuple[str, str, str], float]


class StoreCollector(Collector):
    """Reads one snapshot of the store per scrape and turns it into metric families."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        svc = self.svc
        known = {repo.name for repo in svc.repos()}
        snap = svc.metrics_snapshot()
        pruned: Pruned = defaultdict(float)
        for row in snap.pruned:
            pruned[(row.metric, row.repo, row.label)] += row.value
        yield self._deliveries(snap, pruned, known)
        yield from self._jobs(snap, pruned, known)
        yield self._durations(snap, pruned, known)
        yield from self._state(snap, known)
        build = GaugeMetricFamily(
            "deployhook_build_info",
            "The running deployhook's version (always 1).",
            labels=["version"],
        )
        build.add_metric([__version__], 1.0)
        yield build

    @staticmethod
    def _deliveries(snap: totals.Snapshot, pruned: Pruned, known: set[str]) -> Metric:
        def label(name: str) -> str:
            return name if name in known else totals.OTHER_REPO

        counts: dict[tuple[str, str], float] = {
            (repo, str(outcome)): 0.0 for repo in known for outcome in Outcome
        }
        for row in snap.deliveries:
            key = (label(row.repo), row.label)
            counts[key] = counts.get(key, 0.0) + row.n
        for (metric, repo, outcome), value in pruned.items():
            if metric == totals.DELIVERIES:
                key = (label(repo), outcome)
                counts[key] = counts.get(key, 0.0) + value
        family = CounterMetricFamily(
            "deployhook_deliveries", "Webhook deliveries by outcome.", labels=["repo", "outcome"]
        )
        for (repo, outcome), value in sorted(counts.items()):
            family.add_metric([repo, outcome], value)
        return family

    @staticmethod
    def _jobs(snap: totals.Snapshot, pruned: Pruned, known: set[str]) -> Iterator[Metric]:
        ended: dict[tuple[str, str], float] = {(r, s): 0.0 for r in known for s in ENDED}
        waiting = dict.fromkeys(known, 0.0)
        running = dict.fromkeys(known, 0.0)
        for row in snap.jobs:
            repo, status, n = row.repo, row.label, row.n
            if status == Status.QUEUED:
                waiting[repo] = waiting.get(repo, 0.0) + n
            elif status == Status.RUNNING:
                running[repo] = running.get(repo, 0.0) + n
            else:
                ended[(repo, status)] = ended.get((repo, status), 0.0) + n
        for (metric, repo, status), value in pruned.items():
            if metric == totals.JOBS:
                ended[(repo, status)] = ended.get((repo, status), 0.0) + value
        family = CounterMetricFamily(
            "deployhook_jobs", "Jobs that ended, by final status.", labels=["repo", "status"]
        )
        for (repo, status), value in sorted(ended.items()):
            family.add_metric([repo, status], value)
        yield family
        for name, doc, values in (
            ("deployhook_queue_depth", "Jobs waiting to run.", waiting),
            ("deployhook_jobs_running", "Jobs running now.", running),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["repo"])
            for repo, value in sorted(values.items()):
                gauge.add_metric([repo], value)
            yield gauge

    def _state(self, snap: totals.Snapshot, known: set[str]) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "deployhook_last_success_timestamp_seconds",
            "When the repo's newest good deploy finished (Unix time).",
            labels=["repo"],
        )
        for repo, at in sorted(snap.last_good.items()):
            family.add_metric([repo], at)
        yield family
        family = GaugeMetricFamily(
            "deployhook_repo_held", "1 if the repo is on hold.", labels=["repo"]
        )
        for repo in sorted(known):
            family.add_metric([repo], 1.0 if repo in snap.held else 0.0)
        yield family
        yield GaugeMetricFamily(
            "deployhook_workers_alive",
            "Deploy workers that beat lately.",
            value=len(self.svc.live_workers()),
        )
        yield GaugeMetricFamily(
            "deployhook_registry_valid",
            "0 while repos.yml is invalid (the last good one serves).",
            value=0.0 if self.svc.registry_error else 1.0,
        )

    @staticmethod
    def _durations(snap: totals.Snapshot, pruned: Pruned, known: set[str]) -> Metric:
        labels = [f"{b:g}" for b in totals.DURATION_BUCKETS] + ["inf"]
        counts: dict[str, dict[str, float]] = {r: dict.fromkeys(labels, 0.0) for r in known}
        sums: dict[str, float] = dict.fromkeys(known, 0.0)
        for repo, duration in snap.durations:
            counts.setdefault(repo, dict.fromkeys(labels, 0.0))[totals.bucket_label(duration)] += 1
            sums[repo] = sums.get(repo, 0.0) + duration
        for (metric, repo, label), value in pruned.items():
            if metric == totals.DURATION_BUCKET and label in labels:
                counts.setdefault(repo, dict.fromkeys(labels, 0.0))[label] += value
            elif metric == totals.DURATION_SUM:
                sums[repo] = sums.get(repo, 0.0) + value
        family = HistogramMetricFamily(
            "deployhook_deploy_duration_seconds",
            "How long deploys took (succeeded or failed), from claim to end.",
            labels=["repo"],
        )
        for repo in sorted(counts):
            cumulative, buckets = 0.0, []
            for label in labels:
                cumulative += counts[repo][label]
                buckets.append(("+Inf" if label == "inf" else label, cumulative))
            family.add_metric([repo], buckets, sum_value=sums.get(repo, 0.0))
        return family


@bp.get("/metrics")
@status_access
def metrics() -> Any:
    svc = service()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(svc))
    response = Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
