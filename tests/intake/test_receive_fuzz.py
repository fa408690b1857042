"""Hypothesis over bodies and headers: the intake never answers 5xx and never raises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.helpers import SECRET, sign

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_hex = "0123456789abcdefABCDEF"
sha = st.one_of(
    st.text(alphabet=_hex, min_size=40, max_size=40),
    st.text(alphabet=_hex, min_size=64, max_size=64),
    st.text(alphabet=_hex, min_size=38, max_size=66),
)
refs = st.one_of(
    st.just("refs/heads/main"),
    st.sampled_from(
        [
            "refs/heads/main",
            "refs/heads/dev",
            "refs/tags/v1",
            "main",
            "",
            "refs/",
            "refs/heads/$(id)",
            "refs/heads/--upload-pack=/bin/sh",
            "refs/heads/-x",
            "refs/heads/a;rm -rf /",
            "refs/heads/..",
            "refs/heads/ma\u0000in",
        ]
    ),
    st.text(max_size=60),
)
push_like = st.fixed_dictionaries(
    {"ref": refs | json_values, "after": sha | json_values},
    optional={
        "before": sha | json_values,
        "deleted": json_values,
        "repository": st.fixed_dictionaries(
            {},
            optional={
                "full_name": st.text(max_size=30) | json_values,
                "html_url": st.text(max_size=60) | json_values,
            },
        )
        | json_values,
        "commits": json_values,
        "head_commit": json_values,
    },
)
# A push the intake must queue, with everything else in it fuzzed.
valid_sha = st.one_of(
    st.text(alphabet=_hex, min_size=40, max_size=40),
    st.text(alphabet=_hex, min_size=64, max_size=64),
)
valid_pushes = st.fixed_dictionaries(
    {"ref": st.just("refs/heads/main"), "after": valid_sha},
    optional={
        "before": json_values,
        "commits": json_values,
        "head_commit": json_values,
        "repository": json_values,
        "pusher": json_values,
        "deleted": st.just(False),
    },
).map(lambda d: json.dumps(d).encode())
bodies = st.one_of(
    push_like.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=300),
)
header_text = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
content_types = (
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-8",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
            "application/JSON",
        ]
    )
    | header_text
)
events = st.sampled_from(["push", "ping", "delete", "create", "", "PUSH"]) | header_text


def make_app(tmp: Path) -> tuple[Any, Service]:
    registry = write_registry(
        tmp / "repos.yml",
        {
            "site": {"path": str(tmp / "checkout")},
            "pinned": {"path": str(tmp / "p"), "source": ["jeff/site", "jeff/other"]},
        },
    )
    cfg = Settings.load({}, registry=registry, data_dir=tmp / "data", secret=SECRET, max_body=4096)
    svc = Service.open(cfg)
    return create_app(cfg, service_=svc, configure_logging=False).test_client(), svc


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    body=bodies,
    valid=valid_pushes,
    signed=st.sampled_from(["right", "wrong", "none", "hub", "empty"]),
    ctype=content_types,
    event=events,
    delivery=st.none() | header_text,
    repo=st.sampled_from(["site", "pinned", "ghost"]),
    as_form=st.booleans(),
    aimed=st.booleans(),
)
def test_intake_never_answers_5xx(
    tmp_path_factory: Any,
    body: bytes,
    valid: bytes,
    signed: str,
    ctype: str,
    event: str,
    delivery: str | None,
    repo: str,
    as_form: bool,
    aimed: bool,
) -> None:
    client, svc = _client(tmp_path_factory)
    if aimed:  # half the examples are pushes to queue, with their other fields fuzzed
        body, signed, ctype, event, repo = valid, "right", "application/json", "push", "site"
        as_form, delivery = False, None
    if as_form:
        from urllib.parse import urlencode

        body = urlencode({"payload": body.decode("utf-8", "replace")}).encode()
        ctype = "application/x-www-form-urlencoded"
    headers = {"Content-Type": ctype, "X-Gitea-Event": event}
    if delivery is not None:
        headers["X-Gitea-Delivery"] = delivery
    if signed == "right":
        headers["X-Gitea-Signature"] = sign(body)
    elif signed == "wrong":
        headers["X-Gitea-Signature"] = sign(body, "nope")
    elif signed == "hub":
        headers["X-Hub-Signature-256"] = "sha256=" + sign(body)
    elif signed == "empty":
        headers["X-Gitea-Signature"] = ""
    resp = client.post(f"/deploy/{repo}", data=body, headers=headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert resp.is_json
    answer = resp.get_json()
    if resp.status_code == 202:
        _seen_202.append(1)
        job = svc.store.job(answer["job"])
        assert job.ref == "refs/heads/main"
        assert len(job.sha) in (40, 64)
        assert all(c in "0123456789abcdef" for c in job.sha)


_cache: dict[str, tuple[Any, Service]] = {}
_seen_202: list[int] = []


def _client(factory: Any) -> tuple[Any, Service]:
    # One app for all examples: the store grows, which is itself part of the test.
    if "app" not in _cache:
        _cache["app"] = make_app(factory.mktemp("fuzz"))
    return _cache["app"]


def test_fuzz_reached_the_queue() -> None:
    """The fuzz above is only worth something if valid pushes were among its inputs."""
    assert _seen_202, "no fuzzed delivery was ever queued"


def teardown_module() -> None:
    for _, svc in _cache.values():
        svc.close()
    _cache.clear()
