"""Hypothesis over whole deliveries, through the real deploy path.

Each example is signed (mostly correctly) and posted to the app; whatever is accepted is
then deployed by a real worker (git fetch and checkout of a real remote, the recording
fake docker). Every string in the payload and the headers may carry a shell or git
injection that would create a canary file. Never a 5xx, never the canary, and nothing on
disk changes but the data dir, the checkout and the fake docker's record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployhook.config import Settings
from deployhook.deploy.worker import Worker
from deployhook.models import Status
from deployhook.service import Service
from deployhook.web import create_app
from tests.conftest import write_registry
from tests.hardening.support import touched, tree_state
from tests.helpers import SECRET, FakeDocker, Remote, make_fake_docker, make_remote, sign

pytestmark = pytest.mark.slow

INJECTIONS = (
    "$(touch {c})",
    "`touch {c}`",
    ";touch {c}",
    "|touch {c}",
    "&&touch {c}",
    "\ntouch {c}\n",
    "--upload-pack=touch {c}",
    "-oProxyCommand=touch {c}",
    "--exec=touch {c}",
    "-c core.sshCommand=touch {c}",
    "ext::sh -c touch% {c}",
    "file:///{c}",
    "../../../../{c}",
    "{c}",
    "'$(touch {c})'",
    '"; touch {c}; "',
)


@dataclass
class World:
    root: Path
    remote: Remote
    fake: FakeDocker
    service: Service
    client: Any
    shas: list[str]
    canary: Path
    baseline: dict[str, tuple[int, int]]
    accepted: int = 0
    deployed: int = 0


_worlds: dict[str, World] = {}

ALLOWED = ("data", "deploy/site", "fake")


def world(factory: pytest.TempPathFactory) -> World:
    """One world for every example: the store and the checkout grow as a server's would."""
    if "w" not in _worlds:
        root = factory.mktemp("fuzz-deploy")
        remote = make_remote(root, "site")
        shas = [remote.commit({"index.html": f"v{n}\n"}) for n in range(3)]
        remote.push()
        fake = make_fake_docker(root / "fake")
        registry = write_registry(
            root / "repos.yml",
            {
                "site": {"path": str(remote.checkout), "health_timeout": 0},
                "pinned": {"path": str(root / "nowhere"), "source": "jeff/pinned"},
            },
        )
        cfg = Settings.load(
            {},
            registry=registry,
            data_dir=root / "data",
            secret=SECRET,
            reconcile_interval=0,
            compose=(str(fake.path), "compose"),
            stop_grace=5,
            max_body=65536,
        )
        service = Service.open(cfg)
        client = create_app(cfg, service_=service, configure_logging=False).test_client()
        (root / "canary").mkdir()
        _worlds["w"] = World(
            root, remote, fake, service, client, shas, root / "canary" / "x", tree_state(root)
        )
    return _worlds["w"]


def teardown_module() -> None:
    for w in _worlds.values():
        w.service.close()
    _worlds.clear()


def injected(canary: Path) -> st.SearchStrategy[str]:
    evil = st.sampled_from([i.format(c=canary) for i in INJECTIONS])
    return st.one_of(
        evil,
        st.text(max_size=20),
        st.tuples(st.text(max_size=8), evil, st.text(max_size=8)).map("".join),
    )


@st.composite
def delivery(draw: st.DrawFn, canary: Path, shas: list[str]) -> tuple[str, bytes, dict[str, str]]:
    text = injected(canary)
    anything = st.recursive(
        st.none() | st.booleans() | st.integers() | text,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(text, kids, max_size=3),
        max_leaves=6,
    )
    sha = st.one_of(
        st.sampled_from(shas),
        st.sampled_from(shas).map(str.upper),
        st.text(alphabet="0123456789abcdef", min_size=40, max_size=40),
        text,
        anything,
    )
    ref = st.one_of(
        st.just("refs/heads/main"),
        st.sampled_from(["refs/heads/dev", "refs/tags/v1", "main", "refs/heads/main/"]),
        text.map(lambda t: "refs/heads/" + t),
        text,
    )
    person = st.fixed_dictionaries({"name": text, "email": text, "username": text, "login": text})
    # Most examples are real pushes with hostile text everywhere else, so they reach git
    # and compose; the rest may break anything.
    valid = draw(st.integers(0, 9)) < 6
    if valid:
        ref, sha = st.just("refs/heads/main"), st.sampled_from(shas)
    doc: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"ref": ref, "after": sha},
            optional={
                "before": sha,
                "compare_url": text,
                "deleted": anything,
                "commits": st.lists(
                    st.fixed_dictionaries(
                        {"id": sha, "message": text, "url": text, "author": person}
                    ),
                    max_size=3,
                )
                | anything,
                "head_commit": st.fixed_dictionaries({"id": sha, "message": text}) | anything,
                "repository": st.fixed_dictionaries(
                    {"full_name": st.just("jeff/site") | text},
                    optional={
                        "html_url": text.map(lambda t: "https://g.example/" + t),
                        "clone_url": text,
                        "name": text,
                    },
                )
                | anything,
                "pusher": person | anything,
                "sender": person,
            },
        )
    )
    body = json.dumps(doc, indent=draw(st.sampled_from([None, 2]))).encode()
    one_line = text.filter(lambda t: "".join(t.splitlines()) == t)  # a header can hold it
    event = st.just("push") if valid else st.just("push") | one_line
    headers = {"Content-Type": "application/json", "X-Gitea-Event": draw(event)}
    delivery_id = draw(st.none() | one_line)
    if delivery_id is not None:
        headers["X-Gitea-Delivery"] = delivery_id
    signing = "right" if valid else draw(st.sampled_from(["right", "wrong", "none"]))
    if signing == "right":
        headers["X-Gitea-Signature"] = sign(body)
    elif signing == "wrong":
        headers["X-Gitea-Signature"] = sign(body, "not-the-secret")
    name = (
        "site"
        if valid
        else draw(
            st.sampled_from(["site", "pinned", "..", "site/../x", "-x"]) | one_line.filter(bool)
        )
    )
    return (
        name,
        body,
        {k: v.encode("utf-8", "replace").decode("latin-1") for k, v in headers.items()},
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_fuzzed_deliveries_through_the_worker_never_5xx_never_a_shell(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    w = world(tmp_path_factory)
    name, body, headers = data.draw(delivery(w.canary, w.shas))
    resp = w.client.post(f"/deploy/{name}", data=body, headers=headers)
    assert resp.status_code < 500, resp.get_data(as_text=True)
    # werkzeug redirects a path with `//` to its merged form; everything else is JSON.
    assert resp.is_json or resp.status_code == 308, (resp.status_code, name)
    if resp.status_code == 202:
        w.accepted += 1
        job_id = resp.get_json()["job"]
        Worker(w.service).work(burst=True)
        job = w.service.store.job(job_id)
        assert job.status.ended, job
        if job.status == Status.SUCCEEDED and not resp.get_json().get("duplicate"):
            w.deployed += 1  # (a duplicate delivery id answers with an old job)
            assert w.remote.deployed() == job.sha
    assert not w.canary.exists(), f"{name!r} {headers} {body[:300]!r} reached a shell"
    changed = touched(w.baseline, tree_state(w.root), allowed=ALLOWED)
    assert changed == [], changed


def test_fuzz_reached_deploys() -> None:
    """The fuzz is only worth something if deliveries were accepted and deployed."""
    w = _worlds.get("w")
    assert w is not None and w.accepted > 5 and w.deployed > 5, (
        (w.accepted, w.deployed) if w else None
    )
    assert not list((w.root / "canary").iterdir())
    print(
        f"\nfuzzed deliveries: {w.accepted} accepted, {w.deployed} deployed, "
        f"{len(w.fake.starts())} compose runs"
    )
    for call in w.fake.starts():  # compose saw only our argv, never payload text
        assert call["argv"] == ["compose", "up", "-d", "--build"], call["argv"]
