"""`deployhook deliveries NAME [--json]`: the ledger from a real store, page by page."""

from __future__ import annotations

import json
from typing import Any

from click.testing import CliRunner, Result

from deployhook.cli import main
from deployhook.config import Settings
from deployhook.service import Service
from tests.cli_logging import restore_logging  # noqa: F401 - an autouse fixture
from tests.helpers import Remote, gitea_headers, gitea_push_body


def run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=settings.to_environ(), catch_exceptions=False)


def deliver(client: Any, sha: str, **kwargs: Any) -> int:
    body = gitea_push_body(sha=sha, full_name="jeff/site", ref=kwargs.pop("ref", "refs/heads/main"))
    return int(
        client.post("/deploy/site", data=body, headers=gitea_headers(body, **kwargs)).status_code
    )


def test_the_table_says_why_each_push_did_or_did_not_deploy(
    settings: Settings, client: Any, service: Service, remote: Remote
) -> None:
    sha = remote.deployed()
    assert deliver(client, sha, delivery="d-1") == 202
    assert deliver(client, sha, delivery="d-1") == 200  # a duplicate: the first answer, 200
    assert deliver(client, sha, ref="refs/heads/dev") == 200
    assert deliver(client, sha, secret="a-wrong-secret-0123456") == 403
    result = run(settings, "deliveries", "site")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["SEQ", "RECEIVED", "EVENT", "OUTCOME", "JOB", "SHA", "REASON"]
    # SEQ, RECEIVED ("0 s ago"), EVENT, OUTCOME, JOB, ...
    assert [r.split()[5] for r in rows] == ["rejected", "ignored", "duplicate", "queued"]
    assert "signature does not match the body" in rows[0]
    assert "push to dev, not the deploy branch main" in rows[1]
    assert "delivery d-1 was already queued" in rows[2]
    assert rows[3].split()[6] == str(service.jobs("site")[0].id)


def test_json_pages_walk_the_whole_ledger_once(
    settings: Settings, client: Any, service: Service
) -> None:
    for i in range(7):
        deliver(client, f"{i + 1:040x}")
    seen: list[int] = []
    before: list[str] = []
    while True:
        result = run(settings, "deliveries", "site", "--json", "--limit", "3", *before)
        assert result.exit_code == 0, result.output
        page = json.loads(result.stdout)
        assert set(page) == {"deliveries", "next"}
        seen += [d["seq"] for d in page["deliveries"]]
        if page["next"] is None:
            break
        before = ["--before", str(page["next"])]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7
    api = client.get("/deploy/site/deliveries?limit=3").get_json()
    first = json.loads(run(settings, "deliveries", "site", "--json", "--limit", "3").stdout)
    assert first == api  # the API's JSON


def test_the_table_points_at_the_next_page(settings: Settings, client: Any) -> None:
    for i in range(3):
        deliver(client, f"{i + 1:040x}")
    result = run(settings, "deliveries", "site", "--limit", "2")
    *_rows, hint = result.stdout.splitlines()
    assert hint.startswith("older: deployhook deliveries site --before ")
    following = hint.rsplit(" ", 1)[1]
    rest = run(settings, "deliveries", "site", "--before", following)
    assert len(rest.stdout.splitlines()) == 2  # header and the oldest row


def test_empty_unknown_and_bad_arguments(settings: Settings, service: Service) -> None:
    assert run(settings, "deliveries", "site").stdout == "no deliveries yet\n"
    unknown = run(settings, "deliveries", "nope")
    assert unknown.exit_code == 2
    assert unknown.stderr == "deployhook: no repo named 'nope' in the registry\n"
    assert run(settings, "deliveries", "site", "--before", "0").exit_code == 2
    assert run(settings, "deliveries", "site", "--before", "x").exit_code == 2
