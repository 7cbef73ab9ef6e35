"""Ledger writes as JSON patches guarded by the counts: what they change, what makes them fail, and when a
write falls back to the resourceVersion precondition. The store tests use MemoryStore, which applies the
same operations with the jsonpatch library; tests/integration/test_kubestore_watch.py runs them on
kube-apiserver."""

from __future__ import annotations

import jsonpatch
import pytest

from spreadhook import model, spread, statuspatch
from spreadhook.model import WorkloadSpread, WorkloadSpreadStatus
from spreadhook.store import Conflict, MemoryStore
from tests.unit.factories import T0, pod, ws_dict

SUBSETS = [{"name": "a", "maxReplicas": 3}, {"name": "b", "maxReplicas": 3}, {"name": "c"}]
VERSION = model.VERSION_IGNORED


def keys(status: WorkloadSpreadStatus, subset: int) -> set[str]:
    return set(status.versioned_subset_statuses[VERSION][subset].creating_pods)


def reserved(ws: WorkloadSpread, count: int, prefix: str) -> WorkloadSpreadStatus:
    """The status after the ledger reserved ``count`` slots over ``ws``'s."""
    status = ws.status.clone()
    made = iter(range(count))
    spread.reserve_ahead(ws, status, VERSION, count, now=T0, new_uid=lambda: f"{prefix}{next(made)}")
    return status


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.apply_workload_spread(ws_dict(SUBSETS))
    current = store.workload_spread("default", "ws")
    assert current is not None
    store.write_status(current, reserved(current, 1, "first-"))  # the version's ledger exists from here on
    return store


def newest(store: MemoryStore) -> WorkloadSpread:
    ws = store.workload_spread("default", "ws")
    assert ws is not None
    return ws


def test_the_patch_turns_the_status_read_into_the_status_decided() -> None:
    ws = model.parse(ws_dict(SUBSETS))
    before = reserved(ws, 1, "first-")
    after = before.clone()
    spread.reserve_ahead(ws, after, VERSION, 3, now=T0, new_uid=iter(["x", "y", "z"]).__next__)
    spread.give_back(ws, after, VERSION, [spread.RESERVED_PREFIX + "first-0"])
    operations = statuspatch.ledger_patch(before, after, sole_writer=True)
    assert operations is not None
    patched = jsonpatch.apply_patch({"status": model.status_to_dict(before)}, operations)
    assert patched["status"] == model.status_to_dict(after)


def test_every_subset_count_of_the_version_is_tested_before_anything_changes() -> None:
    ws = model.parse(ws_dict(SUBSETS))
    before = reserved(ws, 1, "first-")
    after = before.clone()
    spread.reserve_ahead(ws, after, VERSION, 1, now=T0, new_uid=lambda: "x")
    operations = statuspatch.ledger_patch(before, after, sole_writer=True)
    assert operations is not None
    tests = [op["path"] for op in operations if op["op"] == "test"]
    assert tests == [f"/status/versionedSubsetStatuses/{VERSION}/{i}/{field}"
                     for i in range(3) for field in ("name", "missingReplicas")]
    assert all(op["op"] == "test" for op in operations[:len(tests)])


def test_a_change_beyond_entries_and_counts_falls_back_to_the_resource_version_precondition() -> None:
    ws = model.parse(ws_dict(SUBSETS))
    before = reserved(ws, 1, "first-")
    new_version = before.clone()
    spread.reserve_ahead(ws, new_version, "other-version", 1, now=T0, new_uid=lambda: "x")
    recounted = before.clone()
    recounted.versioned_subset_statuses[VERSION][0].replicas += 1
    emptied = before.clone()
    emptied.versioned_subset_statuses[VERSION][0].creating_pods.clear()
    assert statuspatch.ledger_patch(model.WorkloadSpreadStatus(), before, sole_writer=True) is None  # a first ledger
    assert statuspatch.ledger_patch(before, new_version, sole_writer=True) is None
    assert statuspatch.ledger_patch(before, recounted, sole_writer=True) is None
    assert statuspatch.ledger_patch(before, emptied, sole_writer=True) is None


def test_a_ledger_write_over_a_copy_read_before_the_reconciler_removed_settled_entries_still_lands(
    store: MemoryStore,
) -> None:
    """The reconciler's removal of the entries of pods that exist moves no count; before, it cost the
    ledger's write in flight a 409, a re-read and a second write."""
    read = newest(store)
    settled = spread.RESERVED_PREFIX + "first-0"
    store.drop_creating_entries(read, {VERSION: {"a": [settled]}})
    written = store.write_ledger(read, reserved(read, 2, "next-"), sole_writer=True)
    assert keys(written.status, 0) == {spread.RESERVED_PREFIX + "next-0", spread.RESERVED_PREFIX + "next-1"}
    assert written.status.versioned_subset_statuses[VERSION][0].missing_replicas == 0
    assert store.conflicts == 0


def test_a_ledger_write_decided_from_a_count_that_moved_since_is_a_conflict(store: MemoryStore) -> None:
    read = newest(store)
    store.write_ledger(read, reserved(read, 1, "other-"), sole_writer=False)  # another process took a slot meanwhile
    with pytest.raises(Conflict):
        store.write_ledger(read, reserved(read, 1, "ours-"), sole_writer=True)
    assert spread.RESERVED_PREFIX + "ours-0" not in keys(newest(store).status, 0)


def test_a_released_pod_is_recorded_by_a_patch_once_its_subset_has_deleting_entries(store: MemoryStore) -> None:
    leaving = [pod(f"p-{i}", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()})
               for i in range(2)]
    read = newest(store)
    first = read.status.clone()
    spread.release(read, first, leaving[0], now=T0)
    assert statuspatch.ledger_patch(read.status, first, sole_writer=True) is None  # the subset's first deletingPods
    read = store.write_ledger(read, first, sole_writer=True)
    second = read.status.clone()
    spread.release(read, second, leaving[1], now=T0)
    assert statuspatch.ledger_patch(read.status, second, sole_writer=True) is not None
    written = store.write_ledger(read, second, sole_writer=True)
    assert set(written.status.versioned_subset_statuses[VERSION][0].deleting_pods) == {"p-0", "p-1"}


def test_a_subsets_first_entries_are_patched_only_by_the_ledgers_sole_writer() -> None:
    """The whole-map ``add`` would replace a map another webhook process created meanwhile, unseen by the count
    test when that process also recorded a deletion in the subset: with another writer about, a resourceVersion
    precondition instead."""
    ws = model.parse(ws_dict(SUBSETS))
    before = reserved(ws, 3, "first-")  # subset "a" full, "b" without entries
    after = before.clone()
    spread.reserve_ahead(ws, after, VERSION, 1, now=T0, new_uid=lambda: "x")
    operations = statuspatch.ledger_patch(before, after, sole_writer=True)
    assert operations is not None
    assert {"op": "add", "path": f"/status/versionedSubsetStatuses/{VERSION}/1/creatingPods",
            "value": {spread.RESERVED_PREFIX + "x": model.format_time(T0)}} in operations
    assert statuspatch.ledger_patch(before, after, sole_writer=False) is None
