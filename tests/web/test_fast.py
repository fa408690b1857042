"""web/fast.py answers `POST /deploy/<name>` with the same bytes as the Flask route.

Two apps over the same registry, each with its own store: one with the raw WSGI fast
path in front (what serve runs), one with the Flask route alone. Every row of
docs/webhooks.md's table is sent to both, in the same order; status line, headers and
body must be identical, byte for byte, in public and in private mode.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import create_app, fast
from tests.conftest import write_registry
from tests.helpers import SECRET, gitea_headers, gitea_push_body, github_headers

ADMIN = "admin-token-for-tests"
SHA = "b9dc52d0b51785536006742b2d92e16c4a368db3"


class Twins:
    """The same requests to the fast app and the Flask-only app; answers compared."""

    def __init__(self, fast_client: Any, flask_client: Any, taken: list[str]) -> None:
        self.clients = (fast_client, flask_client)
        self.taken = taken

    def post(self, path: str, *, fast_path: bool = True, **kwargs: Any) -> Any:
        answers = []
        for client in self.clients:
            data = kwargs.get("data")
            stream = kwargs.pop("input_stream_bytes", None)
            if stream is not None:
                kwargs["input_stream"] = io.BytesIO(stream)
            answers.append(client.post(path, **kwargs))
            if stream is not None:
                kwargs["input_stream_bytes"] = stream
                del kwargs["input_stream"]
            assert kwargs.get("data") is data
        quick, slow = answers
        assert quick.status == slow.status, (quick.get_data(), slow.get_data())
        assert list(quick.headers.items()) == list(slow.headers.items())
        assert quick.get_data() == slow.get_data()
        assert self.taken.count(path) == (1 if fast_path else 0), "fast path taken?"
        self.taken.clear()
        return quick


def _settings(tmp: Path, registry: Path, *, private: bool, name: str) -> Settings:
    return Settings.load(
        {},
        registry=registry,
        data_dir=tmp / name,
        secret=SECRET,
        admin_token=ADMIN,
        max_body=64 * 1024,
        private_status=private,
    )


@pytest.fixture(params=[False, True], ids=["public", "private"])
def twins(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Twins]:
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {"path": str(tmp_path / "checkout"), "source": "jeff/site"},
            "anysource": {"path": str(tmp_path / "other")},
            "nosecret": {"path": str(tmp_path / "n"), "secret_env": "DEPLOYHOOK_TEST_UNSET_SECRET"},
        },
    )
    taken: list[str] = []
    real = fast.FastDeliveries.deliver

    def spy(self: fast.FastDeliveries, name: str, environ: dict[str, Any], sr: Any) -> Any:
        taken.append(environ["PATH_INFO"])
        return real(self, name, environ, sr)

    monkeypatch.setattr(fast.FastDeliveries, "deliver", spy)
    services = []
    clients = []
    for name, fast_path in (("fast", True), ("flask", False)):
        settings = _settings(tmp_path, registry, private=request.param, name=name)
        svc = Service.open(settings)
        services.append(svc)
        app = create_app(settings, service_=svc, configure_logging=False, fast_path=fast_path)
        clients.append(app.test_client())
    yield Twins(clients[0], clients[1], taken)
    for svc in services:
        svc.close()


def _push(sha: str = SHA, *, ref: str = "refs/heads/main", full_name: str = "jeff/site") -> bytes:
    return gitea_push_body(sha=sha, ref=ref, full_name=full_name)


def _unsigned(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if "Signature" not in k}


def test_every_row_of_the_table_answers_the_same(twins: Twins) -> None:
    body = _push()
    post = twins.post
    # unknown repo
    assert post("/deploy/nope", data=body, headers=gitea_headers(body)).status_code == 404
    # body over the limit, by Content-Length (never read) and while reading
    big = b"{" + b" " * (65 * 1024) + b"}"
    assert post("/deploy/site", data=big, headers=gitea_headers(big)).status_code == 413
    resp = post(
        "/deploy/site",
        input_stream_bytes=big,
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert resp.status_code == 413
    # unsupported content type
    for ctype in ("text/plain", "", "multipart/form-data"):
        headers = gitea_headers(body, content_type=ctype)
        assert post("/deploy/site", data=body, headers=headers).status_code == 415
    # the repo's secret is not configured (503: private mode outlines it)
    assert post("/deploy/nosecret", data=body, headers=gitea_headers(body)).status_code == 503
    admin = {**gitea_headers(body), "Authorization": f"Bearer {ADMIN}"}
    assert post("/deploy/nosecret", data=body, headers=admin).status_code == 503
    # no signature; an empty one (Gitea without a secret)
    headers = _unsigned(gitea_headers(body))
    assert post("/deploy/site", data=body, headers=headers).status_code == 401
    headers = gitea_headers(body, secret=None)
    assert post("/deploy/site", data=body, headers=headers).status_code == 401
    # signature does not match
    headers = gitea_headers(body, secret="not-the-secret-at-all")
    assert post("/deploy/site", data=body, headers=headers).status_code == 403
    # not JSON, not a push payload, ref or after missing or malformed
    for bad in (b"not json", b"[1]", b"{}", b'{"ref": "refs/heads/main"}', b"\xff\xfe{}"):
        headers = gitea_headers(bad)
        assert post("/deploy/anysource", data=bad, headers=headers).status_code == 400
    # source differs
    other = _push(full_name="mallory/site")
    assert post("/deploy/site", data=other, headers=gitea_headers(other)).status_code == 403
    # a push to the deploy branch: queued; then a duplicate of it
    headers = gitea_headers(body, delivery="d-1")
    assert post("/deploy/site", data=body, headers=headers).status_code == 202
    assert post("/deploy/site", data=body, headers=headers).status_code == 200
    # the same, joining the queued job (coalesced)
    newer = _push("c" * 40)
    assert post("/deploy/site", data=newer, headers=gitea_headers(newer)).status_code == 202
    # GitHub ping
    ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    headers = github_headers(ping, event="ping")
    assert post("/deploy/anysource", data=ping, headers=headers).status_code == 200
    # another branch, a tag, a deletion, another event: ignored
    for ignored, event in (
        (_push(ref="refs/heads/dev"), "push"),
        (_push(ref="refs/tags/v1"), "push"),
        (_push("0" * 40), "push"),
        (body, "issues"),
    ):
        headers = gitea_headers(ignored, event=event)
        assert post("/deploy/site", data=ignored, headers=headers).status_code == 200
    # a form body, signed over the payload like Gitea
    form = {"payload": _push("d" * 40).decode()}
    form_headers = gitea_headers(
        _push("d" * 40),
        content_type="application/x-www-form-urlencoded",
    )
    assert post("/deploy/site", data=form, headers=form_headers).status_code == 202
    # on hold (the hold itself is an admin route: Flask in both)
    resp = post("/deploy/site/hold", headers={"Authorization": f"Bearer {ADMIN}"}, fast_path=False)
    assert resp.status_code == 200
    held = _push("e" * 40)
    assert post("/deploy/site", data=held, headers=gitea_headers(held)).status_code == 200
    # names that are not plain registry names: Flask answers them in both
    for name in ("a%20b", "site/", "x/y", "%C3%BC"):
        resp = post(f"/deploy/{name}", data=body, headers=gitea_headers(body), fast_path=False)
        assert resp.status_code == 404


def test_store_refusal_and_a_bug_answer_the_same(
    twins: Twins, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployhook.errors import StoreUnavailable
    from deployhook.store import Store

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise StoreUnavailable("store not writable: database or disk is full")

    monkeypatch.setattr(Store, "submit", refuse)
    body = _push()
    assert twins.post("/deploy/site", data=body, headers=gitea_headers(body)).status_code == 503

    def bug(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Service, "receive", bug)
    assert twins.post("/deploy/site", data=body, headers=gitea_headers(body)).status_code == 500

    def config_error(*_a: Any, **_k: Any) -> Any:
        from deployhook.errors import Unauthorized

        raise Unauthorized("a valid admin token is required")

    monkeypatch.setattr(Service, "receive", config_error)
    resp = twins.post("/deploy/site", data=body, headers=gitea_headers(body))
    assert resp.status_code == 401
    assert "WWW-Authenticate" in resp.headers
