"""The real Docker engine for end-to-end tests, and busybox test stacks in real git remotes.

Every test in this directory is marked `docker`. Without an engine they skip, unless
DEPLOYHOOK_REQUIRE_DOCKER=1 (CI): then the engine is started once with
`.ci/docker-engine.sh start`, and the tests fail if it does not answer.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import socket
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from docker.client import DockerClient
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import DockerException, NotFound

from tests import needs
from tests.helpers import Remote, git

ROOT = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = ROOT / ".ci" / "docker-engine.sh"
BUSYBOX = Path("/bin/busybox")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.docker)


def _answers(host: str | None) -> bool:
    """True if an engine answers at host (DOCKER_HOST syntax; None: the default socket)."""
    host = host or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        # docker-py leaks its socket when the connect fails: try one of our own first.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(10)
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError:
                return False
    client = DockerClient(base_url=host, version=MINIMUM_DOCKER_API_VERSION, timeout=10)
    try:
        return bool(client.api.version(api_version=False).get("ApiVersion"))
    except (DockerException, requests.exceptions.RequestException):
        return False
    finally:
        client.close()


def _script(command: str, timeout: float) -> str | None:
    """Run .ci/docker-engine.sh COMMAND; its last stdout line is DOCKER_HOST."""
    if not ENGINE_SCRIPT.exists():
        return None
    try:
        done = subprocess.run(
            ["bash", str(ENGINE_SCRIPT), command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    lines = done.stdout.strip().splitlines()
    return lines[-1] if done.returncode == 0 and lines else None


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """DOCKER_HOST of an engine that answers: the given one, the project's, or a new one."""
    required = os.environ.get("DEPLOYHOOK_REQUIRE_DOCKER") == "1"
    given = os.environ.get("DOCKER_HOST")
    host = given if _answers(given) else None
    if host is None:
        found = _script("host", 30)
        host = found if found and _answers(found) else None
    if host is None and required:
        started = _script("start", 180)
        host = started if started and _answers(started) else None
        if host is None:
            pytest.fail(
                "DEPLOYHOOK_REQUIRE_DOCKER=1 but no Docker engine answers and "
                f"`{ENGINE_SCRIPT} start` did not start one",
                pytrace=False,
            )
    if host is None:
        needs.missing("docker", "no Docker engine answers (at DOCKER_HOST or the default socket)")
    old = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = host
    yield host
    if old is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = old


@pytest.fixture(autouse=True)
def _engine_env(docker_engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here needs the engine, and no COMPOSE_* of the caller's may leak in."""
    for name in (
        "COMPOSE_PROJECT_NAME",
        "COMPOSE_FILE",
        "COMPOSE_PROFILES",
        "COMPOSE_PATH_SEPARATOR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def docker_client(docker_engine: str) -> Iterator[DockerClient]:
    client = DockerClient(base_url=docker_engine, timeout=120)
    yield client
    client.close()


def uid() -> str:
    """A short random suffix: tests never share a compose project, an image or a tag."""
    return secrets.token_hex(4)


DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
"""


@pytest.fixture(scope="session")
def busybox_image(
    docker_client: DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A busybox image built FROM scratch once per session (for stacks that need no build)."""
    context = tmp_path_factory.mktemp("busybox-image")
    shutil.copy(BUSYBOX, context / "busybox")
    (context / "Dockerfile").write_text(DOCKERFILE + 'RUN ["mkdir", "-p", "/www", "/tmp"]\n')
    tag = f"deployhook-test/busybox:{uid()}"
    docker_client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    yield tag
    with contextlib.suppress(DockerException):
        docker_client.images.remove(tag, force=True)


def dangling_image(client: DockerClient, *, project: str) -> str:
    """Build an image labelled as `project`'s and leave it dangling; return its id."""
    tag = f"deployhook-test/dangling:{uid()}"
    ids = []
    for n in range(2):  # the second build takes the tag from the first
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in {
                "Dockerfile": f"FROM scratch\nCOPY f /f\nLABEL "
                f"com.docker.compose.project={project}\n".encode(),
                "f": f"{n}-{uid()}".encode(),
            }.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        image, _ = client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True)
        ids.append(image.id)
    client.images.remove(tag)
    return str(ids[0])


HEALTHY_COMPOSE = """\
services:
  web:
    build: .
    init: true
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/health"]
      interval: 1s
      timeout: 2s
      retries: 2
"""


@dataclass
class Stack:
    """A busybox web service in a real git remote; `www/` holds what it serves."""

    remote: Remote
    client: DockerClient
    compose: tuple[str, ...] = ()

    def push_version(self, version: str, *, healthy: bool = True) -> str:
        """Commit and push a version: index.html says it; without health, /health is gone."""
        www = self.remote.dev / "www"
        (www / "index.html").write_text(f"{version}\n")
        health = www / "health"
        if healthy:
            health.write_text("ok\n")
        elif health.exists():
            health.unlink()
        git(self.remote.dev, "add", "-A")
        git(self.remote.dev, "commit", "-q", "-m", version)
        return self.remote.push()

    @property
    def project(self) -> str:
        return self.remote.checkout.name  # the same for v1 and v2: lowercase, no dots

    def containers(self, service: str = "web") -> list[Any]:
        return list(
            self.client.containers.list(
                all=True,
                filters={
                    "label": [
                        f"com.docker.compose.project={self.project}",
                        f"com.docker.compose.service={service}",
                    ]
                },
            )
        )

    def served(self) -> tuple[str, str]:
        """(container id, what the running web container serves), read inside it."""
        [container] = self.containers()
        code, out = container.exec_run(["wget", "-q", "-O-", "http://127.0.0.1:8080/"])
        assert code == 0, out
        return container.id, out.decode().strip()

    def down(self) -> None:
        """Remove everything the stack made, whatever state a failed test left it in."""
        if self.compose:
            subprocess.run(
                [*self.compose, "down", "-v", "--rmi", "local", "--remove-orphans", "-t", "1"],
                cwd=self.remote.checkout,
                capture_output=True,
                timeout=180,
                check=False,
            )
        for container in self.client.containers.list(
            all=True, filters={"label": f"com.docker.compose.project={self.project}"}
        ):
            with contextlib.suppress(NotFound):
                container.remove(force=True)
        remove_labelled_images(self.client, TEST_LABEL, self.project)


TEST_LABEL = "deployhook.test.stack"


def remove_labelled_images(client: DockerClient, label: str, value: str) -> None:
    """Remove every image built with label=value, dangling or not (children first)."""
    for _ in range(3):  # an intermediate image goes once its children are gone
        images = client.images.list(all=True, filters={"label": f"{label}={value}"})
        if not images:
            return
        for image in images:
            with contextlib.suppress(NotFound, DockerException):
                client.images.remove(image.id, force=True)


def make_stack(root: Path, client: DockerClient) -> Stack:
    """A bare origin, a developer clone and a deploy checkout named after a unique project."""
    name = f"dhe2e-{uid()}"
    origin, dev, checkout = root / f"{name}.git", root / f"{name}-dev", root / "deploy" / name
    git(root, "init", "-q", "--bare", "-b", "main", str(origin))
    git(root, "init", "-q", "-b", "main", str(dev))
    git(dev, "remote", "add", "origin", str(origin))
    shutil.copy(BUSYBOX, dev / "busybox")
    # The label lets teardown find every image of this stack, even those v1 left dangling.
    (dev / "Dockerfile").write_text(DOCKERFILE + f"LABEL {TEST_LABEL}={name}\nCOPY www /www\n")
    (dev / "docker-compose.yml").write_text(HEALTHY_COMPOSE)
    (dev / "www").mkdir()
    stack = Stack(Remote(origin, dev, checkout), client)
    stack.push_version("v1")
    checkout.parent.mkdir(parents=True, exist_ok=True)
    git(root, "clone", "-q", str(origin), str(checkout))
    return stack


@pytest.fixture
def stack(tmp_path: Path, docker_client: DockerClient) -> Iterator[Stack]:
    made = make_stack(tmp_path, docker_client)
    try:
        yield made
    finally:
        made.down()
