"""The store's files are private (trust issue, finding 8): the data dir 0700, the SQLite
database, its -wal and -shm and the lock files 0600, also when they existed wider."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from deployhook.config import Settings
from deployhook.models import Trigger
from deployhook.store import open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def store_files(data: Path) -> list[Path]:
    return sorted(p for p in data.iterdir() if p.name.startswith("deployhook.sqlite3"))


def use(settings: Settings) -> None:
    store = open_store(settings)
    try:
        store.enqueue(repo="site", sha="a" * 40, ref=None, trigger=Trigger.PUSH, node="")
        store.register_worker(worker="w", node="", slots=1)
        with store.read() as tx:
            tx.value("SELECT COUNT(*) FROM jobs")
        assert {p.name for p in store_files(settings.data_dir)} >= {
            "deployhook.sqlite3",
            "deployhook.sqlite3-wal",
            "deployhook.sqlite3-shm",
            "deployhook.sqlite3.lock",
        }
        for path in [*store_files(settings.data_dir), *(settings.data_dir / "workers").iterdir()]:
            assert mode(path) == 0o600, (path.name, oct(mode(path)))
        for directory in (settings.data_dir, settings.data_dir / "workers"):
            assert mode(directory) == 0o700, (directory.name, oct(mode(directory)))
    finally:
        store.close()


def test_finding_8_a_new_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a permissive umask must not widen them
    try:
        use(Settings.load({}, data_dir=tmp_path / "data"))
    finally:
        os.umask(old)


def test_finding_8_an_existing_store_with_wider_modes_is_tightened_at_open(
    tmp_path: Path,
) -> None:
    settings = Settings.load({}, data_dir=tmp_path / "data")
    use(settings)
    settings.data_dir.chmod(0o755)
    (settings.data_dir / "workers").chmod(0o755)
    for path in store_files(settings.data_dir):
        path.chmod(0o644)
    use(settings)
