"""`deployhook deliver NAME [--url U]`: a signed push, as Gitea sends it, to a running server.

The admin's end-to-end check of a setup: the registry entry, the secret, the URL (and a
reverse proxy in front, with --url), the intake and the queue. The push is for the
remote branch head, like Gitea's "Test Delivery", so it deploys what is already there.
"""

from __future__ import annotations

import json
from urllib.parse import quote, urlsplit

import click

from deployhook.cli.common import fail, handle_errors, open_service, repo_names
from deployhook.config import Settings
from deployhook.errors import ConfigError

TIMEOUT_S = 10.0
REMOTE_TIMEOUT_S = 20


def default_url(settings: Settings) -> str:
    """http://HOST:PORT from DEPLOYHOOK_BIND (a wildcard address means this host)."""
    if settings.bind.startswith("unix:"):
        raise ConfigError(f"DEPLOYHOOK_BIND: {settings.bind!r} is a unix socket: give --url")
    host, _, port = settings.bind.rpartition(":")
    loopback = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "*": "127.0.0.1"}  # noqa: S104
    host = loopback.get(host, host)
    return f"http://{host}:{port}"


@click.command()
@click.argument("name", shell_complete=repo_names)
@click.option("--url", help="base URL of the deployhook to send it to [from DEPLOYHOOK_BIND]")
@handle_errors
def deliver(name: str, url: str | None) -> None:
    """Send a signed push for NAME's remote branch head and print the answer."""
    from deployhook.errors import StepFailed
    from deployhook.forges import gitea_push

    with open_service() as svc:
        settings = svc.settings
        repo = svc.repo(name)
        secret = svc.secret(repo)
        try:
            sha = svc.remote_head(repo)
        except StepFailed as exc:
            fail(f"cannot read the head of {repo.branch} on {repo.remote}: {exc}")
    full_name = repo.source[0] if repo.source else f"deployhook/{repo.name}"
    # Without a known forge the body names no web address (a relative html_url, which
    # the intake drops), so no page links the commit to a made-up site.
    forge = repo.gitea.url if repo.gitea else ""
    body = gitea_push.push_body(sha=sha, ref=repo.ref, full_name=full_name, base_url=forge)
    target = (url or default_url(settings)).rstrip("/") + f"/deploy/{quote(repo.name)}"
    status, reason, text = _post(target, body, gitea_push.headers(body, secret=secret))
    click.echo(f"POST {target}: push of {repo.branch} at {sha[:12]}")
    click.echo(f"{status} {reason}")
    click.echo(text)
    if not 200 <= status < 300:
        raise SystemExit(1)


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, str]:
    """POST like Go's HTTP client: these headers in this order, plus Host and length."""
    import http.client  # only this command speaks HTTP: the others start faster without it

    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"--url: {url!r} is not an http:// or https:// URL")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    conn = connection_class(parts.netloc, timeout=TIMEOUT_S)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", headers["User-Agent"])
        conn.putheader("Content-Length", str(len(body)))
        for key, value in headers.items():
            if key != "User-Agent":
                conn.putheader(key, value)
        conn.endheaders(body)
        response = conn.getresponse()
        raw = response.read()
        encoding = (response.getheader("Content-Encoding") or "").lower()
        status, reason = response.status, response.reason
    except (OSError, http.client.HTTPException) as exc:
        fail(f"cannot deliver to {url}: {exc}")
    finally:
        conn.close()
    return status, reason, _text(raw, encoding)


def _text(raw: bytes, encoding: str) -> str:
    """The answer as text: un-gzipped (we said we accept gzip), JSON pretty-printed."""
    import gzip
    import zlib

    if encoding == "gzip":
        raw = gzip.decompress(raw)
    elif encoding == "deflate":
        raw = zlib.decompress(raw)
    text = raw.decode("utf-8", "replace")
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text.strip()
