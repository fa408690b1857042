"""The project's docker-compose.yml, as the real `docker compose config` reads it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_config(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "config", "--format", "json"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The compose file in a fresh directory with .env made from .env.example."""
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    return tmp_path


@pytest.fixture
def service(project: Path) -> dict[str, Any]:
    result = compose_config(project)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["networks"]["traefik-public"]["external"] is True
    assert doc["volumes"]["data"]["name"] == "deployhook_data"
    return doc["services"]["deployhook"]  # type: ignore[no-any-return]


def test_compose_config_accepts_it_with_traefik_labels(service: dict[str, Any]) -> None:
    labels = service["labels"]
    assert labels["traefik.enable"] == "true"
    assert labels["traefik.http.routers.deployhook.rule"] == "Host(`deploy.example.com`)"
    assert labels["traefik.http.services.deployhook.loadbalancer.server.port"] == "8000"
    assert labels["traefik.docker.network"] == "traefik-public"
    assert list(service["networks"]) == ["traefik-public"]
    assert service["environment"]["DEPLOYHOOK_BIND"] == "0.0.0.0:8000"
    assert service["environment"]["DEPLOYHOOK_PUBLIC_URL"] == "https://deploy.example.com"


def test_mounts_socket_data_registry_dir_and_deploy_root_at_the_same_path(
    service: dict[str, Any], project: Path
) -> None:
    mounts = {m["target"]: m for m in service["volumes"]}
    assert mounts["/var/run/docker.sock"]["source"] == "/var/run/docker.sock"
    assert mounts["/opt/websites"]["source"] == "/opt/websites"
    assert mounts["/data"]["type"] == "volume"
    # The registry's directory, not the file: a rename (repos add, an editor) shows through.
    assert mounts["/etc/deployhook"]["source"] == str(project / "config")
    assert service["environment"]["DEPLOYHOOK_REGISTRY"] == "/etc/deployhook/repos.yml"
    assert mounts["/home/deployhook/.ssh"]["read_only"] is True


def test_runs_as_the_checkout_owner_with_the_socket_group(service: dict[str, Any]) -> None:
    assert service["user"] == "1000:1000"
    assert service["group_add"] == ["999"]
    assert service["build"]["args"] == {
        "DEPLOYHOOK_UID": "1000",
        "DEPLOYHOOK_GID": "1000",
        "DOCKER_GID": "999",
    }


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)([hms])", duration))


def test_stop_grace_period_outlasts_the_deploy_grace(service: dict[str, Any]) -> None:
    grace = int(service["environment"]["DEPLOYHOOK_STOP_GRACE"])
    assert grace == 900
    assert _seconds(service["stop_grace_period"]) >= grace + 30
    assert "DEPLOYHOOK_STOP_GRACE=900" in (ROOT / "Dockerfile").read_text()


def test_env_example_ships_no_secret_values() -> None:
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#") and ("SECRET" in key or "TOKEN" in key):
            assert value == "", line
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_a_missing_env_file_is_refused(project: Path) -> None:
    (project / ".env").unlink()
    result = compose_config(project)
    assert result.returncode != 0
    assert ".env" in result.stderr
