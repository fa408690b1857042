"""The PostgreSQL server of the shared-store tests: a fresh schema per test.

The server comes from DEPLOYHOOK_TEST_DATABASE_URL (`.ci/run` starts one with
`.ci/postgres.sh`). Without it the PostgreSQL variants skip, unless
DEPLOYHOOK_REQUIRE_POSTGRES=1; with it, a server that does not answer fails them: a CI
that meant to test PostgreSQL must not pass by skipping.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress

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


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database on the test server (for a test that ends every session of
    its database: a schema is not enough when other tests share the server at once)."""
    url = server_url()
    name = "t_" + secrets.token_hex(6)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
    except psycopg.Error as exc:
        pytest.fail(f"DEPLOYHOOK_TEST_DATABASE_URL is set but cannot create a database: {exc}")
    try:
        yield urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '10s'")
            with suppress(psycopg.Error):
                conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
