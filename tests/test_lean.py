"""What each process of `serve` imports: the heavy libraries only where they are used.

A web process answers deliveries and status pages: GitPython, the Docker SDK, requests,
Apprise, ruamel and psycopg (on SQLite) are the deploy worker's and the CLI's, and each
one a web process loads is memory that every web process carries (issue 16). The check
runs in a fresh interpreter, as a web process is: the master's imports (server.py's
WebApplication.load), then the app built and serving one request of each kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_registry
from tests.helpers import SECRET, gitea_headers, gitea_push_body

HEAVY = ("git", "docker", "requests", "apprise", "ruamel", "psycopg", "psycopg_pool", "urllib3")

WEB_PROCESS = """
import json, sys
from deployhook.config import Settings
from deployhook.server import WebApplication

settings = Settings.load()
app = WebApplication(settings).load()   # what the master imports before it forks
master = sorted(m for m in sys.modules)
app.build()                              # what a web process does after the fork
requests = json.loads(sys.argv[1])
statuses = []
for method, path, body, headers in requests:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "localhost",
        "SERVER_PORT": "80", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_LENGTH": str(len(body)), "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
    }
    import io
    environ["wsgi.input"] = io.BytesIO(body.encode())
    for key, value in headers.items():
        name = key.upper().replace("-", "_")
        environ[name if name in ("CONTENT_TYPE",) else "HTTP_" + name] = value
    seen = []
    out = b"".join(app(environ, lambda status, h, exc=None: seen.append(status)))
    statuses.append(seen[0])
print(json.dumps({"statuses": statuses, "master": master, "web": sorted(sys.modules)}))
"""


def _loaded(modules: list[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    checkout = tmp_path / "site"
    checkout.mkdir()
    registry = write_registry(tmp_path / "repos.yml", {"site": {"path": str(checkout)}})
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")}
    environ.update(
        DEPLOYHOOK_REGISTRY=str(registry),
        DEPLOYHOOK_DATA_DIR=str(tmp_path / "data"),
        DEPLOYHOOK_SECRET=SECRET,
        DEPLOYHOOK_ADMIN_TOKEN="admin-token-for-tests",
        DEPLOYHOOK_LOG_FORMAT="json",
    )
    return environ


def test_a_web_process_imports_none_of_the_heavy_libraries(env: dict[str, str]) -> None:
    body = gitea_push_body(sha="a" * 40, full_name="jeff/site")
    admin = {"Authorization": "Bearer admin-token-for-tests"}
    requests = [
        ("POST", "/deploy/site", body.decode(), gitea_headers(body)),  # the fast path
        ("POST", "/deploy/nope", body.decode(), gitea_headers(body)),
        ("POST", "/deploy", body.decode(), gitea_headers(body)),  # Flask (no source: 403)
        ("GET", "/healthz", "", {}),
        ("GET", "/deploy/site", "", {}),
        ("GET", "/deploy/site/jobs", "", {}),
        ("GET", "/deploy/site/deliveries", "", {}),
        ("GET", "/deploy/site/badge.svg", "", {}),
        ("GET", "/jobs/1", "", {}),
        ("GET", "/jobs/1/log", "", admin),
        ("GET", "/api/overview", "", {}),
        ("GET", "/api/workers", "", {}),
        ("GET", "/metrics", "", {}),
        ("GET", "/", "", admin),
        ("GET", "/ui/repos/site", "", admin),
        ("GET", "/ui/jobs/1", "", admin),
        ("POST", "/deploy/site/hold", "", admin),
    ]
    out = subprocess.run(
        [sys.executable, "-c", WEB_PROCESS, json.dumps(requests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    statuses = [int(s.split()[0]) for s in result["statuses"]]
    assert statuses[0] == 202, statuses  # a delivery stored: the store and intake ran
    assert all(s < 500 for s in statuses), statuses
    assert _loaded(result["master"]) == set(), "imported by the master, so by every web process"
    assert _loaded(result["web"]) == set(), "imported by a web process"
    assert "deployhook.web.app" in result["master"]  # preloaded: shared after the fork


def test_the_cli_entry_point_imports_none_of_them(env: dict[str, str]) -> None:
    """`deployhook serve`'s own process is the master: what its command imports before
    the fork, every web process holds too."""
    code = (
        "import sys, json\n"
        "from deployhook.cli import main\n"
        "from deployhook.cli import serve\n"
        "from deployhook.config import Settings\n"
        "serve.announce(Settings.load())\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert _loaded(json.loads(out.stdout.splitlines()[-1])) == set()


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["status", "--json"]])
def test_status_and_help_start_without_structlog(env: dict[str, str], argv: list[str]) -> None:
    """`deployhook status` and `--help` start fast (issue 16): neither structlog (which
    imports asyncio) nor a heavy library is imported when nothing is logged."""
    made = "from deployhook.config import Settings\nfrom deployhook.store import open_store\n"
    made += "open_store(Settings.load()).close()\n"  # the store a server would have made
    subprocess.run([sys.executable, "-c", made], env=env, capture_output=True, check=True)
    code = (
        "import sys, json\n"
        "from deployhook.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    modules = json.loads(out.stdout.splitlines()[-1])
    assert _loaded(modules) == set()
    assert not [m for m in modules if m.split(".")[0] in ("structlog", "asyncio", "flask")]
