"""Job ids past the database's integer range are unknown jobs (trust issue, finding 5):
404 with a JSON error on every route that takes one, on both backends (not a 500 from
SQLite's `Python int too large` or PostgreSQL's `bigint out of range`)."""

from __future__ import annotations

from typing import Any

import pytest

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
IDS = [2**63, 2**63 - 1, 2**64 + 5, 10**40]


@pytest.mark.parametrize("job_id", IDS)
@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/jobs/{}", {}),
        ("GET", "/ui/jobs/{}", {}),
        ("GET", "/jobs/{}/log", ADMIN),
        ("GET", "/jobs/{}/log?follow=1", ADMIN),
        ("POST", "/jobs/{}/cancel", ADMIN),
    ],
)
def test_finding_5_an_id_past_the_integer_range_is_an_unknown_job(
    client: Any, job_id: int, method: str, path: str, headers: dict[str, str]
) -> None:
    resp = client.open(path.format(job_id), method=method, headers=headers)
    assert resp.status_code == 404, resp.data[:300]
    assert resp.get_json()["error"].startswith("no job")
