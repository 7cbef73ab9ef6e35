"""Workload kinds on plain dicts: how many pods a workload has yet to create."""

from __future__ import annotations

from typing import Any

from spreadhook import model, workloads
from tests.unit.factories import ws


def workload(kind: str, api_version: str = "apps/v1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "w", "namespace": "default"},
            "spec": spec, "status": {}}


def spread() -> model.WorkloadSpread:
    return ws([{"name": "a", "maxReplicas": 10}])


def test_pods_to_come_is_wanted_replicas_less_those_the_controller_reported() -> None:
    cloneset = workload("CloneSet", "apps.kruise.io/v1alpha1", replicas=3000)
    cloneset["status"] = {"replicas": 1000}
    assert workloads.pods_to_come(spread(), cloneset) == 2000


def test_pods_to_come_counts_a_jobs_parallelism_against_its_active_pods() -> None:
    job = workload("Job", "batch/v1", parallelism=50)
    job["status"] = {"active": 20, "replicas": 999}
    assert workloads.pods_to_come(spread(), job) == 30


def test_a_scaled_in_or_missing_workload_has_no_pods_to_come() -> None:
    deployment = workload("Deployment", replicas=5)
    deployment["status"] = {"replicas": 8}
    assert workloads.pods_to_come(spread(), deployment) == 0
    assert workloads.pods_to_come(spread(), None) == 0


def test_a_statefulset_creating_pods_in_order_has_none_to_come_at_once_unless_parallel() -> None:
    assert workloads.pods_to_come(spread(), workload("StatefulSet", replicas=100)) == 0
    parallel = workload("StatefulSet", replicas=100, podManagementPolicy="Parallel")
    assert workloads.pods_to_come(spread(), parallel) == 100
