"""POST /deploy/<repo>: every row of docs/webhooks.md's table, with Gitea's and GitHub's shapes."""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.helpers import (
    SECRET,
    fixture,
    forgejo_headers,
    gitea_headers,
    gitea_push_body,
    github_headers,
)

GITEA_PUSH = "gitea_push.json"
# The fixtures are pushes of jeff/mycofi-earth-website to main.
FIXTURE_SOURCE = "jeff/mycofi-earth-website"
PUSH_SHA = "b9dc52d0b51785536006742b2d92e16c4a368db3"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "mycofi-earth-website": {"path": str(checkout), "source": FIXTURE_SOURCE},
            "anysource": {"path": str(tmp_path / "other")},
            "nosecret": {"path": str(tmp_path / "n"), "secret_env": "DEPLOYHOOK_TEST_UNSET_SECRET"},
            "rotated": {"path": str(tmp_path / "r"), "secret_env": "ROTATED_SECRET"},
        },
    )
    return Settings.load(
        {},
        registry=registry,
        data_dir=tmp_path / "data",
        secret=SECRET,
        admin_token="admin-token-for-tests",
        max_body=64 * 1024,
    )


def post(
    client: Any,
    body: bytes,
    headers: dict[str, str],
    repo: str = "mycofi-earth-website",
) -> Any:
    return client.post(f"/deploy/{repo}", data=body, headers=headers)


def ledger(client: Any, repo: str = "mycofi-earth-website") -> list[dict[str, Any]]:
    return client.get(f"/deploy/{repo}/deliveries").get_json()["deliveries"]


def test_gitea_push_fixture_is_queued_with_contract_shape(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    headers = gitea_headers(body, delivery="5b0e3a52-7c1d-4f0e-9a3b-2d6c8e1f4a77")
    assert (
        headers["X-Gitea-Signature"]
        == "02a13130903a1b54968372b7891bcb602c479d442065b87541e4a7f36a17e3c3"
    )
    resp = post(client, body, headers)
    assert resp.status_code == 202
    answer = resp.get_json()
    assert answer == {
        "status": "queued",
        "job": answer["job"],
        "repo": "mycofi-earth-website",
        "sha": PUSH_SHA,
        "status_url": f"/jobs/{answer['job']}",
    }
    job = client.get(answer["status_url"]).get_json()
    assert (job["status"], job["trigger"], job["sha"], job["ref"], job["delivery"]) == (
        "queued",
        "push",
        PUSH_SHA,
        "refs/heads/main",
        "5b0e3a52-7c1d-4f0e-9a3b-2d6c8e1f4a77",
    )
    assert ledger(client)[0]["outcome"] == "queued"


def test_unknown_repo_is_404_and_recorded(client: Any, service: Service) -> None:
    body = fixture(GITEA_PUSH)
    resp = post(client, body, gitea_headers(body), repo="nope")
    assert resp.status_code == 404
    assert "nope" in resp.get_json()["error"]


@pytest.mark.parametrize("name", ["..", "a/../b", "%2e%2e", "x%00y", "-rf", "a b"])
def test_hostile_repo_names_are_404(client: Any, name: str) -> None:
    resp = client.post(f"/deploy/{name}", data=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status_code == 404
    assert resp.is_json


def test_content_length_over_limit_is_413_before_reading(client: Any) -> None:
    class Exploding(io.BytesIO):
        def read(self, *_a: Any) -> bytes:
            raise AssertionError("the body must not be read")

        readline = read
        readinto = read  # type: ignore[assignment]

    resp = client.post(
        "/deploy/mycofi-earth-website",
        input_stream=Exploding(),
        headers={"Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": str(10 * 1024 * 1024)},
    )
    assert resp.status_code == 413
    assert resp.is_json


def test_oversized_body_without_length_is_413(client: Any) -> None:
    body = b"{" + b" " * (65 * 1024) + b"}"
    resp = client.post(
        "/deploy/mycofi-earth-website",
        input_stream=io.BytesIO(body),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 413


@pytest.mark.parametrize("ctype", ["text/plain", "", "application/xml", "multipart/form-data"])
def test_unsupported_content_type_is_415(client: Any, ctype: str) -> None:
    body = fixture(GITEA_PUSH)
    resp = post(client, body, gitea_headers(body, content_type=ctype))
    assert resp.status_code == 415


def test_unresolvable_secret_is_503_never_accepted(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    resp = post(client, body, gitea_headers(body), repo="nosecret")
    assert resp.status_code == 503
    assert "DEPLOYHOOK_TEST_UNSET_SECRET" in resp.get_json()["error"]
    unsigned = {k: v for k, v in gitea_headers(body).items() if "Signature" not in k}
    assert post(client, body, unsigned, repo="nosecret").status_code == 503


def test_missing_signature_is_401(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    headers = {k: v for k, v in gitea_headers(body).items() if "Signature" not in k}
    assert post(client, body, headers).status_code == 401


def test_gitea_without_secret_sends_empty_headers_which_is_401(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    resp = post(client, body, gitea_headers(body, secret=None))
    assert resp.status_code == 401


def test_wrong_signature_is_403_and_rejected_in_ledger(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    resp = post(client, body, gitea_headers(body, secret="not-the-secret"))
    assert resp.status_code == 403
    tampered = body.replace(b"Tighten", b"Loosen")
    assert post(client, tampered, gitea_headers(body)).status_code == 403
    rows = ledger(client)
    assert [r["outcome"] for r in rows[:2]] == ["rejected", "rejected"]
    assert "signature" in rows[0]["reason"]


def test_rotated_secrets_any_verifies(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROTATED_SECRET", "old-secret-aaaa-0000,\nnew-secret-bbbb-1111")
    body = gitea_push_body(sha="a" * 40)
    for secret in ("old-secret-aaaa-0000", "new-secret-bbbb-1111"):
        resp = post(client, body, gitea_headers(body, secret=secret), repo="rotated")
        assert resp.status_code == 202, resp.get_json()
    assert post(client, body, gitea_headers(body, secret=SECRET), repo="rotated").status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"{}",
        b'{"ref": 5, "after": "x"}',
        b'{"ref": "refs/heads/main"}',
        b'{"ref": "refs/heads/main", "after": "abc"}',
        b'{"ref": "main", "after": "' + b"a" * 40 + b'"}',
        b'{"ref": "refs/heads/ma\\u0000in", "after": "' + b"a" * 40 + b'"}',
        b'{"ref": "refs/heads/--upload-pack=x", "after": "' + b"g" * 40 + b'"}',
        b"\xff\xfe{}",
        b"[" * 100000 + b"]" * 100000,
    ],
)
def test_malformed_signed_bodies_are_400(client: Any, body: bytes) -> None:
    resp = post(client, body, gitea_headers(body), repo="anysource")
    assert resp.status_code in (400, 413), resp.get_json()
    assert resp.is_json


def test_source_mismatch_is_403(client: Any) -> None:
    body = gitea_push_body(sha="c" * 40, full_name="mallory/site")
    resp = post(client, body, gitea_headers(body))
    assert resp.status_code == 403
    assert "mallory/site" in resp.get_json()["error"]


def test_duplicate_delivery_gets_first_answer_again(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    headers = gitea_headers(body, delivery="dup-1")
    first = post(client, body, headers).get_json()
    again = post(client, body, headers)
    assert again.status_code == 200  # nothing new queued (docs/webhooks.md)
    assert again.get_json() == {**first, "duplicate": True}
    jobs = client.get("/deploy/mycofi-earth-website/jobs").get_json()["jobs"]
    assert len(jobs) == 1
    assert ledger(client)[0]["outcome"] == "duplicate"


def test_rejected_delivery_is_not_seen_so_redelivery_after_fix_is_accepted(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    assert (
        post(client, body, gitea_headers(body, secret="wrong-secret", delivery="d-9")).status_code
        == 403
    )
    resp = post(client, body, gitea_headers(body, delivery="d-9"))
    assert resp.status_code == 202
    assert "duplicate" not in resp.get_json()


def test_github_ping_is_pong(client: Any) -> None:
    body = fixture("github_ping.json")
    resp = post(client, body, github_headers(body, event="ping"), repo="anysource")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "pong"}


def test_github_push_is_queued(client: Any) -> None:
    body = fixture("github_push.json")
    resp = post(client, body, github_headers(body), repo="anysource")
    assert resp.status_code == 202
    assert resp.get_json()["status"] == "queued"


@pytest.mark.parametrize(
    ("name", "event", "reason"),
    [
        ("gitea_push_other_branch.json", "push", "not the deploy branch"),
        ("gitea_push_tag.json", "push", "tag push"),
        ("gitea_push_delete.json", "push", "deleted"),
        ("gitea_delete_event.json", "delete", "not a push"),
    ],
)
def test_ignored_events_are_200_with_reason(
    client: Any, name: str, event: str, reason: str
) -> None:
    body = fixture(name)
    resp = post(client, body, gitea_headers(body, event=event))
    assert resp.status_code == 200
    answer = resp.get_json()
    assert answer["status"] == "ignored"
    assert reason in answer["reason"]
    assert client.get("/deploy/mycofi-earth-website/jobs").get_json()["jobs"] == []
    assert ledger(client)[0]["outcome"] == "ignored"


def test_gitea_test_delivery_deploys(client: Any) -> None:
    body = fixture("gitea_push_test_delivery.json")
    doc = json.loads(body)
    assert doc["before"] == doc["after"]
    resp = post(client, body, gitea_headers(body))
    assert resp.status_code == 202


def test_gitea_replay_new_delivery_id_same_body_deploys(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    first = post(client, body, gitea_headers(body, delivery="orig")).get_json()
    replay = post(client, body, gitea_headers(body, delivery="replay"))
    assert replay.status_code == 202
    answer = replay.get_json()
    assert "duplicate" not in answer
    assert answer["job"] == first["job"]
    assert answer["coalesced"] is True


def test_form_body_signed_over_payload_like_gitea(client: Any) -> None:
    payload = fixture(GITEA_PUSH)
    form = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    assert len(form) == 9423
    headers = gitea_headers(form, signed=payload, content_type="application/x-www-form-urlencoded")
    resp = post(client, form, headers)
    assert resp.status_code == 202, resp.get_json()


def test_form_body_signed_raw_like_github(client: Any) -> None:
    payload = fixture("github_push.json")
    form = urllib.parse.urlencode({"payload": payload.decode()}).encode()
    resp = post(
        client,
        form,
        github_headers(form, content_type="application/x-www-form-urlencoded"),
        repo="anysource",
    )
    assert resp.status_code == 202


def test_gogs_headers_alone_are_enough(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    full = gitea_headers(body)
    headers = {k: v for k, v in full.items() if not k.startswith(("X-Gitea", "X-Hub", "X-GitHub"))}
    assert post(client, body, headers).status_code == 202


def test_forgejo_headers_alone_are_enough(client: Any) -> None:
    """Forgejo sends X-Forgejo-* first; a proxy that keeps only those loses nothing."""
    body = fixture(GITEA_PUSH)
    full = forgejo_headers(body, delivery="f0f0f0f0-1111-4222-8333-444455556666")
    headers = {
        k: v
        for k, v in full.items()
        if not k.startswith(("X-Gitea", "X-Gogs", "X-Hub", "X-GitHub"))
    }
    assert {k for k in headers if k.startswith("X-")} == {
        "X-Forgejo-Delivery",
        "X-Forgejo-Event",
        "X-Forgejo-Event-Type",
        "X-Forgejo-Signature",
    }
    assert post(client, body, headers).status_code == 202
    [row] = ledger(client)
    assert (row["id"], row["event"], row["outcome"]) == (
        "f0f0f0f0-1111-4222-8333-444455556666",
        "push",
        "queued",
    )
    headers["X-Forgejo-Signature"] = "0" * 64
    assert post(client, body, headers).status_code == 403


def test_forgejo_event_header_is_read_first(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    headers = forgejo_headers(body)
    headers["X-Forgejo-Event"] = "issues"
    resp = post(client, body, headers)
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ignored", "reason": "event 'issues' is not a push"}


def test_burst_coalesces_into_one_queued_job_with_newest_sha(client: Any) -> None:
    shas = [f"{i:040x}" for i in range(1, 21)]
    answers = []
    for sha in shas:
        body = gitea_push_body(sha=sha, full_name=FIXTURE_SOURCE)
        answers.append(post(client, body, gitea_headers(body)).get_json())
    assert {a["job"] for a in answers} == {answers[0]["job"]}
    assert all(a.get("coalesced") for a in answers[1:])
    job = client.get(f"/jobs/{answers[0]['job']}").get_json()
    assert job["sha"] == shas[-1]


def test_hold_records_push_and_release_queues_newest(client: Any) -> None:
    auth = {"Authorization": "Bearer admin-token-for-tests"}
    assert client.post("/deploy/mycofi-earth-website/hold", headers=auth).status_code == 200
    for sha in ("1" * 40, "2" * 40):
        body = gitea_push_body(sha=sha, full_name=FIXTURE_SOURCE)
        resp = post(client, body, gitea_headers(body))
        assert resp.status_code == 200
        assert resp.get_json()["status"] == "held"
    assert client.get("/deploy/mycofi-earth-website").get_json()["held"] is True
    assert ledger(client)[0]["outcome"] == "held"
    released = client.post("/deploy/mycofi-earth-website/release", headers=auth)
    assert released.status_code == 202
    assert released.get_json()["sha"] == "2" * 40
    assert client.post("/deploy/mycofi-earth-website/release", headers=auth).status_code == 200


def test_contract_order_unknown_repo_beats_everything(client: Any) -> None:
    resp = client.post("/deploy/ghost", data=b"x" * 100, headers={"Content-Type": "text/plain"})
    assert resp.status_code == 404


def test_contract_order_size_before_content_type(client: Any) -> None:
    resp = client.post(
        "/deploy/mycofi-earth-website",
        data=b"x" * (65 * 1024),
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status_code == 413


def test_contract_order_secret_before_signature(client: Any) -> None:
    resp = client.post("/deploy/nosecret", data=b"{}", headers={"Content-Type": "application/json"})
    assert resp.status_code == 503


def test_contract_order_signature_before_parsing(client: Any) -> None:
    resp = client.post(
        "/deploy/mycofi-earth-website",
        data=b"not json",
        headers={"Content-Type": "application/json", "X-Gitea-Signature": "0" * 64},
    )
    assert resp.status_code == 403


def test_no_delivery_id_means_no_dedup(client: Any) -> None:
    body = gitea_push_body(sha="d" * 40, full_name=FIXTURE_SOURCE)
    headers = {k: v for k, v in gitea_headers(body).items() if "Delivery" not in k}
    a = post(client, body, headers).get_json()
    b = post(client, body, headers).get_json()
    assert "duplicate" not in b
    assert a["job"] == b["job"]


def test_registry_edit_adds_repo_without_restart(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    body = gitea_push_body(sha="e" * 40)
    assert post(client, body, gitea_headers(body), repo="newcomer").status_code == 404
    text = settings.registry.read_text()
    settings.registry.write_text(text + f"  newcomer:\n    path: {tmp_path / 'nc'}\n")
    assert post(client, body, gitea_headers(body), repo="newcomer").status_code == 202


def test_invalid_registry_edit_keeps_last_good(client: Any, settings: Settings) -> None:
    settings.registry.write_text(settings.registry.read_text() + "  broken: [\n")
    body = fixture(GITEA_PUSH)
    assert post(client, body, gitea_headers(body)).status_code == 202
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.get_json()["status"] == "degraded"
    assert any("registry invalid" in p for p in health.get_json()["problems"])


def test_secret_value_never_in_answers(client: Any) -> None:
    body = fixture(GITEA_PUSH)
    texts = [
        post(client, body, gitea_headers(body)).get_data(as_text=True),
        post(client, body, gitea_headers(body, secret="bad-secret")).get_data(as_text=True),
        client.get("/deploy/mycofi-earth-website/deliveries").get_data(as_text=True),
    ]
    assert all(SECRET not in t for t in texts)


def test_store_not_writable_is_503(tmp_path: Path, settings: Settings, open_service: Any) -> None:
    svc = open_service(settings)
    app = create_app(settings, service_=svc, configure_logging=False)

    def refuse(*_a: Any, **_k: Any) -> Any:
        from deployhook.errors import StoreUnavailable

        raise StoreUnavailable("store not writable: database or disk is full")

    svc.store.submit = refuse  # type: ignore[method-assign]
    body = fixture(GITEA_PUSH)
    resp = app.test_client().post(
        "/deploy/mycofi-earth-website", data=body, headers=gitea_headers(body)
    )
    assert resp.status_code == 503
    assert "disk is full" in resp.get_json()["error"]


def _walk(client: Any, limit: int) -> tuple[list[int], int]:
    """Every seq of the ledger, page by page; and how many pages it took."""
    seen: list[int] = []
    url = f"/deploy/mycofi-earth-website/deliveries?limit={limit}"
    pages = 0
    before: int | None = None
    while True:
        resp = client.get(url + (f"&before={before}" if before is not None else ""))
        assert resp.status_code == 200
        doc = resp.get_json()
        assert set(doc) == {"deliveries", "next"}
        pages += 1
        rows = doc["deliveries"]
        assert len(rows) <= limit
        for row in rows:
            assert {"seq", "id", "event", "received_at", "outcome", "reason", "job"} <= set(row)
        seen += [r["seq"] for r in rows]
        if doc["next"] is None:
            return seen, pages
        assert doc["next"] == rows[-1]["seq"]
        before = doc["next"]


@pytest.mark.parametrize("limit", [1, 4, 5, 7, 1000])
def test_paging_walks_the_whole_ledger_exactly_once(client: Any, limit: int) -> None:
    for i in range(20):
        body = gitea_push_body(sha=f"{i + 1:040x}", full_name=FIXTURE_SOURCE)
        headers = gitea_headers(body, secret=SECRET if i % 3 else "a-wrong-secret-of-length")
        post(client, body, headers)
    everything = [r["seq"] for r in ledger(client)]
    assert len(everything) == 20
    seen, pages = _walk(client, limit)
    assert seen == sorted(everything, reverse=True)
    assert len(set(seen)) == 20
    assert pages == -(-20 // limit)  # a last full page says next: null, no empty page after


def test_paging_is_stable_while_deliveries_arrive(client: Any) -> None:
    def push(i: int) -> None:
        body = gitea_push_body(sha=f"{i:040x}", full_name=FIXTURE_SOURCE)
        post(client, body, gitea_headers(body))

    for i in range(1, 7):
        push(i)
    first = client.get("/deploy/mycofi-earth-website/deliveries?limit=3").get_json()
    push(7)  # newer than every page: never shows up further back
    second = client.get(
        f"/deploy/mycofi-earth-website/deliveries?limit=3&before={first['next']}"
    ).get_json()
    seqs = [r["seq"] for r in first["deliveries"] + second["deliveries"]]
    assert len(set(seqs)) == 6 and seqs == sorted(seqs, reverse=True)
    assert second["next"] is None


@pytest.mark.parametrize("before", ["x", "0", "-1", "1.5", "", "9" * 40, "١٢"])
def test_bad_before_is_400_json(client: Any, before: str) -> None:
    resp = client.get(f"/deploy/mycofi-earth-website/deliveries?before={before}")
    assert resp.status_code == 400
    assert resp.content_type == "application/json"
    assert "before" in resp.get_json()["error"]
