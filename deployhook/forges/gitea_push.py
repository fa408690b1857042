"""A push delivery exactly as Gitea sends it: the header block and the body's wire layout.

Used by `deployhook deliver` to check a setup end to end. The body is what Gitea's
"Test Delivery" sends (`before == after`, one synthetic commit), laid out like Go's
`json.MarshalIndent(payload, "", "  ")`: two-space indent, no trailing newline, and
`<`, `>`, `&` escaped as Go escapes them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

_GO_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def _marshal_indent(doc: Any) -> bytes:
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    for char, escaped in _GO_ESCAPES.items():
        text = text.replace(char, escaped)
    return text.encode("utf-8")


def push_body(
    *,
    sha: str,
    ref: str,
    full_name: str,
    base_url: str,
    message: str = "deployhook deliver: test delivery\n",
) -> bytes:
    """The body of Gitea's Test Delivery for the commit `sha` at `ref`."""
    owner, _, name = full_name.rpartition("/")
    html_url = f"{base_url.rstrip('/')}/{full_name}"
    person = {"name": owner or "deployhook", "email": "deployhook@localhost", "username": ""}
    commit = {
        "id": sha,
        "message": message,
        "url": f"{html_url}/commit/{sha}",
        "author": person,
        "committer": person,
        "verification": None,
        "timestamp": "0001-01-01T00:00:00Z",
        "added": None,
        "removed": None,
        "modified": None,
    }
    user = {
        "id": 0,
        "login": owner,
        "login_name": "",
        "full_name": "",
        "email": "",
        "username": owner,
    }
    doc = {
        "ref": ref,
        "before": sha,
        "after": sha,
        "compare_url": f"{html_url}/compare/{sha}...{sha}",
        "commits": [commit],
        "total_commits": 1,
        "head_commit": commit,
        "repository": {
            "id": 0,
            "owner": user,
            "name": name,
            "full_name": full_name,
            "html_url": html_url,
            "default_branch": ref.removeprefix("refs/heads/"),
            "clone_url": f"{html_url}.git",
        },
        "pusher": user,
        "sender": user,
    }
    return _marshal_indent(doc)


def headers(
    body: bytes, *, secret: str, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    """Gitea's header block for body, signed with secret (Host and length are added later)."""
    delivery = delivery or str(uuid.uuid4())
    sha256 = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    return {
        "User-Agent": "Go-http-client/1.1",
        "Content-Type": "application/json",
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Event": event,
        "X-Gitea-Event-Type": event,
        "X-Gitea-Signature": sha256,
        "X-Gogs-Delivery": delivery,
        "X-Gogs-Event": event,
        "X-Gogs-Event-Type": event,
        "X-Gogs-Signature": sha256,
        "X-Hub-Signature": f"sha1={sha1}",
        "X-Hub-Signature-256": f"sha256={sha256}",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "X-GitHub-Event-Type": event,
        "Accept-Encoding": "gzip",
    }
