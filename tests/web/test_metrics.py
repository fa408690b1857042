"""/metrics: Prometheus text built from the store, the same from every process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.service import Service
from deployhook.web import create_app
from tests.helpers import FakeDocker, Remote, gitea_headers, gitea_push_body

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: Any) -> tuple[dict[str, str], Samples]:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    assert resp.mimetype == "text/plain"
    assert "version=" in resp.content_type
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(resp.data.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return types, samples


def push(client: Any, sha: str, **headers: Any) -> Any:
    body = gitea_push_body(sha=sha, full_name="jeff/site")
    return client.post("/deploy/site", data=body, headers=gitea_headers(body, **headers))


def site(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"repo": "site", **labels}.items()))


def test_metric_families_and_types(client: Any) -> None:
    types, _ = scrape(client)
    assert types == {
        "deployhook_deliveries": "counter",
        "deployhook_jobs": "counter",
        "deployhook_queue_depth": "gauge",
        "deployhook_jobs_running": "gauge",
        "deployhook_deploy_duration_seconds": "histogram",
        "deployhook_last_success_timestamp_seconds": "gauge",
        "deployhook_repo_held": "gauge",
        "deployhook_workers_alive": "gauge",
        "deployhook_registry_valid": "gauge",
        "deployhook_build_info": "gauge",
    }


def test_build_info_names_the_running_version(client: Any) -> None:
    import deployhook

    _, samples = scrape(client)
    assert samples[("deployhook_build_info", (("version", deployhook.__version__),))] == 1.0
    assert [k for k in samples if k[0] == "deployhook_build_info"] == [
        ("deployhook_build_info", (("version", deployhook.__version__),))
    ]


def test_metrics_follow_deliveries_and_deploys(
    client: Any, service: Service, remote: Remote, fake_docker: FakeDocker
) -> None:
    sha = remote.commit_and_push({"index.html": "v2\n"})
    assert push(client, sha, delivery="one").status_code == 202
    assert push(client, sha, delivery="one").status_code == 200  # duplicate
    assert push(client, sha, secret="wrong").status_code == 403
    _, queued = scrape(client)
    assert queued[("deployhook_queue_depth", site())] == 1
    assert queued[("deployhook_deliveries_total", site(outcome="queued"))] == 1
    assert queued[("deployhook_deliveries_total", site(outcome="duplicate"))] == 1
    assert queued[("deployhook_deliveries_total", site(outcome="rejected"))] == 1
    assert ("deployhook_last_success_timestamp_seconds", site()) not in queued

    Worker(service).work(burst=True)
    job = service.store.jobs("site", limit=1)[0]
    # Make the deploy 42 s long, so it lands in a bucket of its own.
    with service.store.write() as tx:
        tx.run("UPDATE jobs SET started_at = finished_at - 42 WHERE id = :id", id=job.id)
    bad = remote.commit_and_push({"index.html": "v3\n"})
    fake_docker.set(fail_sha=bad)
    push(client, bad)
    Worker(service).work(burst=True)  # fails, then rolls back to the good sha
    rollback = service.store.jobs("site", limit=1)[0]
    assert (rollback.trigger, rollback.status) == ("rollback", "succeeded")

    _, done = scrape(client)
    assert done[("deployhook_queue_depth", site())] == 0
    assert done[("deployhook_jobs_total", site(status="succeeded"))] == 2
    assert done[("deployhook_jobs_total", site(status="failed"))] == 1
    assert done[("deployhook_deploy_duration_seconds_count", site())] == 3
    assert done[("deployhook_deploy_duration_seconds_bucket", site(le="30"))] == 2
    assert done[("deployhook_deploy_duration_seconds_bucket", site(le="60"))] == 3
    assert done[("deployhook_deploy_duration_seconds_bucket", site(le="+Inf"))] == 3
    assert 42 <= done[("deployhook_deploy_duration_seconds_sum", site())] < 60
    assert (
        done[("deployhook_last_success_timestamp_seconds", site())]
        == service.store.job(rollback.id).finished_at
    )


def test_hold_and_registry_gauges(client: Any, service: Service, settings: Settings) -> None:
    resp = client.post(
        "/deploy/site/hold", headers={"Authorization": "Bearer admin-token-for-tests"}
    )
    assert resp.status_code == 200
    _, samples = scrape(client)
    assert samples[("deployhook_repo_held", site())] == 1
    assert samples[("deployhook_registry_valid", ())] == 1
    assert samples[("deployhook_workers_alive", ())] == 0
    settings.registry.write_text("repos: [not, a, mapping]\n")
    _, broken = scrape(client)
    assert broken[("deployhook_registry_valid", ())] == 0
    assert broken[("deployhook_repo_held", site())] == 1  # the last good registry serves


def test_every_process_answers_the_same_numbers(
    client: Any, settings: Settings, remote: Remote, open_service: Callable[[Settings], Service]
) -> None:
    push(client, remote.commit_and_push({"index.html": "v2\n"}))
    push(client, remote.commit_and_push({"index.html": "v3\n"}))
    # A second app on its own Service is what a second gunicorn process is.
    other = create_app(settings, service_=open_service(settings), configure_logging=False)
    assert client.get("/metrics").data == other.test_client().get("/metrics").data


def test_stranger_repo_names_do_not_become_labels(client: Any) -> None:
    for n in range(5):
        body = gitea_push_body(sha="a" * 40)
        client.post(f"/deploy/probe-{n}", data=body, headers=gitea_headers(body))
    text = client.get("/metrics").data.decode()
    assert "probe-" not in text
