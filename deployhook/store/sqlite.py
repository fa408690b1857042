"""The embedded backend: one SQLite file in WAL mode, shared by every local process.

Writers take an exclusive flock on a lock file before `BEGIN IMMEDIATE`. The kernel
queues them and wakes the next one the moment the lock is released, instead of SQLite's
busy handler, which sleeps in growing steps (up to 100 ms) and wrecks tail latency
under contention.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from deployhook.errors import StoreUnavailable
from deployhook.log import get_logger
from deployhook.store.backend import Tx
from deployhook.store.schema import MIGRATIONS

log = get_logger()

_TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}
_INCREMENTAL = 2  # PRAGMA auto_vacuum


def _is_storage_fault(exc: sqlite3.Error) -> bool:
    """Disk full, read-only, I/O error, locked, corrupt: not a bug in a query."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"store not writable: {exc}")


def _unreadable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"store not readable: {exc}")


class _SocketWaiter:
    """Blocks on a datagram socket in Linux's abstract namespace until a wake arrives."""

    def __init__(self, address: bytes) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(address)
        except OSError:
            # Another worker already listens here: fall back to polling (the caller's
            # timeout), which stays correct, only slower to pick up.
            self._sock.close()
            self._sock = None  # type: ignore[assignment]

    def wait(self, timeout: float) -> bool:
        if self._sock is None:
            threading.Event().wait(timeout)
            return False
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(64)
        except TimeoutError:
            return False
        self._sock.setblocking(False)
        try:  # one wake is enough: drain the rest
            while self._sock.recv(64):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()


# Connections kept open between transactions, per process: enough for the writer and a
# few concurrent readers; more are opened when needed and closed when given back.
IDLE_MAX = 8
# The WAL is checkpointed into the database every this many pages (4 KiB each), and the
# file is cut back to JOURNAL_LIMIT when it restarts: a bounded WAL, whatever the load.
WAL_AUTOCHECKPOINT = 500
JOURNAL_LIMIT = 2 * 1024 * 1024
FILE_MODE = 0o600
DIR_MODE = 0o700


def _tighten(path: Path, mode: int) -> None:
    """Take group and other permissions away from an existing file or directory."""
    try:
        current = path.stat().st_mode & 0o777
        if current & ~mode:
            path.chmod(current & mode)
    except FileNotFoundError:
        pass
    except OSError as exc:  # not ours to change (a read-only mount): say so, go on
        log.warning("store_permissions_not_tightened", path=str(path), error=exc.strerror)


class SqliteBackend:
    """SQLite in WAL mode, shared by the processes of one host.

    Nothing is kept per thread: a thread takes a connection for one transaction and gives
    it back, and the write lock is one descriptor per process. A deploy starts threads
    by the thousand over months; per-thread resources would grow with every one.
    """

    name = "sqlite"
    skip_locked = False  # one writer at a time: nothing to skip
    liveness_across_hosts = False  # a flock is seen on this host only

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
        self._wake_address = b"\0deployhook-" + digest.encode()
        self._wake_sock: socket.socket | None = None
        self._worker_lock_fd: int | None = None
        self._pid = os.getpid()
        self._idle: list[sqlite3.Connection] = []
        self._idle_lock = threading.Lock()
        # Threads of this process write one at a time (the flock then orders processes).
        self._write_lock = threading.Lock()
        self._lock_fd_value: int | None = None
        self._files_checked = False
        # What a fork inherited: never used or closed in the child (closing a parent's
        # WAL connection here could checkpoint and delete files it still uses).
        self._inherited: list[object] = []

    # -- connections -------------------------------------------------------------

    def _after_fork(self) -> None:
        if self._pid == os.getpid():
            return
        with self._idle_lock:
            self._inherited.append((self._idle, self._lock_fd_value))
            self._idle = []
            self._lock_fd_value = None
            self._write_lock = threading.Lock()
            self._pid = os.getpid()

    def _prepare_files(self) -> None:
        """Create the data dir (0700) and the database file (0600), or tighten them."""
        if self._files_checked:
            return
        directory = self.path.parent
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _tighten(directory, DIR_MODE)
        if not self.path.exists():
            # SQLite gives its -wal and -shm files the database file's permissions.
            with suppress(FileExistsError):
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))
        for suffix in ("", "-wal", "-shm", ".lock"):
            _tighten(self.path.with_name(self.path.name + suffix), FILE_MODE)
        self._files_checked = True

    def _open(self) -> sqlite3.Connection:
        self._prepare_files()
        conn = sqlite3.connect(
            self.path, timeout=10.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_LIMIT}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _take(self) -> sqlite3.Connection:
        """A connection for one transaction: an idle one, or a new one.

        Raises sqlite3.Error or OSError when the file cannot be opened.
        """
        self._after_fork()
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _give(self, conn: sqlite3.Connection) -> None:
        """Keep a connection for the next transaction, or close it past IDLE_MAX."""
        if conn.in_transaction:
            self._discard(conn)
            return
        with self._idle_lock:
            if self._pid == os.getpid() and len(self._idle) < IDLE_MAX:
                self._idle.append(conn)
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: sqlite3.Connection) -> None:
        with suppress(sqlite3.Error):
            conn.close()

    def _lock_fd(self) -> int:
        if self._lock_fd_value is None:
            self._prepare_files()
            self._lock_fd_value = os.open(
                self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE
            )
        return self._lock_fd_value

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's write lock: this process's threads in turn, then the flock."""
        self._after_fork()
        with self._write_lock:
            try:
                fd = self._lock_fd()
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise StoreUnavailable(
                    f"store not writable: {exc.strerror}: {self.lock_path}"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _tx(self, conn: sqlite3.Connection) -> Tx:
        def execute(sql: str, params: Any) -> sqlite3.Cursor:
            if isinstance(params, list):
                return conn.executemany(sql, params)
            return conn.execute(sql, params)

        return Tx(execute)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        with self._locked():
            try:
                conn = self._take()
            except OSError as exc:
                raise StoreUnavailable(f"store not writable: {exc.strerror}: {self.path}") from None
            except sqlite3.Error as exc:
                raise _unavailable(exc) from None
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._discard(conn)
                raise _unavailable(exc) from None
            with self._transaction(conn, _unavailable) as tx:
                yield tx

    @contextmanager
    def _transaction(
        self, conn: sqlite3.Connection, fault: Callable[[sqlite3.Error], StoreUnavailable]
    ) -> Iterator[Tx]:
        """The transaction the caller began on conn: committed at the end, rolled back on
        any error. A storage fault (fault(exc) is raised) discards the connection, which
        may be in any state; otherwise it goes back to the pool."""
        healthy = False  # whether the connection may serve another transaction
        try:
            try:
                yield self._tx(conn)
            except sqlite3.Error as exc:
                self._rollback(conn)
                if not _is_storage_fault(exc):
                    healthy = True
                    raise  # a constraint broken by a bug: the caller's to see
                raise fault(exc) from None
            except BaseException:
                self._rollback(conn)
                healthy = True
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                raise fault(exc) from None
            healthy = True
        finally:
            if healthy:
                self._give(conn)
            else:
                self._discard(conn)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        with suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        conn: sqlite3.Connection | None = None
        cause: Exception | None = None
        try:
            conn = self._take()
            conn.execute("BEGIN")
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                self._discard(conn)
            conn, cause = None, exc
        if conn is None:
            with self._read_only(cause) as fallback:
                yield self._tx(fallback)
            return
        with self._transaction(conn, _unreadable) as tx:
            yield tx

    @contextmanager
    def _read_only(self, cause: Exception | None) -> Iterator[sqlite3.Connection]:
        """A connection that reads the file as it is, for a store that cannot be opened
        for writing (read-only disk: WAL needs to create its -shm file even to read).

        `immutable` skips locking and the WAL index; a file that was shut down cleanly
        holds everything. Status pages keep working while deliveries answer 503.
        """
        if not self.path.exists():
            raise StoreUnavailable(f"store not readable: {cause}")
        try:
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro&immutable=1",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error:
            raise StoreUnavailable(f"store not readable: {cause}") from None
        conn.row_factory = sqlite3.Row
        try:
            yield conn
        except sqlite3.Error as exc:
            if not _is_storage_fault(exc):
                raise
            raise StoreUnavailable(f"store not readable: {exc}") from None
        finally:
            conn.close()

    # -- schema ------------------------------------------------------------------

    def migrate(self) -> int:
        try:
            with self._locked():
                conn = self._take()
                try:
                    self._file_format(conn)
                finally:
                    self._give(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"store not writable: cannot open {self.path}: {exc}") from None
        with self.write() as tx:
            version = int(tx.value("PRAGMA user_version") or 0)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in script.format(**_TYPES).split(";"):
                    if statement.strip():
                        tx.run(statement)
                tx.run(f"PRAGMA user_version = {number}")
                log.info("store_migrated", backend=self.name, version=number)
            return len(MIGRATIONS)

    def _file_format(self, conn: sqlite3.Connection) -> None:
        """WAL mode, and incremental auto-vacuum so that pruning can give space back.

        auto_vacuum can only be chosen before the first table exists; an older store
        gets it by one VACUUM, once, on the first start after the upgrade.
        """
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
            empty = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0] == 0
            conn.execute(f"PRAGMA auto_vacuum = {_INCREMENTAL}")
            if not empty:
                try:
                    conn.execute("VACUUM")
                    log.info("store_vacuumed", reason="auto_vacuum switched to incremental")
                except sqlite3.Error as exc:  # no room for the copy: works on, never shrinks
                    log.warning("store_vacuum_failed", error=str(exc))
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")

    def compact(self) -> None:
        """Give the pages that pruning freed back to the filesystem; cut the WAL back."""
        with self._locked():
            try:
                conn = self._take()
            except (OSError, sqlite3.Error):
                return
            try:
                # One statement frees one page per step: executescript runs it to the end.
                conn.executescript("PRAGMA incremental_vacuum;")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as exc:
                self._discard(conn)
                log.warning("store_compact_failed", error=str(exc))
            else:
                self._give(conn)

    def writable(self) -> str | None:
        try:
            with self.write() as tx:
                tx.run("UPDATE repo_state SET repo = repo WHERE 0")
        except StoreUnavailable as exc:
            return str(exc)
        probe = self.path.parent / ".deployhook-space-probe"
        try:
            # SQLite reuses free pages, so a full disk may not show in a no-op write.
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
            try:
                os.write(fd, b"\0" * 65536)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return f"store not writable: {exc.strerror}: {self.path.parent}"
        finally:
            with suppress(OSError):
                probe.unlink()
        return None

    # -- wake-ups and liveness -----------------------------------------------------

    def wake(self) -> None:
        if self._wake_sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self._wake_sock = sock
        try:
            self._wake_sock.sendto(b"j", self._wake_address)
        except OSError as exc:
            if exc.errno not in {errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN}:
                log.debug("wake_failed", error=str(exc))

    def waiter(self) -> _SocketWaiter:
        return _SocketWaiter(self._wake_address)

    def _worker_lock_path(self, worker_id: str) -> Path:
        safe = hashlib.sha256(worker_id.encode()).hexdigest()[:32]
        return self.path.parent / "workers" / f"{safe}.lock"

    def hold_worker_lock(self, worker_id: str) -> None:
        path = self._worker_lock_path(worker_id)
        path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        _tighten(path.parent, DIR_MODE)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        _tighten(path, FILE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._worker_lock_fd = fd

    def worker_alive(self, worker_id: str) -> bool | None:
        path = self._worker_lock_path(worker_id)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return None
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            with suppress(OSError):
                path.unlink()
            return False
        finally:
            os.close(fd)

    def close(self) -> None:
        self._after_fork()
        with self._idle_lock:
            idle, self._idle = self._idle, []
            fd, self._lock_fd_value = self._lock_fd_value, None
        for conn in idle:
            self._discard(conn)
        for held in (fd, self._worker_lock_fd):
            if held is not None:
                with suppress(OSError):
                    os.close(held)
        self._worker_lock_fd = None
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None
