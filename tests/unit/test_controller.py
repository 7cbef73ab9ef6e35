"""The reconcile loop's pacing: how soon a change to a namespace's pods is synced after the last sync, and
how the ledger is settled between syncs."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from spreadhook import controller
from spreadhook.controller import Controller
from spreadhook.reconciler import SyncResult
from spreadhook.store import Conflict, MemoryStore, StoreError
from tests.unit import factories


class TimedReconciler:
    """Stands in for ``Reconciler``: each sync takes ``seconds`` and records when it started."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[float] = []
        self.synced = threading.Event()
        self.syncs: list[tuple[float, float]] = []
        self.settled: list[float] = []

    def sync(self, namespace: str, name: str) -> SyncResult:
        self.started.append(time.monotonic())
        time.sleep(self.seconds)
        self.syncs.append((self.started[-1], time.monotonic()))
        self.synced.set()
        return SyncResult(status_written=False, adopted=0, costs_patched=0, rescheduled=0, requeue_after=None)

    def settle(self, namespace: str, name: str) -> int:
        self.settled.append(time.monotonic())
        return 0


def _gap_after_a_change(sync_seconds: float) -> float:
    """Seconds from the end of one sync to the next, when a pod changes just as the first sync ends."""
    store = MemoryStore()
    store.apply_workload_spread(factories.ws_dict([{"name": "a", "maxReplicas": 1}]))
    reconciler = TimedReconciler(sync_seconds)
    loop = Controller(store, reconciler, resync_seconds=3600)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert reconciler.synced.wait(10)  # the resync's pass at start, the only one in the hour asked for
        reconciler.synced.clear()
        first_ended = time.monotonic()
        loop.namespace_changed("default")
        assert reconciler.synced.wait(10)
        return reconciler.started[-1] - first_ended
    finally:
        stop.set()
        thread.join(5)


def test_a_change_after_a_quick_sync_is_synced_after_the_usual_half_second() -> None:
    gap = _gap_after_a_change(0.01)
    assert controller.COALESCE_SECONDS - 0.05 <= gap < 0.9


def test_a_change_after_a_slow_sync_waits_three_times_that_sync_so_the_reconciler_yields_to_admissions() -> None:
    gap = _gap_after_a_change(0.4)
    assert gap >= 3 * 0.4 - 0.05


@pytest.mark.parametrize(("last", "delay"), [(0.0, 0.5), (0.1, 0.5), (0.5, 1.5), (1.0, 3.0), (4.0, 5.0)])
def test_the_coalescing_delay_is_three_syncs_long_between_half_a_second_and_five(last: float, delay: float) -> None:
    assert controller.coalesce_delay(last) == pytest.approx(delay)


def test_the_ledger_is_settled_every_interval_between_syncs_and_never_while_one_writes() -> None:
    """Syncs under a burst came seconds apart, and the entries of every pod admitted in between stayed in each
    status write; a settle during a sync would make that sync's guarded write conflict."""
    store = MemoryStore()
    store.apply_workload_spread(factories.ws_dict([{"name": "a", "maxReplicas": 1}]))
    reconciler = TimedReconciler(0.3)
    loop = Controller(store, reconciler, resync_seconds=0.6, settle_seconds=0.05)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    time.sleep(2.0)
    stop.set()
    thread.join(5)
    assert len(reconciler.syncs) >= 2
    assert len(reconciler.settled) >= 10
    assert not [at for at in reconciler.settled if any(start <= at <= end for start, end in reconciler.syncs)]


class FailingReconciler(TimedReconciler):
    """Every sync fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        super().__init__(0.0)
        self.error = error

    def sync(self, namespace: str, name: str) -> SyncResult:
        raise self.error


def _levels_of_failed_syncs(error: Exception, syncs: int, caplog: pytest.LogCaptureFixture) -> list[int]:
    loop = Controller(MemoryStore(), FailingReconciler(error), resync_seconds=3600)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="spreadhook.controller"):
        for _ in range(syncs):
            loop._sync("default/ws")
    return [r.levelno for r in caplog.records if "sync of WorkloadSpread default/ws failed" in r.getMessage()]


def test_syncs_losing_to_the_ledgers_writes_are_logged_quietly_until_they_keep_losing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    levels = _levels_of_failed_syncs(Conflict("status kept conflicting"), controller.QUIET_CONFLICTS + 1, caplog)

    assert levels == [logging.INFO] * (controller.QUIET_CONFLICTS - 1) + [logging.WARNING] * 2


def test_a_sync_that_cannot_reach_the_api_server_is_a_warning_at_once(caplog: pytest.LogCaptureFixture) -> None:
    assert _levels_of_failed_syncs(StoreError("connection refused"), 1, caplog) == [logging.WARNING]
