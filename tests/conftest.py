from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployhook.config import Settings
from deployhook.service import Service
from deployhook.web import create_app
from tests.databases import fresh_schema
from tests.helpers import (
    SECRET,
    FakeDocker,
    FakeEngine,
    Remote,
    make_fake_docker,
    make_remote,
)

# Test modules whose tests run once per store backend (SQLite, then PostgreSQL when a
# server is configured): the behaviour suite. Others run on SQLite only, to keep CI fast.
BOTH_BACKENDS = {
    "test_webhook",
    "test_webhook_routed",
    "test_worker",
    "test_backends",
    "test_nodes",
    "test_prune",
    "test_metrics",
    "test_hostile_repo",
    "test_which_commit",
    "test_job_ids",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "store_url" in metafunc.fixturenames and module in BOTH_BACKENDS:
        metafunc.parametrize(
            "store_url",
            ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
            indirect=True,
        )


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No DEPLOYHOOK_* from the caller, an empty git config, a fixed git identity."""
    for name in list(os.environ):
        if name.startswith("DEPLOYHOOK_") and name not in {
            "DEPLOYHOOK_REQUIRE_DOCKER",
            "DEPLOYHOOK_TEST_DATABASE_URL",
            "DEPLOYHOOK_REQUIRE_POSTGRES",
        }:
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def write_registry(
    path: Path, repos: dict[str, dict[str, Any]], defaults: dict[str, Any] | None = None
) -> Path:
    doc: dict[str, Any] = {"repos": repos}
    if defaults:
        doc["defaults"] = defaults
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return make_remote(tmp_path)


@pytest.fixture
def fake_docker(tmp_path: Path) -> FakeDocker:
    return make_fake_docker(tmp_path / "fake-docker")


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEngine]:
    """DOCKER_HOST points at an engine that answers (a short path: sockets have a limit)."""
    directory = Path(tempfile.mkdtemp(prefix="dh-engine-", dir="/tmp"))
    engine = FakeEngine(directory)
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    try:
        yield engine
    finally:
        engine.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, remote: Remote, fake_docker: FakeDocker) -> Settings:
    registry = write_registry(
        tmp_path / "repos.yml",
        {
            "site": {"path": str(remote.checkout), "source": "jeff/site", "health_timeout": 0},
        },
    )
    return Settings.load(
        {},
        registry=registry,
        data_dir=tmp_path / "data",
        secret=SECRET,
        admin_token="admin-token-for-tests",
        reconcile_interval=0,
        compose=(str(fake_docker.path), "compose"),
        stop_grace=5,
    )


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The store under test: None for SQLite in the data dir, or a fresh PostgreSQL schema."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    with fresh_schema() as url:
        yield url


@pytest.fixture
def open_service(store_url: str | None) -> Iterator[Callable[[Settings], Service]]:
    """Open Services (each like a separate process) that are closed after the test."""
    opened: list[Service] = []

    def make(settings: Settings) -> Service:
        if store_url and not settings.database_url:
            settings = dataclasses.replace(settings, database_url=store_url)
        svc = Service.open(settings)
        opened.append(svc)
        return svc

    yield make
    for svc in opened:
        svc.close()


@pytest.fixture
def service(settings: Settings, open_service: Callable[[Settings], Service]) -> Service:
    return open_service(settings)


@pytest.fixture
def app(settings: Settings, service: Service) -> Any:
    return create_app(settings, service_=service, configure_logging=False)


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()
