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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import structlog

from deployhook.errors import StoreUnavailable
from deployhook.store.backend import Tx
from deployhook.store.schema import MIGRATIONS

log = structlog.get_logger()

_TYPES = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "real": "REAL"}


def _is_storage_fault(exc: sqlite3.Error) -> bool:
    """Disk full, read-only, I/O error, locked, corrupt: not a bug in a query."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"store not writable: {exc}")


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


class SqliteBackend:
    """SQLite in WAL mode; connections are per thread and per process."""

    name = "sqlite"
    skip_locked = False  # one writer at a time: nothing to skip
    liveness_across_hosts = False  # a flock is seen on this host only

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]
        self._wake_address = b"\0deployhook-" + digest.encode()
        self._local = threading.local()
        self._wake_sock: socket.socket | None = None
        self._worker_lock_fd: int | None = None

    # -- connections -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "pid", None) != os.getpid() or local.conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = FULL")
            local.conn = conn
            local.pid = os.getpid()
        return local.conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with suppress(sqlite3.Error):
                conn.close()

    def _lock_fd(self) -> int:
        local = self._local
        if getattr(local, "lock_pid", None) != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            local.lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            local.lock_pid = os.getpid()
        return local.lock_fd

    def _tx(self, conn: sqlite3.Connection) -> Tx:
        def execute(sql: str, params: Any) -> sqlite3.Cursor:
            if isinstance(params, list):
                return conn.executemany(sql, params)
            return conn.execute(sql, params)

        return Tx(execute)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        try:
            conn = self._connection()
            fd = self._lock_fd()
            fcntl.flock(fd, fcntl.LOCK_EX)
        except sqlite3.Error as exc:
            self._drop_connection()
            raise _unavailable(exc) from None
        except OSError as exc:
            raise StoreUnavailable(
                f"store not writable: {exc.strerror}: {self.lock_path}"
            ) from None
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                self._drop_connection()
                raise _unavailable(exc) from None
            try:
                yield self._tx(conn)
            except sqlite3.Error as exc:
                self._rollback(conn)
                if not _is_storage_fault(exc):
                    raise  # a constraint broken by a bug: the caller's to see
                self._drop_connection()
                raise _unavailable(exc) from None
            except BaseException:
                self._rollback(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback(conn)
                self._drop_connection()
                raise _unavailable(exc) from None
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._drop_connection()

    @contextmanager
    def read(self) -> Iterator[Tx]:
        try:
            conn = self._connection()
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            self._drop_connection()
            with self._read_only(exc) as fallback:
                yield self._tx(fallback)
            return
        try:
            yield self._tx(conn)
        except sqlite3.Error as exc:
            self._rollback(conn)
            if not _is_storage_fault(exc):
                raise
            self._drop_connection()
            raise StoreUnavailable(f"store not readable: {exc}") from None
        except BaseException:
            self._rollback(conn)
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._drop_connection()
                raise StoreUnavailable(f"store not readable: {exc}") from None

    @contextmanager
    def _read_only(self, cause: sqlite3.Error) -> Iterator[sqlite3.Connection]:
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
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connection()
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
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

    def writable(self) -> str | None:
        try:
            with self.write() as tx:
                tx.run("UPDATE repo_state SET repo = repo WHERE 0")
        except StoreUnavailable as exc:
            return str(exc)
        probe = self.path.parent / ".deployhook-space-probe"
        try:
            # SQLite reuses free pages, so a full disk may not show in a no-op write.
            with open(probe, "wb") as fh:
                fh.write(b"\0" * 65536)
                fh.flush()
                os.fsync(fh.fileno())
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
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        self._drop_connection()
        if self._wake_sock is not None:
            self._wake_sock.close()
            self._wake_sock = None
