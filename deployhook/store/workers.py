"""Worker bookkeeping: who runs where, since when, and when each last beat."""

from __future__ import annotations

import os

from deployhook.models import WorkerInfo
from deployhook.store.backend import Tx


def register(tx: Tx, *, worker: str, node: str, host: str, slots: int, now: float) -> None:
    tx.run(
        "INSERT INTO workers (id, node, host, pid, slots, started_at, heartbeat_at)"
        " VALUES (:id, :node, :host, :pid, :slots, :now, :now)"
        " ON CONFLICT (id) DO UPDATE SET heartbeat_at = :now, stopped_at = NULL",
        id=worker,
        node=node,
        host=host,
        pid=os.getpid(),
        slots=slots,
        now=now,
    )


def heartbeat(
    tx: Tx, worker: str, *, now: float, fds: int | None = None, fd_limit: int | None = None
) -> None:
    tx.run(
        "UPDATE workers SET heartbeat_at = :now, fds = :fds, fd_limit = :fd_limit WHERE id = :id",
        now=now,
        fds=fds,
        fd_limit=fd_limit,
        id=worker,
    )


def heartbeat_of(tx: Tx, worker: str) -> float | None:
    """When the worker last beat, by its own clock (None: never registered)."""
    value = tx.value("SELECT heartbeat_at FROM workers WHERE id = :id", id=worker)
    return None if value is None else float(value)


def stop(tx: Tx, worker: str, *, now: float) -> None:
    tx.run("UPDATE workers SET stopped_at = :now WHERE id = :id", now=now, id=worker)


def beating_since(tx: Tx, since: float) -> list[WorkerInfo]:
    """Workers that have not stopped and beat since `since`, by node then age."""
    rows = tx.all(
        "SELECT id, node, host, pid, slots, started_at, heartbeat_at, fds, fd_limit FROM workers"
        " WHERE stopped_at IS NULL AND heartbeat_at >= :since ORDER BY node, started_at",
        since=since,
    )
    return [
        WorkerInfo(
            id=r["id"],
            node=r["node"] or "",
            host=r["host"],
            pid=int(r["pid"]),
            slots=int(r["slots"]),
            started_at=float(r["started_at"]),
            heartbeat_at=float(r["heartbeat_at"]),
            fds=None if r["fds"] is None else int(r["fds"]),
            fd_limit=None if r["fd_limit"] is None else int(r["fd_limit"]),
        )
        for r in rows
    ]
