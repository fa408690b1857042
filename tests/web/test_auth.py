"""Admin authentication, and cross-site requests that ride on a browser's credentials.

Trust finding 2: with Basic credentials cached by the browser (the /login page makes
that happen), any website's form could hold, release, run, cancel and roll back. A
state-changing request authenticated by Basic from another site is now refused (403)
and changes nothing; Bearer requests (scripts, the CLI) are not affected.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import create_app

TOKEN = "admin-token-for-tests"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def app_for(settings: Settings, open_service: Callable[[Settings], Service], **fields: Any) -> Any:
    changed = dataclasses.replace(settings, **fields)
    return create_app(changed, service_=open_service(changed), configure_logging=False)


@pytest.mark.parametrize(
    ("auth", "headers", "status"),
    [
        (BASIC, {"Sec-Fetch-Site": "cross-site"}, 403),
        (BASIC, {"Sec-Fetch-Site": "same-site"}, 403),
        (BASIC, {"Origin": "http://evil.example"}, 403),
        (BASIC, {"Origin": "null"}, 403),
        (BASIC, {"Origin": "http://localhost:99999"}, 403),
        (BASIC, {"Sec-Fetch-Site": "same-origin", "Origin": "http://evil.example"}, 403),
        (BASIC, {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}, 200),
        (BASIC, {"Sec-Fetch-Site": "none"}, 200),
        (BASIC, {}, 200),  # an old browser, or curl: neither header says another site
        (BEARER, {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, 200),
    ],
)
def test_cross_site_basic_request_is_refused_and_changes_nothing(
    client: Any, service: Service, auth: dict[str, str], headers: dict[str, str], status: int
) -> None:
    resp = client.post("/deploy/site/hold", headers={**auth, **headers})
    assert resp.status_code == status, resp.get_json()
    assert service.store.repo_state("site").held is (status == 200)
    if status == 403:
        assert "browser's credentials" in resp.get_json()["error"]


@pytest.mark.parametrize(
    "path", ["/deploy/site/run", "/deploy/site/rollback", "/deploy/site/release", "/jobs/1/cancel"]
)
def test_every_admin_action_refuses_a_cross_site_form(client: Any, path: str) -> None:
    resp = client.post(
        path,
        headers={**BASIC, "Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        data={"sha": "0" * 40},
        content_type="application/x-www-form-urlencoded",
    )
    assert resp.status_code == 403


def test_reading_pages_with_basic_from_a_link_still_works(client: Any) -> None:
    """Links into the pages (from Gitea, a notification) are GETs: they keep working."""
    resp = client.get("/deploy/site", headers={**BASIC, "Sec-Fetch-Site": "cross-site"})
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("public_url", "origin", "status"),
    [
        ("https://deploy.example.com", "https://deploy.example.com", 200),
        ("https://deploy.example.com/", "https://deploy.example.com:443", 200),
        ("https://deploy.example.com", "http://deploy.example.com", 403),
        ("https://deploy.example.com", "http://localhost", 403),
        (None, "http://localhost", 200),
    ],
)
def test_behind_a_tls_proxy_the_own_origin_is_the_public_url(
    settings: Settings,
    open_service: Callable[[Settings], Service],
    public_url: str | None,
    origin: str,
    status: int,
) -> None:
    """The proxy speaks plain HTTP to deployhook; the browser's Origin is the public URL."""
    client = app_for(settings, open_service, public_url=public_url).test_client()
    resp = client.post(
        "/deploy/site/hold",
        headers={**BASIC, "Origin": origin, "X-Forwarded-Proto": "http"},
        base_url="http://localhost",
    )
    assert resp.status_code == status, resp.get_json()
