"""Reserve and release subset slots in the WorkloadSpread status, with compare-and-swap and group commit.

The status on the API server is the only truth; this module never trusts its own memory beyond one
``resourceVersion``. Concurrent admissions for one WorkloadSpread in this process queue behind the write in
flight; when it lands, the next leader takes every queued request and commits them all in one status write
(group commit). A 409 Conflict (another process wrote first) reads the object that won (from the watch,
else past every cache) and re-decides the whole batch, until the deadline the caller gives: a pod is never
refused because of contention that the API server itself can absorb.

Contention between processes is made fair. A process that has just written goes straight on with its next
batch from the object its write returned, while the one that lost must first read the object again, so its
write comes later than the winner's next one and conflicts again: the loser starves for as long as the
winner has admissions queued. Measured in the two-process 3,000-pod test, one process wrote 16 batches in a
row without a conflict while the other's batch met 10 conflicts in 5 s and was given up (its pods failed
open). Two things take the loser's handicap away:

* it reads the object that won from the watch, which has usually delivered it by the time the 409 arrives,
  and only falls back to a fresh GET (hundreds of milliseconds under a burst) if the watch is late;
* for some seconds after any conflict (``CONTENTION_SECONDS``) a process leaves a pause of half to one
  write's time between its writes, in which the other process's retry can land. The admissions queued
  meanwhile join the next batch, so the pause costs little throughput (3,000 pods at C=64, one process:
  63.4 pods/s with it, 60.3 without).

Where even that is not enough (a bad run still had one batch meet 14 conflicts), ``LedgerTimeout`` lets the
admission place the pod where no max can be passed (``spread.admit_unlimited``).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spreadhook import spread
from spreadhook.model import WorkloadSpread
from spreadhook.store import Conflict, NotFound, Store, StoreError, version_order

Clock = Callable[[], dt.datetime]

log = logging.getLogger(__name__)

CONTENTION_SECONDS = 2.0
"""How long after a conflict this process paces its writes for another writer's sake. A writer that keeps
losing is invisible to the one that keeps winning; the winner's last conflict is all it knows of the other
until that one lands a write, which with the pause takes a few writes' time, and makes the winner conflict
(and pace) again. A few writes' time, because pacing a lone writer costs it throughput."""
WATCH_WAIT_SECONDS = 0.2
"""After a conflict, how long to wait for the watch to bring the write that won before reading it afresh."""
MAX_PAUSE_SECONDS = 0.5
"""The longest pause between two writes, however slow writes get."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LedgerTimeout(StoreError):
    """The ledger could not commit before the caller's deadline."""


@dataclass(slots=True, eq=False)
class _Request:
    """One admission waiting for a commit. ``promoted`` means: the previous leader handed the lead to us."""

    pod: Mapping[str, Any]
    deleting: bool
    workload_replicas: int
    done: threading.Event = field(default_factory=threading.Event)
    promoted: bool = False
    finished: bool = False
    admission: spread.Admission | None = None
    released: spread.Release | None = None
    error: BaseException | None = None


@dataclass(slots=True)
class _Group:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Request] = field(default_factory=list)
    busy: bool = False
    contended_until: float = 0.0
    """Until when another writer is known to compete for this WorkloadSpread (monotonic clock)."""
    write_seconds: float = 0.0
    """How long this process's last write of it took: how late another writer may learn it lost to us."""
    landed_at: float = 0.0
    """When this process's last write of it landed."""


@dataclass(frozen=True, slots=True)
class CommitStats:
    batch_size: int
    conflicts: int
    wrote: bool
    write_seconds: float = 0.0
    """Time spent in status writes (the successful one and every conflicting one): what admissions wait on."""


class Ledger:
    """The webhook's side of the WorkloadSpread status."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utcnow,
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
        on_commit: Callable[[CommitStats], None] = lambda stats: None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_uid = new_uid
        self._on_commit = on_commit
        self._groups: dict[str, _Group] = {}
        self._groups_lock = threading.Lock()
        self._written: dict[str, WorkloadSpread] = {}

    def admit(
        self, ws: WorkloadSpread, pod: Mapping[str, Any], *, workload_replicas: int, deadline: float
    ) -> spread.Admission:
        """Choose the pod's subset and make sure the status records it before returning."""
        if not spread.needs_ledger(ws):
            return spread.admit(ws, ws.status.clone(), pod, workload_replicas=workload_replicas,
                                now=self._clock(), new_uid=self._new_uid)
        request = self._submit(ws, _Request(pod, False, workload_replicas), deadline)
        assert request.admission is not None
        return request.admission

    def release(self, ws: WorkloadSpread, pod: Mapping[str, Any], *, deadline: float) -> spread.Release:
        """Record a pod DELETE or eviction and give its slot back."""
        if not spread.needs_ledger(ws):
            return spread.Release(None, False)
        request = self._submit(ws, _Request(pod, True, 0), deadline)
        assert request.released is not None
        return request.released

    # -- group commit ------------------------------------------------------------------------------

    def _group(self, key: str) -> _Group:
        with self._groups_lock:
            return self._groups.setdefault(key, _Group())

    def _submit(self, ws: WorkloadSpread, request: _Request, deadline: float) -> _Request:
        group = self._group(ws.key)
        with group.lock:
            group.queue.append(request)
            lead = not group.busy
            group.busy = True
        while not lead:
            if not request.done.wait(max(0.0, deadline - time.monotonic())):
                with group.lock:
                    if request in group.queue and not request.promoted:
                        group.queue.remove(request)
                        raise LedgerTimeout(f"no ledger commit for WorkloadSpread {ws.key} before the deadline")
                # A leader already holds this request (or just handed us the lead): see it through.
                request.done.wait()
            if request.finished:
                return self._result(request)
            request.done.clear()
            lead = request.promoted
        self._lead(ws, group, deadline)
        return self._result(request)

    @staticmethod
    def _result(request: _Request) -> _Request:
        if request.error is not None:
            raise request.error
        return request

    def _lead(self, ws: WorkloadSpread, group: _Group, deadline: float) -> None:
        """Commit everything queued so far, then pass the lead to the first request still waiting."""
        with group.lock:
            batch, group.queue = group.queue, []
        try:
            self._commit(ws, group, batch, deadline)
        except BaseException as exc:  # every waiter must learn the outcome, whatever it was
            for request in batch:
                request.error = exc
        finally:
            for request in batch:
                request.finished = True
                request.done.set()
            with group.lock:
                if group.queue:
                    group.queue[0].promoted = True
                    group.queue[0].done.set()
                else:
                    group.busy = False

    def _commit(self, ws: WorkloadSpread, group: _Group, batch: list[_Request], deadline: float) -> None:
        """Decide the whole batch on the newest status and write it once; on a conflict, re-read and decide
        again. ``batch`` may grow while retrying, and every request in it is answered by ``_lead``."""
        current = self._newest(ws)
        conflicts = 0
        writing = 0.0
        if self._pace(group, deadline):
            self._join_queued(group, batch)  # what arrived during the pause rides along
        while True:
            status = current.status.clone()
            now = self._clock()
            changed = False
            for request in batch:
                if request.deleting:
                    request.released = spread.release(current, status, request.pod, now=now)
                    changed |= request.released.changed
                else:
                    request.admission = spread.admit(current, status, request.pod,
                                                     workload_replicas=request.workload_replicas, now=now,
                                                     new_uid=self._new_uid)
                    changed |= request.admission.changed
            if not changed:
                self._on_commit(CommitStats(len(batch), conflicts, False, writing))
                return
            started = time.monotonic()
            try:
                written = self._store.write_status(current, status)
            except Conflict:
                writing += time.monotonic() - started
                conflicts += 1
                if time.monotonic() >= deadline:
                    log.warning("ledger commit gave up at the deadline", extra={
                        "workloadSpread": ws.key, "batch": len(batch), "conflicts": conflicts,
                        "writeSeconds": round(writing, 3)})
                    raise LedgerTimeout(f"WorkloadSpread {ws.key}: {conflicts} write conflicts before the "
                                        "deadline") from None
                # Another process wrote first. Retrying at once would collide again with its next batch;
                # a short random pause lets one of the two finish, and what queued meanwhile joins the retry.
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**conflicts)))
                self._join_queued(group, batch)
                fresh = self._store.workload_spread_after(ws.namespace, ws.name, current.resource_version,
                                                          timeout=WATCH_WAIT_SECONDS)
                if fresh is None or fresh.uid != current.uid:
                    fresh = self._store.fresh_workload_spread(ws.namespace, ws.name)
                if fresh is None:
                    raise NotFound(f"WorkloadSpread {ws.key} was deleted") from None
                with group.lock:
                    group.contended_until = time.monotonic() + CONTENTION_SECONDS
                current = fresh
                continue
            with group.lock:
                group.landed_at = time.monotonic()
                group.write_seconds = group.landed_at - started
            writing += time.monotonic() - started
            log.debug("ledger commit", extra={"workloadSpread": ws.key, "batch": len(batch), "conflicts": conflicts,
                                              "writeSeconds": round(writing, 3)})
            self._remember(written)
            self._on_commit(CommitStats(len(batch), conflicts, True, writing))
            return

    @staticmethod
    def _join_queued(group: _Group, batch: list[_Request]) -> None:
        """Move the requests queued meanwhile into the batch being committed, which answers them too."""
        with group.lock:
            batch += group.queue
            group.queue = []

    @staticmethod
    def _pace(group: _Group, deadline: float) -> bool:
        """While another writer competes, wait a moment after our last write before the next one. The other
        writer's losing attempt was in flight when ours landed and may return up to one write's time later;
        its retry wins if it is sent within our pause, so a pause of half to one write's time, at random,
        gives it about an even chance. Whether it waited."""
        with group.lock:
            now = time.monotonic()
            if now >= group.contended_until:
                return False
            pause = min(MAX_PAUSE_SECONDS, group.write_seconds * random.uniform(0.5, 1.0))
            wait = min(group.landed_at + pause, deadline) - now
        if wait <= 0:
            return False
        time.sleep(wait)
        return True

    def _newest(self, ws: WorkloadSpread) -> WorkloadSpread:
        """The newer of the caller's copy and the last one this process wrote (caches lag our own writes)."""
        with self._groups_lock:
            mine = self._written.get(ws.key)
        if (mine is None or mine.uid != ws.uid
                or version_order(mine.resource_version) <= version_order(ws.resource_version)):
            return ws
        return mine

    def _remember(self, written: WorkloadSpread) -> None:
        with self._groups_lock:
            self._written[written.key] = written

    def forget(self, key: str) -> None:
        """Drop what this process remembers of a deleted WorkloadSpread."""
        with self._groups_lock:
            self._written.pop(key, None)
