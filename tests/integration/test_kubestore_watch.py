"""KubeStore's watch-fed cache on the real API server: what the ledger relies on after a conflict."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from harness.controlplane import ControlPlane
from spreadhook.kubestore import ApiConnection, KubeStore
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
