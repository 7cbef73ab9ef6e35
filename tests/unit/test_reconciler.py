"""The reconciler's I/O decisions on an in-memory store: which pod list a slot may be given back on."""

from __future__ import annotations

import datetime as dt

import pytest

from spreadhook import model, spread
from spreadhook.model import Obj, WorkloadSpread
from spreadhook.reconciler import FRESH_LIST_INTERVAL_SECONDS, Reconciler
from spreadhook.store import MemoryStore, StoreError
from tests.unit.factories import T0, pod, ws_dict

LIMITED = [{"name": "a", "maxReplicas": 1}, {"name": "b"}]


class LaggingCache(MemoryStore):
    """A store whose cached pod list has not yet delivered the pods named in ``unseen``, as a watch that
    lags under a burst; ``fresh_pods`` reads past the cache and sees every pod."""

    def __init__(self, unseen: set[str]) -> None:
        super().__init__()
        self.unseen = unseen
        self.fresh_lists = 0

    def pods(self, namespace: str) -> list[Obj]:
        return [p for p in super().pods(namespace) if p["metadata"]["name"] not in self.unseen]

    def fresh_pods(self, namespace: str) -> list[Obj]:
        self.fresh_lists += 1
        return super().pods(namespace)


def _store_with_old_reservation(unseen: set[str]) -> LaggingCache:
    """Subset ``a`` (max 1) holds one ``creatingPods`` entry older than the create timeout, for pod ``p``."""
    store = LaggingCache(unseen)
    stamp = model.format_time(T0 - spread.CREATE_TIMEOUT - dt.timedelta(seconds=5))
    ledger = [{"name": "a", "replicas": 0, "missingReplicas": 0, "creatingPods": {"p": stamp}},
              {"name": "b", "replicas": 0, "missingReplicas": -1}]
    store.apply_workload_spread(ws_dict(LIMITED))
    ws = store.workload_spread("default", "ws")
    assert ws is not None
    store.write_status(ws, model.parse(ws_dict(LIMITED, status={
        "observedGeneration": 1, "subsetStatuses": ledger,
        "versionedSubsetStatuses": {model.VERSION_IGNORED: ledger}})).status)
    store.apply_workload({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                          "metadata": {"name": "app", "namespace": "default"}, "spec": {"replicas": 2}})
    return store


def _subset_a(store: MemoryStore) -> model.SubsetStatus:
    ws = store.workload_spread("default", "ws")
    assert ws is not None
    return next(s for s in ws.status.subset_statuses if s.name == "a")


def test_a_slot_is_not_given_back_for_a_pod_the_lagging_cache_has_not_delivered_yet() -> None:
    store = _store_with_old_reservation(unseen={"p"})
    store.put_pod(pod("p", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()}))
    Reconciler(store, clock=lambda: T0).sync("default", "ws")
    a = _subset_a(store)
    assert (a.replicas, a.missing_replicas, a.creating_pods) == (1, 0, {})
    assert store.fresh_lists == 1


def test_a_slot_whose_pod_never_appeared_is_given_back_after_the_fresh_list_confirms_it() -> None:
    store = _store_with_old_reservation(unseen=set())
    Reconciler(store, clock=lambda: T0).sync("default", "ws")
    a = _subset_a(store)
    assert (a.replicas, a.missing_replicas, a.creating_pods) == (0, 1, {})
    assert store.fresh_lists == 1
    assert any(reason == "CreatePodFailed" for _, _, reason, _ in store.events)


class CountingReconciler(Reconciler):
    """Counts its plans: each is a pass over every pod of the workload."""

    plans = 0

    def plan(self, ws: WorkloadSpread, pods: list[Obj], *, workload_replicas: int | None = None,
             expire_creations: bool = True) -> spread.ReconcilePlan:
        self.plans += 1
        return super().plan(ws, pods, workload_replicas=workload_replicas, expire_creations=expire_creations)


def test_within_the_fresh_list_interval_a_slot_is_held_in_one_plan_rather_than_given_back_on_the_lagging_cache(
) -> None:
    """The second expiry within ``FRESH_LIST_INTERVAL_SECONDS`` gets no LIST of its own; were the plan from
    the cache used then, the slot of a pod that exists but is not delivered yet would be given back. Holding
    it takes one plan, not one to find the expiry and another to hold it."""
    store = _store_with_old_reservation(unseen=set())
    reconciler = CountingReconciler(store, clock=lambda: T0)
    reconciler.sync("default", "ws")  # the first expiry, confirmed by a LIST: ``p`` never existed
    assert reconciler.plans == 2, "a plan on the cache, then one on the LIST"
    ws = store.workload_spread("default", "ws")
    assert ws is not None
    stamp = model.format_time(T0 - spread.CREATE_TIMEOUT - dt.timedelta(seconds=1))
    ledger = [{"name": "a", "replicas": 0, "missingReplicas": 0, "creatingPods": {"r": stamp}},
              {"name": "b", "replicas": 0, "missingReplicas": -1}]
    store.write_status(ws, model.parse(ws_dict(LIMITED, status={
        "observedGeneration": 1, "subsetStatuses": ledger,
        "versionedSubsetStatuses": {model.VERSION_IGNORED: ledger}})).status)
    store.unseen = {"r"}
    store.put_pod(pod("r", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()}))

    result = reconciler.sync("default", "ws")
    a = _subset_a(store)
    assert (a.missing_replicas, set(a.creating_pods)) == (0, {"r"}), "the slot is still held for r"
    assert store.fresh_lists == 1
    assert reconciler.plans == 3, "one plan for the second sync"
    assert result is not None and result.requeue_after is not None
    assert 0 < result.requeue_after <= FRESH_LIST_INTERVAL_SECONDS, "and the sync comes back when a LIST is due"


def test_no_fresh_list_is_made_when_no_slot_is_given_back() -> None:
    store = LaggingCache(unseen=set())
    store.apply_workload_spread(ws_dict(LIMITED))
    store.apply_workload({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                          "metadata": {"name": "app", "namespace": "default"}, "spec": {"replicas": 1}})
    store.put_pod(pod("q", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()}))
    Reconciler(store, clock=lambda: T0).sync("default", "ws")
    assert _subset_a(store).replicas == 1
    assert store.fresh_lists == 0


def test_v1alpha1_managed_fields_are_restated_once_and_the_status_still_written() -> None:
    store = LaggingCache(unseen=set())
    alpha_entry = {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": model.V1ALPHA1,
                   "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:subsets": {}}}}
    doc = ws_dict(LIMITED)
    doc["metadata"]["managedFields"] = [alpha_entry]
    store.apply_workload_spread(doc)
    store.apply_workload({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                          "metadata": {"name": "app", "namespace": "default"}, "spec": {"replicas": 1}})
    reconciler = Reconciler(store, clock=lambda: T0)
    reconciler.sync("default", "ws")
    restated = store.workload_spread("default", "ws")
    assert restated is not None
    assert [e["apiVersion"] for e in restated.metadata["managedFields"]] == [model.V1BETA1]
    assert restated.status.observed_generation == 1
    version = restated.resource_version
    reconciler.sync("default", "ws")
    after = store.workload_spread("default", "ws")
    assert after is not None and after.resource_version == version, "nothing left to restate or to write"


class LedgerAlwaysWritesFirst(MemoryStore):
    """The webhook's ledger, under a burst, lands a write between each read and write of the reconciler: every
    preconditioned status write of the reconciler meets a 409, while its JSON patches are applied."""

    def write_status(self, ws: WorkloadSpread, status: model.WorkloadSpreadStatus) -> WorkloadSpread:
        current = self.workload_spread(ws.namespace, ws.name)
        assert current is not None
        super().write_status(current, current.status)  # the ledger's write bumps the resourceVersion
        return super().write_status(ws, status)


def _ledger_with_entries_and_their_pods(store: MemoryStore) -> None:
    """Subset ``a`` holds entries for two pods given reserved slots, a named pod, and a pod not created yet;
    ``b`` holds a reserved slot whose key a pod carries for ``a`` (which does not settle it)."""
    now = model.format_time(T0)
    ledger = [{"name": "a", "replicas": 0, "missingReplicas": 7,
               "creatingPods": {"reserved-1": now, "reserved-2": now, "p-named": now, "p-not-yet": now}},
              {"name": "b", "replicas": 0, "missingReplicas": -1, "creatingPods": {"reserved-3": now}}]
    store.apply_workload_spread(ws_dict([{"name": "a", "maxReplicas": 10}, {"name": "b"}]))
    ws = store.workload_spread("default", "ws")
    assert ws is not None
    MemoryStore.write_status(store, ws, model.parse(ws_dict(LIMITED, status={
        "versionedSubsetStatuses": {model.VERSION_IGNORED: ledger}})).status)
    for name, key in (("p-1", "reserved-1"), ("p-2", "reserved-2"), ("p-3", "reserved-3"), ("p-named", "")):
        matched = spread.Matched("ws", "a", key).to_annotation()
        store.put_pod(pod(name, annotations={spread.MATCHED_ANNOTATION: matched}))


def _entries_and_counts(store: MemoryStore) -> tuple[set[str], set[str], tuple[int, int]]:
    after = store.workload_spread("default", "ws")
    assert after is not None
    a, b = after.status.versioned_subset_statuses[model.VERSION_IGNORED]
    return set(a.creating_pods), set(b.creating_pods), (a.missing_replicas, b.missing_replicas)


def test_a_reconciler_that_keeps_losing_to_the_ledger_still_removes_the_entries_of_pods_that_exist() -> None:
    """Entries stayed in the status until the burst ended, and every ledger write carried them all."""
    store = LedgerAlwaysWritesFirst()
    _ledger_with_entries_and_their_pods(store)
    with pytest.raises(StoreError, match="kept conflicting"):  # its full write never lands here
        Reconciler(store, clock=lambda: T0).sync("default", "ws")
    # the slots stay taken: their pods hold them
    assert _entries_and_counts(store) == ({"p-not-yet"}, {"reserved-3"}, (7, -1))


def test_settling_removes_only_the_entries_of_pods_that_exist_and_moves_no_count() -> None:
    """What ``Controller`` runs every second between syncs: the status of a burst held up to 2,000 entries."""
    store = MemoryStore()
    _ledger_with_entries_and_their_pods(store)
    reconciler = Reconciler(store, clock=lambda: T0)
    assert reconciler.settle("default", "ws") == 3
    assert reconciler.settle("default", "ws") == 0
    assert _entries_and_counts(store) == ({"p-not-yet"}, {"reserved-3"}, (7, -1))


def test_a_pod_the_reconciler_does_not_count_yet_does_not_settle_its_entry() -> None:
    """A pod whose owner chain does not reach the workload (here a ReplicaSet the cache has not delivered)
    exists, but no sync counts it: without its entry, its slot would look free and be given to another pod."""
    store = MemoryStore()
    _ledger_with_entries_and_their_pods(store)
    uncounted = pod("p-not-yet", owner_kind="ReplicaSet", owner_name="app-6f7d9",
                    annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a").to_annotation()})
    store.put_pod(uncounted)
    assert Reconciler(store, clock=lambda: T0).settle("default", "ws") == 3
    assert _entries_and_counts(store) == ({"p-not-yet"}, {"reserved-3"}, (7, -1))
