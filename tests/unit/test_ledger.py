"""The ledger: compare-and-swap on the status, group commit, several processes on one store."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import threading
import time
from typing import Any

import pytest

from spreadhook import model, mutation, spread
from spreadhook.ledger import CommitStats, Ledger, LedgerTimeout
from spreadhook.reconciler import Reconciler
from spreadhook.store import MemoryStore
from tests.unit.factories import pod, ws_dict

SUBSETS = [{"name": "a", "maxReplicas": 50}, {"name": "b", "maxReplicas": 50}, {"name": "c"}]


def store_with_spread(write_latency: float = 0.0) -> MemoryStore:
    store = MemoryStore(write_latency=write_latency)
    store.apply_workload_spread(ws_dict(SUBSETS))
    return store


def admit_all(ledgers: list[Ledger], store: MemoryStore, count: int, threads: int) -> list[str | None]:
    def admit(i: int) -> str | None:
        current = store.workload_spread("default", "ws")
        assert current is not None
        decision = ledgers[i % len(ledgers)].admit(current, pod(f"p-{i}"), workload_replicas=0,
                                                   deadline=time.monotonic() + 30)
        return decision.subset.name if decision.subset else None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(admit, range(count)))


def test_concurrent_admissions_share_status_writes() -> None:
    store = store_with_spread(write_latency=0.02)
    stats: list[CommitStats] = []
    lock = threading.Lock()

    def observe(s: CommitStats) -> None:
        with lock:
            stats.append(s)

    chosen = admit_all([Ledger(store, on_commit=observe)], store, 120, threads=32)
    assert chosen.count("a") == 50 and chosen.count("b") == 50 and chosen.count("c") == 20
    assert store.status_writes < 100 / 2  # 100 ledger entries, far fewer writes
    assert max(s.batch_size for s in stats) > 1


def test_two_processes_on_one_store_never_exceed_a_max() -> None:
    store = store_with_spread(write_latency=0.002)
    chosen = admit_all([Ledger(store), Ledger(store)], store, 200, threads=32)
    assert chosen.count("a") == 50 and chosen.count("b") == 50 and chosen.count("c") == 100
    status = store.workload_spread("default", "ws")
    assert status is not None
    entries = status.status.versioned_subset_statuses[model.VERSION_IGNORED]
    assert [len(e.creating_pods) for e in entries[:2]] == [50, 50]
    assert store.conflicts > 0  # the two ledgers did meet, and compare-and-swap kept them exact


def test_release_records_the_delete_in_the_store() -> None:
    store = store_with_spread()
    ledger = Ledger(store)
    current = store.workload_spread("default", "ws")
    assert current is not None
    ledger.admit(current, pod("p-0"), workload_replicas=0, deadline=time.monotonic() + 5)
    leaving = pod("p-9", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()})
    released = ledger.release(store.workload_spread("default", "ws"), leaving,  # type: ignore[arg-type]
                              deadline=time.monotonic() + 5)
    assert released == spread.Release("a", True)


class AlwaysConflicting(MemoryStore):
    """Another writer that always wins: every write of ours meets a 409."""

    def write_status(self, ws: Any, status: Any) -> Any:
        self.apply_workload_spread(ws_dict(SUBSETS))  # bumps the resourceVersion under us
        return super().write_status(ws, status)


def test_a_ledger_that_cannot_commit_before_the_deadline_says_so() -> None:
    store = AlwaysConflicting()
    store.apply_workload_spread(ws_dict(SUBSETS))
    current = store.workload_spread("default", "ws")
    assert current is not None
    with pytest.raises(LedgerTimeout):
        Ledger(store).admit(current, pod("p-0"), workload_replicas=0, deadline=time.monotonic() + 0.2)


# -- spare slots -------------------------------------------------------------------------------------------


class GatedStore(MemoryStore):
    """A store whose status writes wait while the gate is closed: an API server that has become slow."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def write_status(self, ws: Any, status: Any) -> Any:
        assert self.gate.wait(10), "gate never opened"
        return super().write_status(ws, status)


def _current(store: MemoryStore) -> model.WorkloadSpread:
    found = store.workload_spread("default", "ws")
    assert found is not None
    return found


def _entries(store: MemoryStore) -> dict[str, spread.SubsetStatus]:
    return {e.name: e for e in _current(store).status.versioned_subset_statuses[model.VERSION_IGNORED]}


def _settle(store: MemoryStore, expected: dict[str, int], timeout: float = 5.0) -> None:
    """Wait until each subset holds EXPECTED entries: the spares nobody took were given back (demand stopped)."""
    deadline = time.monotonic() + timeout
    while any(len(e.creating_pods) != expected.get(name, 0) for name, e in _entries(store).items() if name != "c"):
        assert time.monotonic() < deadline, "spares were never given back"
        time.sleep(0.05)


def test_a_pod_is_admitted_into_a_spare_while_the_status_write_is_still_pending() -> None:
    store = GatedStore()
    store.apply_workload_spread(ws_dict(SUBSETS))
    ledger = Ledger(store, spares=True)
    ledger.admit(_current(store), pod("p-0"), workload_replicas=0, deadline=time.monotonic() + 5)
    spares = [k for k in _entries(store)["a"].creating_pods if k.startswith(spread.SPARE_PREFIX)]
    assert len(spares) == 2
    store.gate.clear()  # from now on every write hangs
    started = time.monotonic()
    decision = ledger.admit(_current(store), pod("p-1"), workload_replicas=0, deadline=time.monotonic() + 5)
    assert time.monotonic() - started < 1.0
    assert decision.subset is not None and decision.subset.name == "a"
    assert decision.generated_uid in spares  # the pod's ledger key: the spare's entry is now the pod's
    store.gate.set()


def test_a_pod_admitted_into_a_spare_again_keeps_its_slot() -> None:
    store = store_with_spread()
    ledger = Ledger(store, spares=True)
    ledger.admit(_current(store), pod("p-0"), workload_replicas=0, deadline=time.monotonic() + 5)
    first = ledger.admit(_current(store), pod("p-1"), workload_replicas=0, deadline=time.monotonic() + 5)
    assert first.subset is not None and first.generated_uid.startswith(spread.SPARE_PREFIX)
    annotated = pod("p-1", annotations={spread.MATCHED_ANNOTATION: spread.Matched(
        "ws", first.subset.name, first.generated_uid).to_annotation()})
    again = ledger.admit(_current(store), annotated, workload_replicas=0, deadline=time.monotonic() + 5)
    assert again.subset == first.subset and not again.changed and again.generated_uid == ""


def test_spares_never_let_two_processes_exceed_a_max_and_are_given_back_when_demand_stops() -> None:
    store = store_with_spread(write_latency=0.005)
    ledgers = [Ledger(store, spares=True), Ledger(store, spares=True)]
    chosen = admit_all(ledgers, store, 200, threads=32)
    assert chosen.count("a") <= 50 and chosen.count("b") <= 50
    assert chosen.count(None) == 0
    _settle(store, {name: chosen.count(name) for name in ("a", "b")})
    entries = _entries(store)
    for name in ("a", "b"):  # every entry left is a pod's (by name or by the spare it took): one slot each
        assert len(entries[name].creating_pods) == chosen.count(name)
        assert entries[name].missing_replicas == 50 - chosen.count(name)


def test_a_pod_goes_through_the_ledger_when_an_earlier_subset_has_room_of_its_own() -> None:
    w = model.parse(ws_dict(SUBSETS, status={"versionedSubsetStatuses": {model.VERSION_IGNORED: [
        {"name": "a", "replicas": 49, "missingReplicas": 1}, {"name": "b", "replicas": 0, "missingReplicas": 48,
                                                              "creatingPods": {"spare-b": "2026-01-01T00:00:00Z"}},
        {"name": "c", "replicas": 0, "missingReplicas": -1}]}}))
    assert spread.spare_subset(w, w.status, model.VERSION_IGNORED, {"b": ["spare-b"]}) is None
    full_a = w.status.clone()
    full_a.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas = 0
    assert spread.spare_subset(w, full_a, model.VERSION_IGNORED, {"b": ["spare-b"]}) == "b"


def test_spares_fill_subsets_in_order_exactly_while_the_reconciler_recounts() -> None:
    """The pods queued behind the write that turned a subset's last slots into spares take those spares;
    they must not find the subset full and spill into the next one (found under a real burst)."""
    subsets = [{"name": f"p{i}", "maxReplicas": 30} for i in range(5)] + [{"name": "rest"}]
    store = MemoryStore(write_latency=0.01)
    store.apply_workload_spread(ws_dict(subsets))
    ledger = Ledger(store, spares=True)
    reconciler = Reconciler(store, clock=lambda: dt.datetime.now(dt.UTC))
    stop = threading.Event()

    def recount() -> None:
        while not stop.is_set():
            reconciler.sync("default", "ws")
            time.sleep(0.02)

    def admit(i: int) -> str | None:
        p = pod(f"p-{i}", phase="Pending", ready=False)
        current = _current(store)
        decision = ledger.admit(current, p, workload_replicas=150, deadline=time.monotonic() + 30)
        if decision.subset is None:
            return None
        store.put_pod(mutation.inject(p, current, decision.subset, decision.generated_uid))
        return decision.subset.name

    background = threading.Thread(target=recount)
    background.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            chosen = list(pool.map(admit, range(150)))
    finally:
        stop.set()
        background.join()
    assert {name: chosen.count(name) for name in set(chosen)} == {f"p{i}": 30 for i in range(5)}
