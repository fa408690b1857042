"""What a store backend provides: transactions, prompt wake-ups, worker liveness.

The queries (in the sibling modules) are written once, with `:name` parameters, and run
on any backend through a Tx.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

_PARAM_RE = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")

Row = dict[str, Any]


def to_pyformat(sql: str) -> str:
    """Rewrite `:name` parameters as `%(name)s` (psycopg), leaving `::type` casts alone."""
    return _PARAM_RE.sub(r"%(\1)s", sql.replace("%", "%%"))


class Tx:
    """One open transaction: run statements, read rows as dicts."""

    def __init__(self, execute: Callable[[str, Any], Any]) -> None:
        self._execute = execute

    def one(self, sql: str, **params: Any) -> Row | None:
        cur = self._execute(sql, params)
        row = cur.fetchone()
        return None if row is None else dict(row)

    def all(self, sql: str, **params: Any) -> list[Row]:
        return [dict(r) for r in self._execute(sql, params).fetchall()]

    def value(self, sql: str, **params: Any) -> Any:
        row = self.one(sql, **params)
        return None if row is None else next(iter(row.values()))

    def run(self, sql: str, **params: Any) -> int:
        return int(self._execute(sql, params).rowcount)

    def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        """Run one statement for each parameter dict."""
        if rows:
            self._execute(sql, rows)

    @contextmanager
    def savepoint(self, name: str = "item") -> Iterator[None]:
        """Undo only this block's writes if it raises; the transaction goes on.

        The SQL-standard spelling, which SQLite and PostgreSQL both accept.
        """
        self._execute(f"SAVEPOINT {name}", {})
        try:
            yield
        except BaseException:
            self._execute(f"ROLLBACK TO SAVEPOINT {name}", {})
            self._execute(f"RELEASE SAVEPOINT {name}", {})
            raise
        self._execute(f"RELEASE SAVEPOINT {name}", {})


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block until woken or timeout; True if woken."""

    def close(self) -> None: ...


class Backend(Protocol):
    """A database that holds the ledger and the queue."""

    name: str
    # Capabilities: whether a claim may skip rows locked by another transaction
    # (`FOR UPDATE SKIP LOCKED`), and whether worker_alive can tell for workers on other
    # hosts (a database lock) or only for this host's (a file lock).
    skip_locked: bool
    liveness_across_hosts: bool

    def migrate(self) -> int:
        """Bring the schema up to date; return the version."""

    def write(self) -> AbstractContextManager[Tx]:
        """A transaction that holds the store's write lock: writers never interleave."""

    def read(self) -> AbstractContextManager[Tx]:
        """A read-only snapshot."""

    def wake(self) -> None:
        """Tell idle workers a job may be claimable (best effort, never blocks)."""

    def waiter(self) -> Waiter:
        """A handle a worker blocks on between claims."""

    def hold_worker_lock(self, worker_id: str) -> None:
        """Mark this process as the live worker `worker_id` until it exits."""

    def worker_alive(self, worker_id: str) -> bool | None:
        """True/False if the backend can tell whether a worker lives; None if it can't."""

    def writable(self) -> str | None:
        """None if deliveries can be stored, else why not."""

    def compact(self) -> None:
        """Give space freed by pruning back to the filesystem (where the backend must)."""

    def close(self) -> None: ...


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
