from __future__ import annotations

import pytest

from deployhook.errors import BadSignature, MissingSignature
from deployhook.intake.signature import sign, signatures, verify
from tests.helpers import SECRET, fixture

# The fixtures' HMACs under the test secret, from HEADERS.md.
KNOWN = {
    "gitea_push.json": "02a13130903a1b54968372b7891bcb602c479d442065b87541e4a7f36a17e3c3",
    "github_push.json": "06934570e9272036360facaeda9d83ffffc00ee45cd34c09f21ed6a93f058423",
    "github_ping.json": "3fc46030921931839055e43394fda6c6e6070f678cd4d8ab351e18ca64a88953",
}


def test_github_documented_check_value() -> None:
    assert (
        sign(b"Hello, World!", "It's a Secret to Everybody")
        == "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize(("name", "digest"), KNOWN.items())
def test_fixture_signatures_match_headers_md(name: str, digest: str) -> None:
    assert sign(fixture(name), SECRET) == digest


def test_signatures_reads_all_three_headers_and_drops_empty_ones() -> None:
    headers = {
        "X-Gitea-Signature": "AB",
        "X-Gogs-Signature": "",
        "X-Hub-Signature-256": "sha256=cd",
    }
    assert signatures(headers) == ["ab", "cd"]
    assert signatures({"X-Hub-Signature-256": "sha256=", "X-Gitea-Signature": ""}) == []
    assert signatures({"X-Hub-Signature-256": "md5=zz"}) == []


def test_verify_accepts_any_secret_and_any_body() -> None:
    body = b'{"a": 1}'
    verify([b"other", body], ["old", SECRET], [sign(body, SECRET)])


def test_verify_rejects_tampered_body() -> None:
    digest = sign(b"original", SECRET)
    with pytest.raises(BadSignature):
        verify([b"tampered"], [SECRET], [digest])


def test_verify_without_signature_is_missing() -> None:
    with pytest.raises(MissingSignature):
        verify([b"x"], [SECRET], [])


def test_verify_survives_non_ascii_header() -> None:
    with pytest.raises(BadSignature):
        verify([b"x"], [SECRET], ["é" * 64])
