"""The live registry: re-read when repos.yml changes, the last good one kept on error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deployhook.errors import RegistryError, UnknownRepo
from deployhook.log import get_logger
from deployhook.registry.model import Repo
from deployhook.registry.schema import decode, read
from deployhook.registry.secrets import secret_values

log = get_logger()

# A changed file is read once two looks this far apart agree (see _settled_stamp).
SETTLE_S = 0.015
SETTLE_TRIES = 8
SETTLED_AGE_S = 1.0
FIRST_LOAD_TRIES = 10


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int


class Registry:
    """The live registry: re-read when the file changes, last good kept on error."""

    def __init__(self, file: Path, *, check_interval: float = 0.0) -> None:
        self.file = file
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._repos: dict[str, Repo] = {}
        self._stamp: _Stamp | None = None
        self._checked_at = 0.0
        self.error: str | None = None
        self.loaded = False

    def _current_stamp(self) -> _Stamp | None:
        try:
            st = self.file.stat()
        except OSError:
            return None
        return _Stamp(st.st_mtime_ns, st.st_size, st.st_ino)

    def _settled_stamp(self) -> tuple[_Stamp | None, bool]:
        """The file's stamp once it has stayed the same for SETTLE_S, and whether it did.

        An editor that saves in place truncates, then writes: read in between, the file
        is empty, which is a valid registry with no repos. So a change is read only once
        two looks SETTLE_S apart agree, and an empty file only once it is a second old.
        (File times are too coarse to judge "still" by age alone, except for a file last
        changed long ago.) A file that never settles, rewritten without pause, is left
        for a later look.
        """
        stamp = self._current_stamp()
        for _ in range(SETTLE_TRIES):
            if stamp is None:
                return None, True
            if time.time() - stamp.mtime_ns / 1e9 > SETTLED_AGE_S:
                return stamp, True
            time.sleep(SETTLE_S)
            again = self._current_stamp()
            # Just truncated is a save in progress (on a busy machine the writer's pause
            # can outlast SETTLE_S), not a registry emptied on purpose.
            if again == stamp and stamp.size > 0:
                return stamp, True
            stamp = again
        return stamp, False

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the file if it changed since the last look."""
        now = time.monotonic()
        if not force and self.loaded and now - self._checked_at < self._check_interval:
            return
        stamp = self._current_stamp()
        if not force and self.loaded and stamp == self._stamp:
            self._checked_at = now
            return
        # One thread re-reads (and may wait for the file to settle); the others go on
        # with the registry they have rather than queue up behind it.
        if not self._lock.acquire(blocking=force or not self.loaded):
            return
        try:
            self._reload(force=force, now=now)
        finally:
            self._lock.release()

    def _reload(self, *, force: bool, now: float) -> None:
        try:
            for _ in range(FIRST_LOAD_TRIES):
                stamp, settled = self._settled_stamp()
                if self.loaded and not force and (stamp == self._stamp or not settled):
                    return
                data = read(self.file)
                # The bytes read are the settled file's, whole: not a file truncated and
                # being rewritten meanwhile (an editor saving in place). A coarse mtime
                # can miss a rewrite; the size read cannot.
                whole = stamp is not None and len(data) == stamp.size
                if settled and whole and self._current_stamp() == stamp:
                    break
                if self.loaded:
                    return  # a later look reads it whole
                # Nothing loaded yet, so no last good to fall back on: wait a little for
                # the save in progress (a process starting while an admin saves).
            repos = decode(data, file=self.file)
        except RegistryError as exc:
            if self.error != str(exc):
                log.error(
                    "registry_invalid", file=str(self.file), error=str(exc), kept=len(self._repos)
                )
            self.error = str(exc)
        else:
            if self.loaded and self.error is None:
                log.info("registry_reloaded", file=str(self.file), repos=len(repos))
            self._repos = repos
            self.error = None
            # Every secret the repos name is known before anything can print it.
            secret_values(repos.values(), default=None)
        self._stamp = stamp
        self._checked_at = now
        self.loaded = True

    def get(self, name: str) -> Repo:
        """Return one repo by name, or raise UnknownRepo."""
        self.refresh()
        repo = self._repos.get(name)
        if repo is None:
            raise UnknownRepo(f"no repo named {name!r} in the registry")
        return repo

    def find(self, name: str) -> Repo | None:
        self.refresh()
        return self._repos.get(name)

    def __iter__(self) -> Iterator[Repo]:
        self.refresh()
        return iter(list(self._repos.values()))

    def names(self) -> list[str]:
        self.refresh()
        return sorted(self._repos)
