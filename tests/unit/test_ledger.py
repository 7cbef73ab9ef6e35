"""The ledger: compare-and-swap on the status, group commit, several processes on one store."""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from typing import Any

import pytest

from spreadhook import model, spread
from spreadhook.ledger import ENTRY_ID_CHARACTERS, CommitStats, Ledger, LedgerTimeout, new_entry_id
from spreadhook.store import MemoryStore
from tests.unit.factories import T0, pod, ws_dict

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


class SlowApiServer(MemoryStore):
    """Status writes that take 20-60 ms and fresh reads that take 60 ms, as on a loaded API server (the read
    sees the object as it was halfway through). Its cache, like a watch that keeps up, is never behind."""

    def write_status(self, ws: Any, status: Any) -> Any:
        time.sleep(random.uniform(0.02, 0.06))
        return super().write_status(ws, status)

    def write_ledger(self, ws: Any, status: Any, *, sole_writer: bool) -> Any:
        time.sleep(random.uniform(0.02, 0.06))
        return super().write_ledger(ws, status, sole_writer=sole_writer)

    def fresh_workload_spread(self, namespace: str, name: str) -> Any:
        time.sleep(0.03)
        seen = super().workload_spread(namespace, name)
        time.sleep(0.03)
        return seen


def test_a_process_that_loses_a_conflict_is_not_starved_by_one_that_keeps_writing() -> None:
    """Each process's own clients keep its queue full, as kube-apiserver's connections to two replicas do.
    The process that lost learns it when the winner's next write is already on its way; were it to retry at
    once from a fresh read, it would lose again and again until its admissions' deadline (measured: all 16
    of one process's admissions given up, every run, before the winner paced its writes)."""
    store = SlowApiServer()
    store.apply_workload_spread(ws_dict([{"name": "a", "maxReplicas": 1000}, {"name": "b"}]))
    ledgers = [Ledger(store), Ledger(store)]
    timeouts: list[int] = []
    lock = threading.Lock()

    def client(process: int, first: int) -> None:
        for i in range(first, first + 20):
            current = store.workload_spread("default", "ws")
            assert current is not None
            try:
                ledgers[process].admit(current, pod(f"p-{process}-{i}"), workload_replicas=0,
                                       deadline=time.monotonic() + 1.5)
            except LedgerTimeout:
                with lock:
                    timeouts.append(process)

    threads = [threading.Thread(target=client, args=(n % 2, 20 * n)) for n in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timeouts == []
    assert store.conflicts > 0  # the two did compete


# -- slots reserved ahead -------------------------------------------------------------------------------

WIDE = [{"name": "a", "maxReplicas": 150}, {"name": "b", "maxReplicas": 150}, {"name": "c"}]


def wide_store(write_latency: float) -> MemoryStore:
    store = MemoryStore(write_latency=write_latency)
    store.apply_workload_spread(ws_dict(WIDE))
    return store


def admit_burst(ledgers: list[Ledger], store: MemoryStore, count: int, threads: int
                ) -> list[tuple[str, spread.Admission]]:
    """``count`` pods admitted from ``threads`` threads, spread round-robin over ``ledgers``: (name, decision)."""
    return admit_burst_named(ledgers, store, count, threads, first=0)


def admit_burst_named(ledgers: list[Ledger], store: MemoryStore, count: int, threads: int, *, first: int
                      ) -> list[tuple[str, spread.Admission]]:
    def admit(i: int) -> tuple[str, spread.Admission]:
        current = store.workload_spread("default", "ws")
        assert current is not None
        return f"p-{i}", ledgers[i % len(ledgers)].admit(current, pod(f"p-{i}"), workload_replicas=0,
                                                        deadline=time.monotonic() + 30)

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(admit, range(first, first + count)))


def held_keys(store: MemoryStore) -> dict[str, set[str]]:
    current = store.workload_spread("default", "ws")
    assert current is not None
    return {e.name: set(e.creating_pods) for e in current.status.versioned_subset_statuses[model.VERSION_IGNORED]}


def burst_until_reserved(ledger: Ledger, store: MemoryStore) -> set[str]:
    """Bursts of 40 pods until the ledger holds slots beyond them (it reserves from a background thread,
    once the arrival rate warrants it); the admitted pods' keys."""
    admitted: set[str] = set()
    for _ in range(5):
        start = len(admitted)
        admitted |= {d.generated_uid or name for name, d in admit_burst_named([ledger], store, 40, 8, first=start)}
        time.sleep(0.1)
        if held_keys(store)["a"] - admitted:
            return admitted
    raise AssertionError("no slot was ever reserved ahead")


def wait_for(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_a_burst_takes_reserved_slots_without_writes_fills_subsets_in_order_and_returns_what_is_left() -> None:
    store = wide_store(write_latency=0.02)
    taken: list[int] = []
    ledger = Ledger(store, reserve=True, on_reserved_taken=lambda: taken.append(1))
    decisions = admit_burst([ledger], store, 400, threads=32)
    chosen = [d.subset.name if d.subset else None for _, d in decisions]
    assert (chosen.count("a"), chosen.count("b"), chosen.count("c")) == (150, 150, 100)
    assert len(taken) > 60, "many pods should have taken a slot reserved ahead"
    assert store.status_writes < 300 / 10
    # Every entry left once the burst is idle is an admitted pod's: nothing reserved is held any longer.
    keys = {name: d.generated_uid or name for name, d in decisions}
    expected = {s: {keys[n] for n, d in decisions if d.subset and d.subset.name == s} for s in ("a", "b")}
    wait_for(lambda: {k: v for k, v in held_keys(store).items() if k != "c"} == expected)
    current = store.workload_spread("default", "ws")
    assert current is not None
    assert [e.missing_replicas for e in current.status.versioned_subset_statuses[model.VERSION_IGNORED]] == [0, 0, -1]


def test_reserved_slots_nobody_takes_are_given_back_with_their_room() -> None:
    store = wide_store(write_latency=0.0)
    ledger = Ledger(store, reserve=True)
    admitted = burst_until_reserved(ledger, store)

    def settled() -> bool:
        current = store.workload_spread("default", "ws")
        assert current is not None
        entry = current.status.versioned_subset_statuses[model.VERSION_IGNORED][0]
        return entry.missing_replicas == 150 - len(admitted) and set(entry.creating_pods) == admitted

    wait_for(settled)


def test_two_processes_reserving_ahead_on_one_store_stay_exact_at_every_subset_boundary() -> None:
    store = wide_store(write_latency=0.01)
    decisions = admit_burst([Ledger(store, reserve=True), Ledger(store, reserve=True)], store, 500, threads=32)
    chosen = [d.subset.name if d.subset else None for _, d in decisions]
    assert (chosen.count("a"), chosen.count("b"), chosen.count("c")) == (150, 150, 200)


def test_a_process_that_sees_another_writers_entry_returns_its_reserved_slots_and_stops_reserving() -> None:
    store = wide_store(write_latency=0.005)
    mine = Ledger(store, reserve=True)
    admitted = burst_until_reserved(mine, store)
    other = Ledger(store)
    current = store.workload_spread("default", "ws")
    assert current is not None
    other.admit(current, pod("from-elsewhere"), workload_replicas=0, deadline=time.monotonic() + 5)
    current = store.workload_spread("default", "ws")
    assert current is not None
    after = mine.admit(current, pod("next"), workload_replicas=0, deadline=time.monotonic() + 5)
    assert after.generated_uid == "", "a pod after another writer's entry goes through the ledger"
    wait_for(lambda: held_keys(store)["a"] == admitted | {"from-elsewhere", "next"})


def test_a_dry_run_is_answered_with_the_subset_of_the_next_reserved_slot_and_takes_nothing() -> None:
    store = wide_store(write_latency=0.005)
    ledger = Ledger(store, reserve=True)
    burst_until_reserved(ledger, store)
    current = store.workload_spread("default", "ws")
    assert current is not None
    full = current.status.clone()
    full.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas = 0  # the rest of a went meanwhile
    current = store.write_status(current, full)
    before = held_keys(store)
    assert spread.admit(current, current.status.clone(), pod("dry"), workload_replicas=0, now=T0,
                        new_uid=lambda: "x").subset.name == "b", "without the slots, the pod would go to b"
    preview = ledger.preview(current, pod("dry"), workload_replicas=0)
    assert preview.subset is not None and preview.subset.name == "a" and not preview.changed
    assert held_keys(store) == before


def test_the_first_write_of_a_burst_reserves_for_the_pods_the_workload_has_yet_to_create() -> None:
    """The first wave of a burst arrives while the burst's first write is made; reserving only from the arrival
    rate (one pod so far) would have every pod of that wave wait for a second write."""
    store = wide_store(write_latency=0.005)
    ledger = Ledger(store, reserve=True)
    current = store.workload_spread("default", "ws")
    assert current is not None
    first = ledger.admit(current, pod("p-0"), workload_replicas=0, deadline=time.monotonic() + 5,
                         pods_to_come=lambda: 40)
    writes = store.status_writes
    assert first.subset is not None and first.subset.name == "a"
    later = [ledger.admit(current, pod(f"p-{i}"), workload_replicas=0, deadline=time.monotonic() + 5,
                          pods_to_come=lambda i=i: 40 - i) for i in range(1, 30)]
    assert all(d.generated_uid.startswith(spread.RESERVED_PREFIX) for d in later), "each took a reserved slot"
    assert store.status_writes == writes, "and none waited for a write"


def test_the_keys_made_up_for_entries_are_a_third_of_a_uuid_and_do_not_repeat() -> None:
    ids = [new_entry_id() for _ in range(20_000)]

    assert len(set(ids)) == len(ids)
    assert {len(i) for i in ids} == {ENTRY_ID_CHARACTERS}
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyz234567") for i in ids)  # lower-case base32: JSON-pointer safe
