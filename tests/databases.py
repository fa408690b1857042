"""The PostgreSQL server of the shared-store tests: a fresh schema per test.

The server comes from DEPLOYHOOK_TEST_DATABASE_URL (`.ci/run` starts one with
`.ci/postgres.sh`). Without it the PostgreSQL variants skip, unless
DEPLOYHOOK_REQUIRE_POSTGRES=1; with it, a server that does not answer fails them: a CI
that meant to test PostgreSQL must not pass by skipping.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest

from tests import needs

# Read at import: the autouse isolated_env fixture clears DEPLOYHOOK_* before each test.
POSTGRES_URL = os.environ.get("DEPLOYHOOK_TEST_DATABASE_URL") or None


def with_search_path(url: str, schema: str) -> str:
    """The URL with `schema` first on the search path (a libpq `options` parameter)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def server_url() -> str:
    """The test server's URL, or skip (or fail when PostgreSQL is required)."""
    if POSTGRES_URL is None:
        needs.missing("postgres", "no PostgreSQL: DEPLOYHOOK_TEST_DATABASE_URL is unset")
    return POSTGRES_URL


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new empty schema on the test server; yields a URL that uses it, drops it after."""
    url = server_url()
    schema = "t_" + secrets.token_hex(6)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.Error as exc:
        pytest.fail(f"DEPLOYHOOK_TEST_DATABASE_URL is set but unusable: {exc}")
    try:
        yield with_search_path(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            # A leaked connection must not hang the suite; a leftover schema is harmless.
            conn.execute("SET lock_timeout = '10s'")
            with suppress(psycopg.errors.LockNotAvailable):
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


class PrivateCluster:
    """A PostgreSQL cluster of its own, for tests that stop and start the server.

    The shared test server (DEPLOYHOOK_TEST_DATABASE_URL) is never stopped: other test
    runs use it. This one lives in its own base directory under /tmp (`.ci/postgres.sh`
    runs it as the postgres user, which must be able to reach it), on a port of its own.
    """

    SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.env = {
            **os.environ,
            "DEPLOYHOOK_PG_BASE": str(base),
            "DEPLOYHOOK_PG_PORT": str(port),
        }
        self.url = ""

    def _run(self, command: str) -> str:
        done = subprocess.run(
            ["bash", str(self.SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode:
            raise RuntimeError(f"postgres.sh {command} failed: {done.stderr[-2000:]}")
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""

    def start(self) -> str:
        self.url = self._run("start")
        return self.url

    def stop(self) -> None:
        self._run("stop")

    def purge(self) -> None:
        self._run("purge")


@contextmanager
def private_cluster(port: int = 55450) -> Iterator[PrivateCluster]:
    """Start a private cluster (skip without PostgreSQL's binaries), purge it after."""
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        needs.missing("postgres", "no PostgreSQL binaries (/usr/lib/postgresql/*/bin/initdb)")
    base = Path(tempfile.mkdtemp(prefix="deployhook-test-pg-", dir="/tmp"))
    cluster = PrivateCluster(base, port)
    try:
        cluster.start()
        yield cluster
    finally:
        with suppress(RuntimeError, subprocess.TimeoutExpired):
            cluster.purge()
