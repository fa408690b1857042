"""Files edited in place by deployhook (repos.yml): locked while edited, replaced atomically.

A writer takes an exclusive lock on the file itself, reads it, and replaces it with a
temp file in the same directory (fsync, rename, fsync of the directory), keeping the
original mode and owner. A crash at any point leaves the old file or the new one, never
half of one, and no temp file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deployhook.errors import RegistryError, WriteFailed


@contextlib.contextmanager
def locked(file: Path) -> Iterator[tuple[Path, str]]:
    """Hold an exclusive lock on file (a symlink: its target); yield the real path and text.

    The lock is on the file itself; a writer replaces the file, so after waiting the
    lock is taken again if the path now names another inode.
    """
    real = Path(os.path.realpath(file))
    while True:
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RegistryError(
                f"{file}: no such file (create it, or set DEPLOYHOOK_REGISTRY)"
            ) from None
        except OSError as exc:
            raise RegistryError(f"{file}: cannot open: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(real).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                with os.fdopen(os.dup(fd), "rb") as fh:
                    raw = fh.read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise RegistryError(f"{file}: not UTF-8 text") from None
                yield real, text
                return
        finally:
            os.close(fd)


def write(path: Path, text: str) -> None:
    """Replace path with text: temp file beside it, fsync, rename; mode and owner kept."""
    st = os.stat(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fchmod(fh.fileno(), st.st_mode & 0o7777)
            with contextlib.suppress(PermissionError):  # not root: the owner is us anyway
                os.fchown(fh.fileno(), st.st_uid, st.st_gid)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteFailed(f"{path}: not changed, cannot write: {exc.strerror or exc}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse fsync on a directory
        if exc.errno not in {errno.EINVAL, errno.EBADF}:
            raise
    finally:
        os.close(fd)
