"""Group commit: concurrent deliveries of one process share transactions.

A request thread that finds nobody committing becomes the leader: it takes every
delivery queued so far (its own first), admits them in one transaction, hands each its
answer, and passes the lead to a waiting thread if more arrived meanwhile. Under load
that is one lock round and one fsync per batch instead of per request; alone, a request
commits in its own thread with no hand-over at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from deployhook.errors import StoreUnavailable
from deployhook.log import get_logger
from deployhook.models import Decision, Outcome
from deployhook.store import ledger
from deployhook.store.backend import Backend
from deployhook.store.ledger import CheckedDelivery, Ledger

log = get_logger()

BATCH_MAX = 256
# Gitea gives up after 5 s: past this, answer 503 rather than hang.
SUBMIT_TIMEOUT = 4.5


class _Slot:
    """One delivery waiting for its answer, or for its turn to lead."""

    __slots__ = ("item", "lead", "result", "wakeup")

    def __init__(self, item: CheckedDelivery, lock: threading.Lock) -> None:
        self.item = item
        self.lead = False
        self.result: Decision | BaseException | None = None
        # Its own condition on the shared lock: a commit wakes the threads it answered
        # and the next leader, not every waiting thread (no thundering herd).
        self.wakeup = threading.Condition(lock)


class GroupCommit:
    """Admits deliveries in shared transactions; see the module docstring."""

    def __init__(
        self,
        backend: Backend,
        *,
        on_job: Callable[[], None],
        on_outcome: Callable[[str | None], None] = lambda _error: None,
        ledger: Ledger | None = None,
    ) -> None:
        self._backend = backend
        self._ledger = ledger or Ledger()
        self._on_job = on_job
        # Told whether each batch committed (None) or why the store refused it.
        self._on_outcome = on_outcome
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._leading = False

    def submit(self, item: CheckedDelivery) -> Decision:
        """Admit a delivery durably; return its answer once it is committed."""
        slot = _Slot(item, self._lock)
        deadline = time.monotonic() + SUBMIT_TIMEOUT
        with self._lock:
            self._pending.append(slot)
            if not self._leading:
                self._leading = slot.lead = True
            while slot.result is None:
                if slot.lead:
                    slot.lead = False
                    self._lead()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 and slot in self._pending:
                    self._pending.remove(slot)
                    raise StoreUnavailable("store busy: the delivery could not be stored in time")
                # Past the deadline but already in a batch being committed: its answer
                # is moments away, and dropping it now would misreport a stored delivery.
                slot.wakeup.wait(remaining if remaining > 0 else 0.05)
        if isinstance(slot.result, BaseException):
            raise slot.result
        return slot.result

    def _lead(self) -> None:
        """Commit the oldest pending deliveries (the lock is held on entry and exit)."""
        batch = self._pending[:BATCH_MAX]
        del self._pending[:BATCH_MAX]
        results: list[Decision | BaseException] = [StoreUnavailable("store write interrupted")]
        results *= len(batch)
        self._lock.release()
        try:
            results = self._commit(batch)
        finally:
            self._lock.acquire()
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
                slot.wakeup.notify()
            if self._pending:
                successor = self._pending[0]  # pass the lead on; we answer our own request
                successor.lead = True
                successor.wakeup.notify()
            else:
                self._leading = False

    def _admit_all(self, batch: list[_Slot], *, isolate: bool) -> list[Decision | BaseException]:
        results: list[Decision | BaseException] = []
        with self._backend.write() as tx:
            for slot in batch:
                if not isolate:
                    results.append(ledger.admit(tx, slot.item, self._ledger))
                    continue
                try:
                    with tx.savepoint():
                        results.append(ledger.admit(tx, slot.item, self._ledger))
                except Exception as exc:  # one bad item must not sink the batch
                    log.exception("delivery_admit_failed", repo=slot.item.repo)
                    results.append(exc)
        return results

    def _commit(self, batch: list[_Slot]) -> list[Decision | BaseException]:
        try:
            try:
                results = self._admit_all(batch, isolate=False)
            except StoreUnavailable:
                raise
            except Exception:
                # A bug in one item: redo the batch with a savepoint around each item,
                # so only that delivery fails. Savepoints cost two statements an item,
                # so the fast path goes without.
                results = self._admit_all(batch, isolate=True)
        except Exception as exc:
            if isinstance(exc, StoreUnavailable):
                self._on_outcome(str(exc))
            else:
                log.exception("delivery_batch_failed", size=len(batch))
            return [exc] * len(batch)
        self._on_outcome(None)
        # Only a new job needs an idle worker woken: one that joined the queued job is
        # already known to the worker, which claims it when its repo is free.
        if any(isinstance(r, Decision) and r.outcome == Outcome.QUEUED for r in results):
            self._on_job()
        return results
