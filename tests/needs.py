"""What a test needs from this machine, and exactly how to get it.

Outside CI a test whose tool or service is missing skips, and its reason says what to
install. CI sets DEPLOYHOOK_REQUIRE_DOCKER, _BROWSER and _POSTGRES to 1: there the same
test fails instead, so a CI that meant to run it cannot pass by skipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

ALL_AT_ONCE = ".ci/install-system.sh (as root, Debian 12: all of them)"

HOW = {
    "docker": (
        "a Docker engine: `apt-get install docker.io` (or " + ALL_AT_ONCE + "), then "
        "`export DOCKER_HOST=$(.ci/docker-engine.sh start | tail -n1)`"
    ),
    "compose-v1": "Compose v1: `apt-get install docker-compose` (or " + ALL_AT_ONCE + ")",
    "compose-v2": (
        "the Compose v2 plugin (`docker compose`): " + ALL_AT_ONCE + " installs it from "
        "Debian 13; elsewhere Docker's `docker-compose-plugin` package"
    ),
    "browser": (
        "Chromium and its driver: `apt-get install chromium chromium-driver` (or "
        + ALL_AT_ONCE
        + ")"
    ),
    "postgres": (
        "PostgreSQL: `apt-get install postgresql` (or " + ALL_AT_ONCE + "), then "
        "`export DEPLOYHOOK_TEST_DATABASE_URL=$(.ci/postgres.sh start | tail -n1)`"
    ),
}

# The variable that makes a missing `what` a failure. Read at import: the autouse
# isolated_env fixture clears DEPLOYHOOK_* before each test runs.
REQUIRE_VARIABLE = {
    "docker": "DEPLOYHOOK_REQUIRE_DOCKER",
    "compose-v1": "DEPLOYHOOK_REQUIRE_DOCKER",
    "compose-v2": "DEPLOYHOOK_REQUIRE_DOCKER",
    "browser": "DEPLOYHOOK_REQUIRE_BROWSER",
    "postgres": "DEPLOYHOOK_REQUIRE_POSTGRES",
}
REQUIRED = {what: os.environ.get(var) == "1" for what, var in REQUIRE_VARIABLE.items()}


def missing(what: str, why: str) -> NoReturn:
    """Skip because `why`, saying how to get `what`; fail instead where CI requires it."""
    if REQUIRED[what]:
        pytest.fail(f"{REQUIRE_VARIABLE[what]}=1 but {why}; install {HOW[what]}", pytrace=False)
    pytest.skip(f"{why}: install {HOW[what]}")


def compose_v1() -> None:
    """Compose v1 (the Python `docker-compose` 1.x) is on PATH, or skip (fail in CI)."""
    found = shutil.which("docker-compose")
    if found is None:
        missing("compose-v1", "`docker-compose` (Compose v1) is not on PATH")
    probe = subprocess.run(
        [found, "version", "--short"], capture_output=True, text=True, timeout=20, check=False
    )
    if probe.returncode == 0 and not probe.stdout.strip().lstrip("v").startswith("1."):
        missing("compose-v1", f"{found} is Compose {probe.stdout.strip()}, not v1")


def compose_v2() -> None:
    """`docker compose` (the v2 plugin) answers, or skip (fail in CI)."""
    docker = shutil.which("docker")
    if docker is None:
        missing("compose-v2", "`docker` is not on PATH")
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=20, check=False
    )
    if probe.returncode != 0:
        missing("compose-v2", "`docker compose` (the v2 plugin) does not answer")
