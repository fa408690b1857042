"""The Docker Engine API (the Docker SDK), behind one door: connect, and say what failed.

DOCKER_HOST is honoured. Engine errors become StepFailed with one line saying why.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

import requests
from docker.client import DockerClient
from docker.constants import MINIMUM_DOCKER_API_VERSION
from docker.errors import APIError, DockerException, NotFound

from deployhook.errors import StepFailed
from deployhook.text import one_line

__all__ = ["DockerClient", "NotFound", "connect", "engine"]

API_TIMEOUT_S = 30


@contextlib.contextmanager
def engine() -> Iterator[DockerClient]:
    """A Docker client from the environment (DOCKER_HOST); engine errors become StepFailed."""
    client = None
    try:
        client = connect()
        yield client
    except APIError as exc:
        raise StepFailed(f"docker engine error: {one_line(exc.explanation or exc, 200)}") from None
    except (DockerException, requests.exceptions.RequestException) as exc:
        raise StepFailed(f"docker engine unreachable: {one_line(exc, 200)}") from None
    finally:
        if client is not None:
            client.close()


def connect() -> DockerClient:
    """A client that negotiates the API version like version="auto", without leaking.

    docker-py's own "auto" asks the engine inside the constructor and leaves the socket
    open when that fails; here the client exists first, so it can always be closed.
    """
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        # docker-py leaks its socket when the connect fails: try one of our own first.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(API_TIMEOUT_S)
            try:
                probe.connect(host.removeprefix("unix://"))
            except OSError as exc:
                raise StepFailed(
                    f"docker engine unreachable: {host}: {exc.strerror or exc}"
                ) from None
    client = DockerClient.from_env(version=MINIMUM_DOCKER_API_VERSION, timeout=API_TIMEOUT_S)
    try:
        client.api._version = client.api._retrieve_server_version()
    except BaseException:
        client.close()
        raise
    return client
