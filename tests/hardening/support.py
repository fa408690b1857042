"""What the hardening tests share: HTTP calls that return any status, waits, mounts."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SECRET, FakeDocker, gitea_headers, gitea_push_body


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One HTTP request on a fresh connection; any status is an answer, not an error."""
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


def get_json(url: str, path: str, headers: dict[str, str] | None = None) -> Any:
    answer = call(url, path, headers=headers)
    assert answer.status == 200, (path, answer.status, answer.body[:300])
    return answer.json()


def push(
    url: str,
    repo: str,
    sha: str,
    *,
    delivery: str | None = None,
    secret: str = SECRET,
    timeout: float = 10.0,
) -> Answer:
    """A signed 3 KB Gitea push of sha to repo's main branch."""
    body = gitea_push_body(sha=sha, full_name=f"jeff/{repo}", pad_to=3072)
    return call(
        url,
        f"/deploy/{repo}",
        method="POST",
        body=body,
        headers=gitea_headers(body, secret=secret, delivery=delivery),
        timeout=timeout,
    )


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition"
) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def serve_env(tmp: Path, registry: Path, fake: FakeDocker | None, **extra: str) -> dict[str, str]:
    env = {
        "DEPLOYHOOK_REGISTRY": str(registry),
        "DEPLOYHOOK_DATA_DIR": str(tmp / "data"),
        "DEPLOYHOOK_SECRET": SECRET,
        "DEPLOYHOOK_RECONCILE_INTERVAL": "0",
        "DEPLOYHOOK_STOP_GRACE": "5",
    }
    if fake is not None:
        env["DEPLOYHOOK_COMPOSE"] = f"{fake.path} compose"
    env.update(extra)
    return env


def jobs_table(db: Path) -> list[dict[str, Any]]:
    """Every job row, read straight from the SQLite file (read-only)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]


def ledger(db: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM deliveries ORDER BY id")]


def settled(db: Path) -> bool:
    return all(j["status"] not in ("queued", "running") for j in jobs_table(db))


# -- mounts (root only) --------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=False)


def need_mounts() -> None:
    """Skip unless this process may mount filesystems (root, and mount(8) is there)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) to make a full or read-only data dir")


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str) -> Iterator[Path]:
    """A fresh tmpfs of `size` mounted on path (created), unmounted afterwards."""
    need_mounts()
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _run("umount", "-l", str(path))


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[Callable[[bool], None]]:
    """Bind source on target read-only; yields set_writable(bool) to flip it in place."""
    need_mounts()
    target.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "--bind", str(source), str(target))
    if done.returncode:
        pytest.skip(f"cannot bind-mount: {done.stderr.strip()}")

    def set_writable(writable: bool) -> None:
        mode = "rw" if writable else "ro"
        flipped = _run("mount", "-o", f"remount,bind,{mode}", str(target))
        assert flipped.returncode == 0, flipped.stderr

    try:
        set_writable(False)
        yield set_writable
    finally:
        _run("umount", "-l", str(target))


@dataclass
class Ext4Disk:
    """An ext4 filesystem in a file, on a loop device, mounted with errors=remount-ro."""

    image: Path
    mountpoint: Path
    device: str = ""

    def mount(self) -> None:
        done = _run("losetup", "-f", "--show", str(self.image))
        if done.returncode:
            pytest.skip(f"no loop device: {done.stderr.strip()}")
        self.device = done.stdout.strip()
        mounted = _run("mount", "-o", "errors=remount-ro", self.device, str(self.mountpoint))
        assert mounted.returncode == 0, mounted.stderr

    def fail(self) -> None:
        """What a failing disk does: the kernel turns the mounted filesystem read-only."""
        trigger = Path("/sys/fs/ext4") / Path(self.device).name / "trigger_fs_error"
        if not trigger.exists():
            pytest.skip(f"{trigger} is missing: cannot make ext4 fail on purpose")
        trigger.write_text("hardening test\n")

    def release(self) -> None:
        if self.device:
            _run("umount", "-l", str(self.mountpoint))
            _run("losetup", "-d", self.device)
            self.device = ""

    def repair(self) -> None:
        """What an admin does next: unmount, fsck, mount again."""
        self.release()
        _run("e2fsck", "-fy", str(self.image))
        self.mount()


@contextlib.contextmanager
def ext4_disk(tmp: Path, mountpoint: Path, *, size_mb: int = 32) -> Iterator[Ext4Disk]:
    need_mounts()
    if not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip("needs losetup and mkfs.ext4")
    image = tmp / "disk.img"
    with open(image, "wb") as fh:
        fh.truncate(size_mb * 1024 * 1024)
    made = _run("mkfs.ext4", "-q", "-F", str(image))
    assert made.returncode == 0, made.stderr
    mountpoint.mkdir(parents=True, exist_ok=True)
    disk = Ext4Disk(image, mountpoint)
    disk.mount()
    try:
        yield disk
    finally:
        disk.release()


def fill(directory: Path) -> None:
    """Write zeros into directory until its filesystem has no block left."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):  # big writes first, then the last few blocks
            chunk = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)


def unfill(directory: Path) -> None:
    (directory / "filler").unlink()


# -- what changed on disk --------------------------------------------------------------------


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and directory under root: (mtime in ns, size), by relative path."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = path.lstat()
                state[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return state


def touched(
    before: dict[str, tuple[int, int]],
    after: dict[str, tuple[int, int]],
    *,
    allowed: tuple[str, ...],
) -> list[str]:
    """Paths created, changed or removed between two tree_state()s, outside `allowed`."""
    paths = set(before) | set(after)
    return sorted(
        p
        for p in paths
        if before.get(p) != after.get(p)
        and not any(p == a or p.startswith(a + "/") for a in allowed)
    )
