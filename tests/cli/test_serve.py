"""`deployhook serve` says at start what it serves and which repos cannot verify a push."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_registry
from tests.helpers import SECRET, Remote, make_fake_docker
from tests.server import free_port, serve

pytestmark = pytest.mark.slow


def registry_of_two(tmp_path: Path, remote: Remote) -> Path:
    return write_registry(
        tmp_path / "repos.yml",
        {
            "site": {"path": str(remote.checkout)},  # DEPLOYHOOK_SECRET
            "app": {"path": str(tmp_path / "app"), "secret_env": "APP_WEBHOOK_SECRET"},
        },
    )


def env_for(tmp_path: Path, registry: Path, **extra: str) -> dict[str, str]:
    fake = make_fake_docker(tmp_path / "fake-docker")
    return {
        "DEPLOYHOOK_REGISTRY": str(registry),
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_COMPOSE": f"{fake.path} compose",
        "DEPLOYHOOK_STOP_GRACE": "5",
        **extra,
    }


def test_serve_logs_which_repos_cannot_verify(tmp_path: Path, remote: Remote) -> None:
    registry = registry_of_two(tmp_path, remote)
    env = env_for(tmp_path, registry, DEPLOYHOOK_SECRET=SECRET)
    with serve(env, cwd=tmp_path) as served:
        events = {e["event"]: e for e in served.events()}
    start = events["serve_registry"]
    assert (start["registry"], start["data_dir"], start["repos"]) == (
        str(registry),
        str(tmp_path / "data"),  # beside the registry
        2,
    )
    warning = events["no_webhook_secret"]
    assert (warning["level"], warning["repos"]) == ("warning", ["app"])
    assert "APP_WEBHOOK_SECRET" in warning["problems"][0]
    assert SECRET not in served.log_text()


def test_serve_with_every_secret_says_nothing_of_them(tmp_path: Path, remote: Remote) -> None:
    env = env_for(
        tmp_path,
        registry_of_two(tmp_path, remote),
        DEPLOYHOOK_SECRET=SECRET,
        APP_WEBHOOK_SECRET="another-secret-for-tests",
    )
    with serve(env, cwd=tmp_path) as served:
        events = [e["event"] for e in served.events()]
    assert "serve_registry" in events and "no_webhook_secret" not in events


def test_serve_on_a_terminal_says_it_in_a_sentence(tmp_path: Path, remote: Remote) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEPLOYHOOK_")},
        **env_for(tmp_path, registry_of_two(tmp_path, remote)),  # no secret at all
    }
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployhook", "serve", "--bind", f"127.0.0.1:{free_port()}"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child,
        start_new_session=True,
    )
    os.close(child)
    seen = b""
    try:
        end = time.monotonic() + 30
        while b"(docs/secrets.md)" not in seen and time.monotonic() < end:
            if select.select([main], [], [], 1)[0]:
                seen += os.read(main, 65536)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        os.close(main)
    text = " ".join(seen.decode(errors="replace").split())
    assert (
        "deployhook: warning: 2 repos cannot verify a push, no webhook secret: app, site. "
        "Their pushes are refused (503). Set DEPLOYHOOK_SECRET, or secret_env / secret_file "
        f"in {tmp_path / 'repos.yml'} (docs/secrets.md)."
    ) in text
