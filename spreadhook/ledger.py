"""Reserve and release subset slots in the WorkloadSpread status, with compare-and-swap and group commit.

The status on the API server is the only truth; this module never trusts its own memory beyond one
``resourceVersion``. Concurrent admissions for one WorkloadSpread in this process queue behind the write in
flight; when it lands, the next leader takes every queued request and commits them all in one status write
(group commit). A 409 Conflict (another process wrote first) re-reads the object past every cache and
re-decides the whole batch, until the deadline the caller gives: a pod is never refused because of
contention that the API server itself can absorb.

With ``spares`` on, each write under demand also reserves a few *spare* slots (``spread.reserve_spare``),
about twice the pods that arrived while the previous write was in flight, and the pods that arrive next
are admitted into them without waiting for any write: under a burst on a loaded API server a status write
takes hundreds of milliseconds, and an admission that waits for one holds a kube-apiserver connection and
a client for as long. A pod admitted into a spare carries the spare's key as the ``uid`` of its matched
annotation, as a pod created with ``generateName`` carries the key the webhook made up for it, so the
spare's entry simply becomes the pod's: nothing more is written for it, and the reconciler clears it once
it sees the pod. When spares run low a background commit tops them up; spares nobody takes are given back
as soon as demand stops (``SPARE_IDLE_SECONDS``), and never used once older than
``SPARE_MAX_AGE_SECONDS``, well inside the 30 s after which the reconciler expires an entry. A subset
never goes over its max: every spare was reserved through the same compare-and-swap. Where another webhook
process holds spares too, none are reserved in a subset's last ``SPARE_CEILING`` slots, so that the other
process's pods do not find those taken by spares and go to a later subset.
"""

from __future__ import annotations

import datetime as dt
import itertools
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
from spreadhook.store import Conflict, NotFound, Store, StoreError

Clock = Callable[[], dt.datetime]
log = logging.getLogger(__name__)

SPARE_CEILING = 128
"""At most this many spares per WorkloadSpread and process: the slots another process may see as taken."""
SPARE_IDLE_SECONDS = 0.5
SPARE_MAX_AGE_SECONDS = 10.0
MAINTENANCE_SECONDS = 8.0


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


@dataclass(frozen=True, slots=True)
class _Spare:
    """A slot this process reserved ahead, in the status as a ``creatingPods`` entry under ``key``."""

    key: str
    version: str
    subset: str
    made: float


@dataclass(slots=True)
class _Group:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Request] = field(default_factory=list)
    busy: bool = False
    spares: list[_Spare] = field(default_factory=list)
    """Written spares nobody took yet, oldest first."""
    releasing: list[_Spare] = field(default_factory=list)
    """Spares being given back: no longer handed out, whether or not the write lands."""
    demand: int = 0
    """Pods asking for a slot since the last write: how many spares the next write reserves."""
    last_demand: float = 0.0
    like: Mapping[str, Any] | None = None
    """The last pod asking, whose version the next spares are for."""
    idle_check: bool = False


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
        spares: bool = False,
        on_spare_taken: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._spares = spares
        self._on_spare_taken = on_spare_taken
        self._spare_prefix = f"{spread.SPARE_PREFIX}{uuid.uuid4().hex[:8]}."
        self._spare_keys = (f"{self._spare_prefix}{n}" for n in itertools.count())
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
        group = self._group(ws.key)
        if self._spares and spread.supports_spares(ws):
            taken = self._take_spare(ws, group, pod)
            if taken is not None:
                self._on_spare_taken()
                self._kick(ws, group)
                return taken
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

    # -- spares --------------------------------------------------------------------------------------

    def _take_spare(self, ws: WorkloadSpread, group: _Group, pod: Mapping[str, Any]) -> spread.Admission | None:
        """Admit the pod into one of this process's spares if the algorithm would choose that subset anyway;
        None sends it through a commit (and counts it as demand for the next spares)."""
        info = spread.matched(pod)
        if info is not None and info.workload_spread == ws.name and info.uid.startswith(spread.SPARE_PREFIX):
            # Called again for a pod we admitted (reinvocation): it keeps the slot it has.
            return spread.Admission(ws.subset(info.subset), False, reason="the pod already holds a spare")
        newest = self._newest(ws)
        with group.lock:
            group.demand += 1
            group.last_demand = time.monotonic()
            group.like = {"metadata": {"labels": dict((pod.get("metadata") or {}).get("labels") or {})}}
            admission = self._claim_locked(group, newest, newest.status, pod)
            low = len(group.spares) < group.demand
        if admission is not None and low:  # refill before the last ones go, so the next pods need not wait
            self._kick(ws, group)
        return admission

    @staticmethod
    def _claim_locked(group: _Group, ws: WorkloadSpread, status: spread.WorkloadSpreadStatus,
                      pod: Mapping[str, Any]) -> spread.Admission | None:
        """One of the group's spares for the pod, where the algorithm would choose its subset on ``status``;
        called with the group's lock held."""
        version = spread.pod_version(pod)
        now = time.monotonic()
        held: dict[str, list[str]] = {}
        for spare in group.spares:
            if spare.version == version and now - spare.made < SPARE_MAX_AGE_SECONDS:
                held.setdefault(spare.subset, []).append(spare.key)
        chosen = spread.spare_subset(ws, status, version, held)
        if chosen is None:
            return None
        spare = next(s for s in group.spares if s.key == held[chosen][0])
        group.spares.remove(spare)
        return spread.Admission(ws.subset(chosen), False, generated_uid=spare.key)

    def _kick(self, ws: WorkloadSpread, group: _Group) -> None:
        """Have the spares' bookkeeping written soon: by the leader in flight when it is done, or else by a
        background commit started now, so that no admission waits for it."""
        with group.lock:
            if group.busy:
                return
            group.busy = True
        threading.Thread(target=self._lead, args=(ws, group, time.monotonic() + MAINTENANCE_SECONDS),
                         name=f"spreadhook-ledger-{ws.key}", daemon=True).start()

    def _after_idle(self, ws: WorkloadSpread, group: _Group) -> None:
        with group.lock:
            group.idle_check = False
        self._kick(ws, group)

    def _spare_work(self, group: _Group, current: WorkloadSpread, status: spread.WorkloadSpreadStatus,
                    now: dt.datetime) -> tuple[list[_Spare], list[_Spare]]:
        """Apply to ``status`` the release of spares too old or not needed, and the new spares that demand
        calls for: (released, reserved)."""
        clock = time.monotonic()
        with group.lock:
            idle = clock - group.last_demand >= SPARE_IDLE_SECONDS
            retiring = [s for s in group.spares if idle or clock - s.made >= SPARE_MAX_AGE_SECONDS / 2]
            group.spares = [s for s in group.spares if s not in retiring]
            group.releasing += retiring
            released = list(group.releasing)
            wanted = 0 if idle else min(SPARE_CEILING, 2 * group.demand) - len(group.spares)
            like = group.like
        for spare in released:
            spread.release_spare(status, spare.version, spare.subset, spare.key)
        reserved: list[_Spare] = []
        if like is not None and wanted > 0 and spread.supports_spares(current):
            version = spread.pod_version(like)
            # Where another process holds spares too, a subset's last slots are left to compare-and-swap:
            # its pods would otherwise see them taken by spares of ours and go to a later subset.
            keep_free = SPARE_CEILING if spread.foreign_spares(status, self._spare_prefix) else 0
            for _ in range(wanted):
                key = next(self._spare_keys)
                subset = spread.reserve_spare(current, status, like, key, now=now, keep_free=keep_free)
                if subset is None:
                    break
                reserved.append(_Spare(key, version, subset, clock))
        return released, reserved

    def _spares_written(self, ws: WorkloadSpread, group: _Group, released: list[_Spare], reserved: list[_Spare],
                        demand: int) -> None:
        with group.lock:
            group.releasing = [s for s in group.releasing if s not in released]
            group.spares += reserved
            group.demand = max(0, group.demand - demand)
            schedule = bool(group.spares) and not group.idle_check
            group.idle_check |= schedule
        if schedule:
            timer = threading.Timer(SPARE_IDLE_SECONDS, self._after_idle, (ws, group))
            timer.daemon = True
            timer.start()

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
        failed = False
        try:
            self._commit(ws, group, batch, deadline)
        except BaseException as exc:  # every waiter must learn the outcome, whatever it was
            failed = True
            for request in batch:
                request.error = exc
            if isinstance(exc, NotFound):
                self._drop_spares(group)
            elif not batch:
                log.warning("spare-slot bookkeeping for WorkloadSpread %s not written yet: %s", ws.key, exc)
        finally:
            for request in batch:
                request.finished = True
                request.done.set()
            maintain = False
            with group.lock:
                if group.queue:
                    group.queue[0].promoted = True
                    group.queue[0].done.set()
                else:
                    group.busy = False
                    maintain = bool(group.releasing)
            if maintain and failed:  # the API server is refusing: try again in a second, not in a loop
                timer = threading.Timer(1.0, self._kick, (ws, group))
                timer.daemon = True
                timer.start()
            elif maintain:  # a release is still owed: write it next, in background
                self._kick(ws, group)

    def _commit(self, ws: WorkloadSpread, group: _Group, batch: list[_Request], deadline: float) -> None:
        """Decide the whole batch on the newest status and write it once; on a conflict, re-read and decide
        again. ``batch`` may grow while retrying, and every request in it is answered by ``_lead``."""
        current = self._newest(ws)
        conflicts = 0
        writing = 0.0
        while True:
            status = current.status.clone()
            now = self._clock()
            changed = False
            with group.lock:
                demand = group.demand
            for request in batch:
                if request.deleting:
                    request.released = spread.release(current, status, request.pod, now=now)
                    changed |= request.released.changed
                elif request.admission is None or not request.admission.generated_uid.startswith(spread.SPARE_PREFIX):
                    # A spare of ours before a slot of the status: queued behind a write that reserved the
                    # subset's last slots as spares, the pod would otherwise find it full.
                    claimed = None
                    if self._spares:
                        with group.lock:
                            claimed = self._claim_locked(group, current, status, request.pod)
                    request.admission = claimed or spread.admit(
                        current, status, request.pod, workload_replicas=request.workload_replicas, now=now,
                        new_uid=self._new_uid)
                    changed |= request.admission.changed
            # After the batch: the pods waiting now come before spares for pods that may come.
            released, reserved = self._spare_work(group, current, status, now) if self._spares else ([], [])
            changed |= bool(released or reserved)
            if not changed:
                if self._spares:
                    self._spares_written(ws, group, [], [], demand)
                self._on_commit(CommitStats(len(batch), conflicts, False, writing))
                return
            started = time.monotonic()
            try:
                written = self._store.write_status(current, status)
            except Conflict:
                writing += time.monotonic() - started
                conflicts += 1
                if time.monotonic() >= deadline:
                    raise LedgerTimeout(f"WorkloadSpread {ws.key}: {conflicts} write conflicts before the "
                                        "deadline") from None
                # Another process wrote first. Retrying at once would collide again with its next batch;
                # a short random pause lets one of the two finish, and what queued meanwhile joins the retry.
                time.sleep(random.uniform(0, min(0.05, 0.002 * 2**conflicts)))
                with group.lock:
                    batch += group.queue
                    group.queue = []
                fresh = self._store.fresh_workload_spread(ws.namespace, ws.name)
                if fresh is None:
                    raise NotFound(f"WorkloadSpread {ws.key} was deleted") from None
                current = fresh
                continue
            writing += time.monotonic() - started
            self._remember(written)
            if self._spares:
                self._spares_written(ws, group, released, reserved, demand)
            self._on_commit(CommitStats(len(batch), conflicts, True, writing))
            return

    def _newest(self, ws: WorkloadSpread) -> WorkloadSpread:
        """The newer of the caller's copy and the last one this process wrote (caches lag our own writes)."""
        with self._groups_lock:
            mine = self._written.get(ws.key)
        if mine is None or mine.uid != ws.uid or _version(mine.resource_version) <= _version(ws.resource_version):
            return ws
        return mine

    def _remember(self, written: WorkloadSpread) -> None:
        with self._groups_lock:
            self._written[written.key] = written

    def forget(self, key: str) -> None:
        """Drop what this process remembers of a deleted WorkloadSpread."""
        with self._groups_lock:
            self._written.pop(key, None)
            group = self._groups.get(key)
        if group is not None:
            self._drop_spares(group)

    @staticmethod
    def _drop_spares(group: _Group) -> None:
        """The WorkloadSpread is gone, and its spares with it."""
        with group.lock:
            group.spares, group.releasing = [], []


def _version(resource_version: str) -> int:
    """resourceVersions are opaque, but etcd's are integers; comparing them is what upstream does too."""
    try:
        return int(resource_version)
    except ValueError:
        return -1
