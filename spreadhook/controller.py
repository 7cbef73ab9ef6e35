"""The reconcile loop: a delaying work queue of WorkloadSpread keys, fed by store changes and timers.

Triggers only decide *when* to sync; what a sync does comes from the observed state alone. Every
WorkloadSpread is also resynced periodically, so a missed or coalesced event costs at most one period, and
pods created while the webhook was down are adopted on the next pass even if nothing else happens
(upstream adopts them only when an unrelated event arrives). Only the leader syncs.
"""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from spreadhook import workloads
from spreadhook.reconciler import Reconciler
from spreadhook.store import Conflict, NotFound, Store, StoreError

log = logging.getLogger(__name__)

RESYNC_SECONDS = 10.0
SETTLE_SECONDS = 1.0
"""How often the leader removes the ledger entries of pods that exist (``Reconciler.settle``): at 150 pods a
second, a second's worth of entries is about 10 KB of status."""
COALESCE_SECONDS = 0.5
MAX_COALESCE_SECONDS = 5.0
SYNC_DUTY_FACTOR = 3.0
MAX_BACKOFF_SECONDS = 30.0
QUIET_CONFLICTS = 5
"""Syncs in a row that may lose to the webhook's ledger writes (or find the WorkloadSpread just deleted) before
that is worth a warning. While thousands of pods come or go at once (a burst, a namespace being deleted) the
ledger writes the status many times a second and a sync's write loses often; the next sync starts from what
the ledger wrote, so only a run of losses (seconds of them, with the backoff) means something is wrong. One
benchmark run logged 32 such warnings, each healed by the next sync."""


def coalesce_delay(last_sync_seconds: float) -> float:
    """How long a WorkloadSpread's changes gather before the sync they trigger: at least ``SYNC_DUTY_FACTOR``
    times its last sync's duration, so the reconciler takes at most about a quarter of the time.

    Under a 3,000-pod burst a sync (a pass over every pod, then a status write that meets the ledger's writes
    and is rebased and retried) took about half a second, and with a fixed 0.5 s it ran back to back: the
    reconciler held the interpreter lock for 28 % of the samples, taken from the admissions in the same
    process, and its writes made the ledger's conflict. Nothing it writes during a burst is urgent (the
    ledger already counts each admitted pod), and once the burst ends syncs are short again and so is the
    delay. Capped so that a status never lags the pods by more than a few seconds."""
    return min(MAX_COALESCE_SECONDS, max(COALESCE_SECONDS, SYNC_DUTY_FACTOR * last_sync_seconds))


class Elector(Protocol):
    def is_leader(self) -> bool:
        """True while this process holds the lease."""


class AlwaysLeader:
    """The embedded store has one process, so it always leads."""

    def is_leader(self) -> bool:
        return True


class Controller:
    def __init__(
        self,
        store: Store,
        reconciler: Reconciler,
        *,
        elector: Elector | None = None,
        resync_seconds: float = RESYNC_SECONDS,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self._store = store
        self._reconciler = reconciler
        self._elector = elector or AlwaysLeader()
        self._resync = resync_seconds
        self._settle_seconds = settle_seconds
        self._syncing = threading.Lock()
        """Held through each sync and each settle round: the two never write one status at once."""
        self._lock = threading.Condition()
        self._due: list[tuple[float, str]] = []
        self._scheduled: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._sync_seconds: dict[str, float] = {}
        """WorkloadSpread key -> how long its last sync took (wall clock), which paces the next."""
        self.syncs = 0

    def enqueue(self, key: str, delay: float = 0.0) -> None:
        """Ask for a sync of ``namespace/name`` after ``delay``; an earlier request for the key wins."""
        at = time.monotonic() + delay
        with self._lock:
            if key in self._scheduled and self._scheduled[key] <= at:
                return
            self._scheduled[key] = at
            heapq.heappush(self._due, (at, key))
            self._lock.notify()

    def namespace_changed(self, namespace: str) -> None:
        """A pod or workload of ``namespace`` changed: sync its WorkloadSpreads soon. Called on every watch
        event, so it only marks the namespace; a burst of thousands of pods costs one sync per period."""
        with self._lock:
            if namespace not in self._dirty:
                self._dirty.add(namespace)
                self._lock.notify()

    def _enqueue_dirty(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for namespace in dirty:
            for ws in self._store.workload_spreads(namespace):
                self.enqueue(ws.key, coalesce_delay(self._sync_seconds.get(ws.key, 0.0)))

    def _next(self, stop: threading.Event) -> str | None:
        while not stop.is_set():
            self._enqueue_dirty()
            with self._lock:
                if self._dirty:
                    continue
                now = time.monotonic()
                if self._due and self._due[0][0] <= now:
                    at, key = heapq.heappop(self._due)
                    if self._scheduled.get(key) != at:
                        continue  # superseded by an earlier request
                    del self._scheduled[key]
                    return key
                self._lock.wait(min(self._due[0][0] - now, 1.0) if self._due else 1.0)
        return None

    def run(self, stop: threading.Event) -> None:
        for loop, name in ((self._resync_loop, "spreadhook-resync"), (self._settle_loop, "spreadhook-settle")):
            threading.Thread(target=loop, args=(stop,), name=name, daemon=True).start()
        while (key := self._next(stop)) is not None:
            if not self._elector.is_leader():
                continue
            self._sync(key)

    def _resync_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self._elector.is_leader() and self._store.synced():
                for ws in self._store.workload_spreads():
                    self.enqueue(ws.key)
            stop.wait(self._resync)

    def _settle_loop(self, stop: threading.Event) -> None:
        """Between syncs, keep the ledger's status small (``Reconciler.settle``). Its own thread, because the
        controller's sleeps out each sync's coalescing delay (seconds under a burst), which settling must not
        wait for; never during a sync, whose resourceVersion-guarded write every removal would make conflict."""
        while not stop.wait(self._settle_seconds):
            if not (self._elector.is_leader() and self._store.synced()):
                continue
            for ws in self._store.workload_spreads():
                if not self._syncing.acquire(blocking=False):
                    break  # a sync's own write removes these entries, and a removal meanwhile makes it conflict
                try:
                    self._reconciler.settle(ws.namespace, ws.name)
                except StoreError as exc:
                    log.warning("settling the ledger of WorkloadSpread %s failed (%s); retrying in %.1fs", ws.key,
                                exc, self._settle_seconds, extra={"workloadSpread": ws.key})
                except Exception:
                    log.exception("settling the ledger of WorkloadSpread %s failed unexpectedly", ws.key,
                                  extra={"workloadSpread": ws.key})
                finally:
                    self._syncing.release()

    def _sync(self, key: str) -> None:
        namespace, _, name = key.partition("/")
        started = time.monotonic()
        try:
            with self._syncing:
                result = self._reconciler.sync(namespace, name)
        except StoreError as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(MAX_BACKOFF_SECONDS, 0.1 * 2**failures)
            expected = isinstance(exc, Conflict | NotFound) and failures < QUIET_CONFLICTS
            log.log(logging.INFO if expected else logging.WARNING, "sync of WorkloadSpread %s failed (%s); "
                    "retrying in %.1fs", key, exc, delay, extra={"workloadSpread": key, "failures": failures})
            self.enqueue(key, delay)
            return
        except Exception:
            log.exception("sync of WorkloadSpread %s failed unexpectedly", key)
            self.enqueue(key, MAX_BACKOFF_SECONDS)
            return
        finally:
            self._sync_seconds[key] = time.monotonic() - started
        self.syncs += 1
        self._failures.pop(key, None)
        if result is None:  # the WorkloadSpread is gone
            self._sync_seconds.pop(key, None)
        elif result.requeue_after is not None:
            self.enqueue(key, result.requeue_after + 0.05)


def start_controller(
    store: Store,
    *,
    clock: Callable[[], dt.datetime],
    custom: Iterable[workloads.CustomWorkload] = (),
    elector: Elector | None = None,
) -> tuple[Controller, threading.Event]:
    """Run the loop in a daemon thread; set the returned event to stop it."""
    controller = Controller(store, Reconciler(store, clock=clock, custom_workloads=custom), elector=elector)
    store.subscribe(controller.namespace_changed)
    stop = threading.Event()
    threading.Thread(target=controller.run, args=(stop,), name="spreadhook-controller", daemon=True).start()
    return controller, stop
