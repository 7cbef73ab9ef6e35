"""KubeStore's watch-fed cache on the real API server: what the ledger relies on after a conflict."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from harness.controlplane import ControlPlane
from spreadhook import model, spread
from spreadhook.kubestore import ApiConnection, KubeStore
from spreadhook.model import SubsetStatus, WorkloadSpread, WorkloadSpreadStatus
from spreadhook.store import Conflict
from tests.integration.conftest import Kube

pytestmark = pytest.mark.controlplane


@pytest.fixture
def watching_store(controlplane: ControlPlane) -> Iterator[KubeStore]:
    api = controlplane.api_client()
    store = KubeStore(ApiConnection(api.configuration), pods=False)
    store.start()
    yield store
    store.stop()
    api.close()


def test_workload_spread_after_returns_another_clients_write_from_the_watch_and_waits_when_none_comes(
    kube: Kube, watching_store: KubeStore
) -> None:
    """After a conflict the ledger asks the cache for the version that beat it instead of reading it afresh:
    another client's status write must arrive through the watch, and a version that never comes must make
    the call wait for its timeout and say None (the ledger then reads afresh)."""
    kube.apply([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "WorkloadSpread", "metadata": {"name": "w"},
                 "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
                          "subsets": [{"name": "a", "maxReplicas": 3}]}}])
    kube.wait_reconciled("w", {})
    other = KubeStore(watching_store.api, pods=False)  # a cache of its own: ours learns only by the watch
    current = other.fresh_workload_spread(kube.ns, "w")
    assert current is not None
    status = current.status.clone()
    status.subset_statuses[0].missing_replicas -= 1  # a change the reconciler repairs later
    written = other.write_status(current, status)

    newer = watching_store.workload_spread_after(kube.ns, "w", current.resource_version, timeout=10)
    assert newer is not None, "the watch brought no newer version within 10 s"
    assert int(newer.resource_version) >= int(written.resource_version)

    started = time.monotonic()
    never = str(int(newer.resource_version) + 10**9)
    assert watching_store.workload_spread_after(kube.ns, "w", never, timeout=0.3) is None
    assert time.monotonic() - started >= 0.3


def test_a_ledger_patch_lands_over_a_removal_of_settled_entries_and_conflicts_once_a_count_moved(
    kube: Kube, watching_store: KubeStore
) -> None:
    """kube-apiserver applies ``write_ledger``'s JSON patch to its newest status: the reconciler's removal
    of the entries of pods that exist (which moves no count) no longer costs the ledger's write a 409, while
    a write decided from a count that moved since still fails, and changes nothing."""
    kube.apply([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "WorkloadSpread", "metadata": {"name": "l"},
                 "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "l"},
                          "subsets": [{"name": "a", "maxReplicas": 5}, {"name": "b"}]}}])
    kube.wait_reconciled("l", {})
    uids = (str(i) for i in range(100))

    def reserving(ws: WorkloadSpread, count: int) -> WorkloadSpreadStatus:
        status = ws.status.clone()
        spread.reserve_ahead(ws, status, model.VERSION_IGNORED, count, now=dt.datetime.now(dt.UTC),
                             new_uid=lambda: next(uids))
        return status

    def held(ws: WorkloadSpread) -> SubsetStatus:
        return ws.status.versioned_subset_statuses[model.VERSION_IGNORED][0]

    read = watching_store.fresh_workload_spread(kube.ns, "l")
    assert read is not None
    read = watching_store.write_ledger(read, reserving(read, 2), sole_writer=True)  # a first ledger: a PUT
    settled, kept = sorted(held(read).creating_pods)
    watching_store.drop_creating_entries(read, {model.VERSION_IGNORED: {"a": [settled]}})

    written = watching_store.write_ledger(read, reserving(read, 1), sole_writer=True)  # over the copy from before
    assert set(held(written).creating_pods) == {kept, f"{spread.RESERVED_PREFIX}2"}
    assert held(written).missing_replicas == 2

    with pytest.raises(Conflict):
        watching_store.write_ledger(read, reserving(read, 1), sole_writer=True)  # its count of "a" moved from 3 to 2
    newest = watching_store.fresh_workload_spread(kube.ns, "l")
    assert newest is not None and f"{spread.RESERVED_PREFIX}3" not in held(newest).creating_pods
