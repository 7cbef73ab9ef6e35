"""Reserve and release subset slots in the WorkloadSpread status, with compare-and-swap and group commit.

The status on the API server is the only truth; this module never trusts its own memory beyond one
``resourceVersion``. Concurrent admissions for one WorkloadSpread in this process queue behind the write in
flight; when it lands, the next leader takes every queued request and commits them all in one status write
(group commit). The write is a JSON patch guarded by the slot counts the batch was decided from
(``Store.write_ledger``, ``statuspatch``), so a write that moved no count since (the reconciler removing the
entries of pods that exist) does not make it fail. A conflict (a count moved: another process took or gave
back a slot first, or the reconciler returned an expired one) reads the object that won (from the watch, else
past every cache) and re-decides the whole batch, until the deadline the caller gives: a pod is never refused
because of contention that the API server itself can absorb.

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

**Slots reserved ahead** (``reserve=True``, what ``serve`` and ``run`` use). Under a burst every admission
above waited for a status write, which a saturated kube-apiserver takes a quarter of a second to make (and
seconds at C=256, past the decision deadline). So while a burst lasts this process also writes entries for
pods that have not arrived yet (``spread.reserve_ahead``), as many as it expects in the next few writes'
time, refilled from a background thread before they run out, and hands them to the next pods without a
write. The first slots are reserved when a workload the WorkloadSpread governs scales out (``foresee``, from
the store's watch), before its controller's first pods arrive. A reserved slot is in the status before any
pod takes it, so nothing here trusts memory: a process
that dies with slots in hand leaves entries the reconciler gives back after ``spread.CREATE_TIMEOUT``. Three
rules keep the placement exactly what one write per pod would give:

* a reserved slot is taken only where ``spread.admit`` would put the pod now
  (``spread.may_take_reserved``), and the slots are taken in subset order;
* slots are used for ``RESERVE_LIFETIME_SECONDS`` at most and returned once idle for
  ``RESERVE_IDLE_SECONDS`` (``spread.give_back``), so a pod's create has nearly the whole
  ``CREATE_TIMEOUT`` to land and the room is back for the next scale-out;
* only a process that is the WorkloadSpread's sole writer reserves: one that sees an entry another process
  wrote within ``FOREIGN_SECONDS`` returns what it holds and goes back to a write per batch. Slots held by
  one process would otherwise look full to the other, which would send its pods on to the next subset.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import math
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spreadhook import spread
from spreadhook.model import WorkloadSpread, WorkloadSpreadStatus
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
RESERVE_LIFETIME_SECONDS = 10.0
"""How long after its entry's timestamp a reserved slot may still be handed to a pod. The reconciler gives an
entry back ``CREATE_TIMEOUT`` (30 s) after its timestamp when no pod carries its key, so a slot handed out
within 10 s leaves the pod's create 20 s to land (an admission's own deadline is at most 10 s). The timestamp
is taken before the write is sent, and a write on a saturated kube-apiserver took 2.5 s: with 5 s, the last
slots of a refill expired unused while the pods behind them waited for the next write."""
RESERVE_IDLE_SECONDS = 1.0
"""Reserved slots nobody took for this long are returned: the burst is over, and the room should be back for
the next scale-out (and for other processes) before the reconciler would expire it."""
RESERVE_LEAD_SECONDS = (1.0, 4.0)
"""Reserve for the arrivals of three slow writes' time, within these bounds: a refill must land before the slots
in hand run out, and it is asked for when a quarter of them are gone. A status write on a saturated
kube-apiserver takes as long as a pod create, and jumps threefold without warning (measured at C=64: 0.3 s
writes, then one of 1.1 s), so even fast writes are given a second of arrivals. The upper bound keeps the
status small (every slot is an entry in every status write and watch event: with 6 s, writes took 1.5 s at
p50 instead of 0.6) and below ``RESERVE_LIFETIME_SECONDS``, so the last slot of a refill is still usable when
its turn comes."""
SLOW_WRITE_MEMORY_SECONDS = 10.0
"""How long a slow write is remembered as what the slots in hand must outlast. Write times on a busy
kube-apiserver come in spikes seconds apart; forgetting a spike after a few quick writes let the slots run
dry at the next one."""
MAX_RESERVED = 1024
"""The most slots one WorkloadSpread's pod version holds ahead in this process, and what a scale-out's slots are
kept at (``announced``). A refill is asked for when a quarter are gone, so the rest must outlast one status
write, which takes 2.5-4.9 s at p99 on a saturated kube-apiserver: 384 slots last about 2.5 s at 150 pods a
second, 768 about 5. Every slot is also an entry in every status write until its pod is seen, which was the
cost that kept this at 512 while the entries of created pods stayed for seconds (with 1,024, writes took 1.3 s
at p50 against 1.0 s); since the reconciler settles them every second (``Reconciler.settle``), 1,024 gave a
webhook p99 of 15, 206, 11 and 16 ms in four 3,000-pod bursts at C=64; nine with 512 the same day gave 10 ms
once and 206-993 ms otherwise."""
FIRST_WAVE_RESERVED = 256
"""The most slots a write made for an admission reserves for pods the workload has yet to create
(``workloads.pods_to_come``) before the arrival rate is known: the first wave of a burst arrives while the
burst's first write is made, and would otherwise wait for the second. A scale-out seen on the workload's watch
(``Ledger.foresee``) holds up to ``MAX_RESERVED`` instead, until its pods have taken them."""
MIN_RESERVED = 4
"""Fewer than this is not worth a write of its own: a slow scale-out goes through the ledger pod by pod."""
FOREIGN_SECONDS = 10.0
"""How long after seeing another writer's entry this process reserves nothing ahead."""
OWN_MEMORY_SECONDS = 80.0
"""How long a key this process wrote is remembered as its own: longer than any entry lives in the status
(``spread.CREATE_TIMEOUT``, plus the fresh-list interval the reconciler may hold an expiry for)."""
RATE_MEMORY_SECONDS = 5
"""The arrival rate reserved for is the busiest second of this many. Clients whose pods wait for a write stop
creating more, so the last second alone undercounts exactly when the slots have run out, and the refill
that follows is too small again."""
HOLD_BACK_MARGIN_SECONDS = 1.0
"""A batch waiting for reserved slots to come back stops waiting this long before its deadline."""
CLOCK_SKEW_SECONDS = 2.0
"""How far another process's clock may be off ours when its reserved slots are judged still usable."""
TEND_SECONDS = 0.2
"""How often the background thread looks for slots to return."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


ENTRY_ID_CHARACTERS = 12


def new_entry_id() -> str:
    """A random id for a ``creatingPods`` key this process makes up (a slot reserved ahead, a pod with no name
    yet): 12 base32 characters, 60 random bits. Every entry rides in every status write while it lives, and
    kube-apiserver's CPU per write grows with the entries' bytes as well as their number (one PUT carrying
    1,000 entries: 45 ms under ``reserved-<uuid4>`` keys, 36 ms under keys of this length, 9 ms with none),
    so a third of a UUID's length. Unique enough among the few thousand entries one WorkloadSpread holds
    within a minute; a repeat would make two pods share one entry, which costs a slot until the reconciler's
    recount and can pass no max (each pod still took a slot of its own from ``missingReplicas``)."""
    return base64.b32encode(secrets.token_bytes(8)).decode("ascii")[:ENTRY_ID_CHARACTERS].lower()


class LedgerTimeout(StoreError):
    """The ledger could not commit before the caller's deadline."""


@dataclass(slots=True, eq=False)
class _Request:
    """One admission waiting for a commit. ``promoted`` means: the previous leader handed the lead to us.

    A request with no pod tops up the slots reserved ahead for pods of ``version`` (``reserve``; how many is
    decided with the rest of the batch) or returns reserved slots (``give_back``)."""

    pod: Mapping[str, Any] | None
    deleting: bool
    workload_replicas: int
    pods_to_come: int = 0
    """How many pods the workload has yet to create, by its own object (``workloads.pods_to_come``)."""
    reserve: bool = False
    give_back: tuple[str, ...] = ()
    version: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    promoted: bool = False
    finished: bool = False
    admission: spread.Admission | None = None
    released: spread.Release | None = None
    reserved: list[tuple[str, str]] = field(default_factory=list)
    generation: int = 0
    from_reserved: bool = False
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Reserved:
    subset: str
    key: str
    usable_until: float
    """Monotonic time after which the slot is no longer handed out (``RESERVE_LIFETIME_SECONDS``)."""
    generation: int
    """The spec it was reserved under: an edited spec may have moved the limits, so it is returned instead."""


@dataclass(slots=True)
class _Group:
    lock: threading.Lock = field(default_factory=threading.Lock)
    queue: list[_Request] = field(default_factory=list)
    busy: bool = False
    contended_until: float = 0.0
    """Until when another writer is known to compete for this WorkloadSpread (monotonic clock)."""
    write_seconds: float = 0.0
    """How long this process's last write of it took: how late another writer may learn it lost to us."""
    recent_writes: deque[tuple[float, float]] = field(default_factory=deque)
    """When this process's writes of it landed and how long each took, over ``SLOW_WRITE_MEMORY_SECONDS``: the
    slowest is what the slots in hand must outlast."""
    landed_at: float = 0.0
    """When this process's last write of it landed."""
    ws: WorkloadSpread | None = None
    """The newest copy seen, for the background thread's writes."""
    reserved: dict[str, deque[_Reserved]] = field(default_factory=dict)
    """Slots reserved ahead and not yet taken, per pod version, in the order ``spread.admit`` fills them."""
    reserving: str | None = None
    """The pod version of the refill asked for or in flight, if any."""
    announced: int = 0
    """The pods the workload's last scale-out said it would create (``foresee``), less the slots handed out
    since: the slots held are kept up to this (at most ``MAX_RESERVED``) whatever the arrival rate says. In a
    traced C=64 burst, the refills of its first seconds were sized by a rate still being measured (33 slots
    where 200 pods a second came), and 28-55 pods waited for the writes that followed."""
    arrivals: deque[list[int]] = field(default_factory=deque)
    """How many pod CREATEs for this WorkloadSpread arrived in each second (``[second, count]``) of the last
    ``RATE_MEMORY_SECONDS``."""
    last_taken: float = 0.0
    own: dict[str, float] = field(default_factory=dict)
    """Ledger keys this process wrote, and when: an entry under any other key is another process's."""
    returning: set[str] = field(default_factory=set)
    """Reserved keys on their way back: room that will be free again once the write lands."""
    foreign_until: float = 0.0
    """Until when another writer is known to admit pods of this WorkloadSpread (monotonic clock)."""
    observed: str = ""
    """The resourceVersion last looked at for other writers' entries."""


def _decision_order(request: _Request) -> int:
    return 0 if request.give_back else 2 if request.reserve else 1


@dataclass(frozen=True, slots=True)
class _Settled:
    """The reserved keys of ours that will not turn back into room: taken by our pods, or still in hand.
    Everything else reserved (another process's slots, ours being returned) may be free again within moments.
    Read with ``group.lock`` held."""

    group: _Group

    def __contains__(self, key: object) -> bool:
        return key in self.group.own and key not in self.group.returning


@dataclass(frozen=True, slots=True)
class CommitStats:
    batch_size: int
    conflicts: int
    wrote: bool
    write_seconds: float = 0.0
    """Time spent in status writes (the successful one and every conflicting one): what admissions wait on."""
    reserved: int = 0
    """Slots the write reserved ahead."""
    returned: int = 0
    """Reserved slots the write gave back unused."""


class Ledger:
    """The webhook's side of the WorkloadSpread status."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock = utcnow,
        new_uid: Callable[[], str] = new_entry_id,
        on_commit: Callable[[CommitStats], None] = lambda stats: None,
        on_reserved_taken: Callable[[], None] = lambda: None,
        reserve: bool = False,
    ) -> None:
        self._store = store
        self._clock = clock
        self._new_uid = new_uid
        self._on_commit = on_commit
        self._on_reserved_taken = on_reserved_taken
        self._reserve = reserve
        self._groups: dict[str, _Group] = {}
        self._groups_lock = threading.Lock()
        self._written: dict[str, WorkloadSpread] = {}
        self._tending = threading.Condition()
        self._tender: threading.Thread | None = None

    def admit(
        self, ws: WorkloadSpread, pod: Mapping[str, Any], *, workload_replicas: int, deadline: float,
        pods_to_come: Callable[[], int] = lambda: 0,
    ) -> spread.Admission:
        """Choose the pod's subset and make sure the status records it before returning. ``pods_to_come``, the
        pods the workload has yet to create, sizes the slots the first write of a burst reserves; it is asked
        only of a pod that goes through a write, not of the many that take a reserved slot (for a custom
        workload kind, it is a GET)."""
        if not spread.needs_ledger(ws):
            return spread.admit(ws, ws.status.clone(), pod, workload_replicas=workload_replicas,
                                now=self._clock(), new_uid=self._new_uid)
        if self._reserve and spread.reserves_ahead(ws):
            group = self._group(ws.key)
            self._observe(group, ws)
            version = spread.pod_version(pod)
            newest = self._newest(ws)
            taken = self._take_reserved(group, newest, pod, version, arrived=True)
            self._ask_for_reserve(group, version)
            if taken is not None:
                return taken
            unlimited = self._without_max_now(group, newest, pod, version)
            if unlimited is not None:
                return unlimited
        request = self._submit(ws, _Request(pod, False, workload_replicas, pods_to_come()), deadline)
        assert request.admission is not None
        return request.admission

    def foresee(self, ws: WorkloadSpread, version: str, pods_to_come: int) -> None:
        """A workload began a scale-out of ``pods_to_come`` pods of ``version``: reserve for the first of them
        from the background thread now, before they arrive. Without it, the pods that arrive while the burst's
        first write is made all wait for it (at C=64, the first 64 pods of 3,000: 2 %, more than p99 allows)."""
        if not self._reserve or not spread.reserves_ahead(ws) or pods_to_come < MIN_RESERVED:
            return
        group = self._group(ws.key)
        self._observe(group, self._newest(ws))
        with group.lock:
            if (group.reserving is not None or time.monotonic() < group.foreign_until
                    or group.reserved.get(version)):
                return
            group.reserving, group.announced = version, pods_to_come
            group.last_taken = time.monotonic()  # the idle clock starts at the announcement
        self._wake_tender()

    def preview(self, ws: WorkloadSpread, pod: Mapping[str, Any], *, workload_replicas: int) -> spread.Admission:
        """The subset a pod would get now, with nothing recorded (server-side dry run)."""
        newest = self._newest(ws)
        group = self._group(ws.key) if self._reserve and spread.reserves_ahead(ws) else None
        if group is not None:
            version = spread.pod_version(pod)
            with group.lock:
                slot = self._usable_slot(group, newest, pod, version, time.monotonic())
            if slot is not None:
                return spread.Admission(ws.subset(slot.subset), False, reason="a slot reserved ahead")
        return spread.admit(newest, newest.status.clone(), pod, workload_replicas=workload_replicas,
                            now=self._clock(), new_uid=lambda: "dry-run")

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
            self._serve_reserved(group, current, batch)
            self._top_up_with(group, current, batch)  # once per version: it skips versions already asked for
            status = current.status.clone()
            now = self._clock()
            stamped = time.monotonic()
            changed = False
            # Slots given back first, so that the pods of the batch can take their room; reservations last, as
            # a reserved slot must come after every pod decided with it.
            for request in sorted(batch, key=_decision_order):
                if request.give_back:
                    changed |= spread.give_back(current, status, request.version, request.give_back)
                elif request.reserve:
                    request.reserved = spread.reserve_ahead(
                        current, status, request.version, self._shortfall(group, request.version, batch),
                        now=now, new_uid=self._new_uid)
                    request.generation = current.generation
                    changed |= bool(request.reserved)
                elif request.pod is None or request.from_reserved:
                    continue
                elif request.deleting:
                    request.released = spread.release(current, status, request.pod, now=now)
                    changed |= request.released.changed
                else:
                    request.admission = spread.admit(current, status, request.pod,
                                                     workload_replicas=request.workload_replicas, now=now,
                                                     new_uid=self._new_uid)
                    changed |= request.admission.changed
            if self._held_back(group, current, status, batch, now, deadline):
                waiting = len(batch)
                self._join_queued(group, batch)  # slots being given back may be queued behind us
                if len(batch) == waiting:
                    newer = self._store.workload_spread_after(ws.namespace, ws.name, current.resource_version,
                                                              timeout=WATCH_WAIT_SECONDS)
                    if newer is not None and newer.uid == current.uid:
                        self._observe(group, newer)
                        current = newer
                continue
            if not changed:
                self._on_commit(CommitStats(len(batch), conflicts, False, writing))
                return
            self._claim(group, batch)
            started = time.monotonic()
            with group.lock:
                sole_writer = started >= group.foreign_until
            try:
                written = self._store.write_ledger(current, status, sole_writer=sole_writer)
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
                self._observe(group, fresh)
                current = fresh
                continue
            with group.lock:
                group.landed_at = time.monotonic()
                group.write_seconds = group.landed_at - started
                group.recent_writes.append((group.landed_at, group.write_seconds))
                while group.recent_writes[0][0] < group.landed_at - SLOW_WRITE_MEMORY_SECONDS:
                    group.recent_writes.popleft()
            writing += time.monotonic() - started
            log.debug("ledger commit", extra={"workloadSpread": ws.key, "batch": len(batch), "conflicts": conflicts,
                                              "writeSeconds": round(writing, 3)})
            self._remember(written)
            reserved, returned = self._landed(group, batch, stamped)
            self._on_commit(CommitStats(len(batch), conflicts, True, writing, reserved, returned))
            return

    # -- slots reserved ahead ----------------------------------------------------------------------

    def _take_reserved(self, group: _Group, newest: WorkloadSpread, pod: Mapping[str, Any], version: str, *,
                       arrived: bool) -> spread.Admission | None:
        """A reserved slot for the pod, if one may be taken now (the rules in the module docstring)."""
        now = time.monotonic()
        with group.lock:
            if arrived:
                self._count_arrival(group, int(now))
            slot = self._usable_slot(group, newest, pod, version, now)
            if slot is None:
                return None
            group.reserved[version].popleft()
            group.last_taken = now
            group.announced = max(0, group.announced - 1)
        self._on_reserved_taken()
        return spread.Admission(newest.subset(slot.subset), False, generated_uid=slot.key,
                                reason="a slot reserved ahead")

    @staticmethod
    def _count_arrival(group: _Group, second: int) -> None:
        """Call with ``group.lock`` held."""
        if group.arrivals and group.arrivals[-1][0] == second:
            group.arrivals[-1][1] += 1
        else:
            group.arrivals.append([second, 1])
        while group.arrivals[0][0] <= second - RATE_MEMORY_SECONDS:
            group.arrivals.popleft()

    @staticmethod
    def _usable_slot(group: _Group, newest: WorkloadSpread, pod: Mapping[str, Any], version: str,
                     now: float) -> _Reserved | None:
        """The next reserved slot, if the pod may take it now. Call with ``group.lock`` held."""
        slots = group.reserved.get(version)
        if not slots or now < group.foreign_until:
            return None
        slot = slots[0]
        if (slot.usable_until <= now or slot.generation != newest.generation
                or group.ws is None or group.ws.uid != newest.uid):  # deleted, or created anew, since
            return None
        statuses = newest.status.versioned_subset_statuses.get(version) or []
        if spread.recorded_subset(statuses, pod) is not None:
            return None  # a retry of a pod the ledger already holds: ``spread.admit`` answers it
        if not spread.may_take_reserved(newest, newest.status, version, slot.subset):
            return None
        return slot

    def _serve_reserved(self, group: _Group, current: WorkloadSpread, batch: list[_Request]) -> None:
        """Answer the queued pods that reserved slots can take (a refill may have landed while they queued),
        so that they do not take room after the slots and leave the slots' subset with a hole."""
        if not self._reserve or not spread.reserves_ahead(current):
            return
        for request in batch:
            if request.pod is None or request.deleting or request.from_reserved:
                continue
            taken = self._take_reserved(group, current, request.pod, spread.pod_version(request.pod),
                                        arrived=False)
            if taken is None:
                return
            request.admission = taken
            request.from_reserved = True

    def _without_max_now(self, group: _Group, newest: WorkloadSpread, pod: Mapping[str, Any],
                         version: str) -> spread.Admission | None:
        """The answer for a pod bound for a subset without a max, which needs no entry and so need not queue
        behind a write; None when the pod needs the ledger, or when slots reserved before that subset may be
        back within moments (``_held_back``)."""
        subset = spread.without_max_next(newest, newest.status, version)
        if subset is None or spread.recorded_subset(newest.status.versioned_subset_statuses.get(version) or [],
                                                    pod) is not None:
            return None
        with group.lock:
            if self._room_may_come_back(group, newest, newest.status, version, subset.name, self._clock()):
                return None
        return spread.Admission(subset, False, reason="the subset is unlimited")

    @staticmethod
    def _room_may_come_back(group: _Group, ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str,
                            subset: str, now: dt.datetime) -> bool:
        """``spread.reserved_before`` for this process; call with ``group.lock`` held."""
        since = now - dt.timedelta(seconds=RESERVE_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS)
        return spread.reserved_before(ws, status, version, subset, settled=_Settled(group), since=since)

    def _held_back(self, group: _Group, current: WorkloadSpread, decided: WorkloadSpreadStatus,
                   batch: list[_Request], now: dt.datetime, deadline: float) -> bool:
        """Whether a pod of the batch was decided past reserved slots that may be back within moments (see
        ``spread.reserved_before``; ``decided`` is the status with the batch applied, so slots the batch itself
        gives back do not count), so the batch should wait for a newer status and be decided again; never in
        the last ``HOLD_BACK_MARGIN_SECONDS`` before the deadline, where a late place beats no place."""
        if not self._reserve or time.monotonic() >= deadline - HOLD_BACK_MARGIN_SECONDS:
            return False
        with group.lock:
            return any(
                request.admission is not None and request.admission.subset is not None
                and not request.from_reserved
                and self._room_may_come_back(group, current, decided, spread.pod_version(request.pod),
                                             request.admission.subset.name, now)
                for request in batch if request.pod is not None and not request.deleting)

    def _ask_for_reserve(self, group: _Group, version: str) -> None:
        """Wake the background thread when the slots in hand will not last until a refill could land."""
        with group.lock:
            if group.reserving is not None or time.monotonic() < group.foreign_until:
                return
            target = self._reserve_target(group)
            if target < MIN_RESERVED or 4 * len(group.reserved.get(version) or ()) >= 3 * target:
                return
            group.reserving = version
        self._wake_tender()

    @staticmethod
    def _reserve_target(group: _Group, waiting: int = 0, to_come: int = 0) -> int:
        """How many slots to hold: the arrivals expected while about three slow writes are made, at least as
        many as pods are waiting for this write (as many clients are creating pods at once), as many as the
        workload says it has yet to create (``TO_COME``) up to ``FIRST_WAVE_RESERVED``, and as many as its last
        scale-out announced and has not yet taken (``group.announced``). Call with ``group.lock`` held."""
        low, high = RESERVE_LEAD_SECONDS
        now = time.monotonic()
        slowest = max((seconds for landed, seconds in group.recent_writes
                       if landed >= now - SLOW_WRITE_MEMORY_SECONDS), default=0.0)
        lead = min(high, max(low, 3 * slowest))
        recent = int(now) - RATE_MEMORY_SECONDS
        per_second = max((count for second, count in group.arrivals if second > recent), default=0)
        expected = math.ceil(per_second * lead)
        return min(MAX_RESERVED, max(expected, waiting, min(FIRST_WAVE_RESERVED, to_come), group.announced))

    def _shortfall(self, group: _Group, version: str, batch: list[_Request]) -> int:
        """How many slots a top-up for ``version`` should reserve, decided with the batch it rides in: pods
        queued behind it count as waiting too, so that the first wave of a burst, which all queues behind the
        burst's first write, is answered from that write's slots instead of waiting for a second one."""
        with group.lock:
            if time.monotonic() < group.foreign_until:
                return 0
            waiting = sum(1 for r in (*batch, *group.queue)
                          if r.pod is not None and not r.deleting and not r.from_reserved)
            to_come = max((r.pods_to_come for r in (*batch, *group.queue)), default=0)
            short = self._reserve_target(group, waiting, to_come) - len(group.reserved.get(version) or ())
        return short if short >= MIN_RESERVED else 0

    def _top_up_with(self, group: _Group, current: WorkloadSpread, batch: list[_Request]) -> None:
        """Let a write that pods wait for also top up the slots for their version: the pods that arrive
        while it is made would otherwise wait for the next one."""
        if not self._reserve or not spread.reserves_ahead(current):
            return
        asked = {r.version for r in batch if r.reserve}
        for version in {spread.pod_version(r.pod) for r in batch
                        if r.pod is not None and not r.deleting and not r.from_reserved} - asked:
            batch.append(_Request(None, False, 0, reserve=True, version=version))

    @staticmethod
    def _claim(group: _Group, batch: list[_Request]) -> None:
        """Remember the keys a write is about to add as ours, before it is sent: the watch may bring the
        written object before the write's own answer does, and our entries must not look like another
        process's then. (Keys of a write that fails stay remembered, harmlessly: nobody else writes them.)"""
        now = time.monotonic()
        with group.lock:
            for request in batch:
                for _, key in request.reserved:
                    group.own[key] = now
                if request.pod is not None and not request.from_reserved:
                    key = (request.admission.generated_uid if request.admission is not None else "") or \
                        spread.pod_name(request.pod)
                    group.own[key] = now

    @staticmethod
    def _landed(group: _Group, batch: list[_Request], stamped: float) -> tuple[int, int]:
        """After a write landed: put the slots it reserved in hand. The slots, and how many were given back."""
        reserved = returned = 0
        now = time.monotonic()
        with group.lock:
            for request in batch:
                if request.reserved:
                    slots = group.reserved.setdefault(request.version, deque())
                    slots.extend(_Reserved(subset, key, stamped + RESERVE_LIFETIME_SECONDS, request.generation)
                                 for subset, key in request.reserved)
                    reserved += len(request.reserved)
                    group.last_taken = max(group.last_taken, now)  # the idle clock starts at the refill
                returned += len(request.give_back)
        return reserved, returned

    def _observe(self, group: _Group, ws: WorkloadSpread) -> None:
        """Look at a copy of the WorkloadSpread once for entries another process wrote."""
        with group.lock:
            if group.ws is not None and group.ws.uid != ws.uid:
                group.reserved.clear()  # deleted and created again: its ledger, and our slots, are gone
                group.ws = None
            if group.ws is None or version_order(ws.resource_version) >= version_order(group.ws.resource_version):
                group.ws = ws
            if ws.resource_version == group.observed:
                return
            group.observed = ws.resource_version
            now = time.monotonic()
            for key in [k for k, at in group.own.items() if at < now - OWN_MEMORY_SECONDS]:
                del group.own[key]
            since = self._clock() - dt.timedelta(seconds=FOREIGN_SECONDS)
            if not spread.written_by_others(ws.status, group.own, since):
                return
            first = now >= group.foreign_until
            group.foreign_until = now + FOREIGN_SECONDS
        if first and self._reserve:
            log.info("another process writes this WorkloadSpread's ledger; no slots reserved ahead",
                     extra={"workloadSpread": ws.key, "seconds": FOREIGN_SECONDS})
            self._wake_tender()

    # -- the background thread: refills and returns -------------------------------------------------

    def _wake_tender(self) -> None:
        with self._tending:
            if self._tender is None:
                self._tender = threading.Thread(target=self._tend, name="ledger-reserve", daemon=True)
                self._tender.start()
            self._tending.notify()

    def _tend(self) -> None:
        while True:
            with self._groups_lock:
                groups = list(self._groups.values())
            for group in groups:
                try:
                    self._tend_group(group)
                except StoreError as exc:
                    log.warning("reserving or returning slots failed", extra={"error": str(exc)})
                except Exception:  # the thread must outlive any one WorkloadSpread's surprise
                    log.exception("reserving or returning slots failed")
            with self._tending:
                self._tending.wait(TEND_SECONDS)

    def _tend_group(self, group: _Group) -> None:
        """Return the slots that may no longer be taken, or that nobody took for a while; make the refill
        asked for."""
        now = time.monotonic()
        with group.lock:
            ws = group.ws
            if ws is None:
                return
            idle = now - group.last_taken >= RESERVE_IDLE_SECONDS or now < group.foreign_until
            stale: dict[str, tuple[str, ...]] = {}
            for version, slots in group.reserved.items():
                usable = deque(slot for slot in slots
                               if not idle and slot.usable_until > now and slot.generation == ws.generation)
                if len(usable) < len(slots):
                    kept = {slot.key for slot in usable}
                    stale[version] = tuple(slot.key for slot in slots if slot.key not in kept)
                    group.reserved[version] = usable
                    group.returning.update(stale[version])
            if idle:
                group.announced = 0  # its pods stopped coming: the arrival rate sizes the next refill
            refill = group.reserving
        deadline = now + RESERVE_LIFETIME_SECONDS - 1
        try:
            for version, keys in stale.items():
                try:
                    self._submit(ws, _Request(None, False, 0, give_back=keys, version=version), deadline)
                finally:
                    with group.lock:
                        group.returning.difference_update(keys)
            if refill is not None:
                self._submit(ws, _Request(None, False, 0, reserve=True, version=refill), deadline)
        finally:
            if refill is not None:
                with group.lock:
                    group.reserving = None

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
        """Drop what this process remembers of a deleted WorkloadSpread, its reserved slots included."""
        with self._groups_lock:
            self._written.pop(key, None)
            group = self._groups.get(key)
        if group is not None:
            with group.lock:
                group.reserved.clear()
                group.ws = None
