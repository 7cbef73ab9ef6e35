"""Pod admission when the ledger cannot record a pod in time: where it goes, and what the webhook says."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from spreadhook import admission, model, spread
from spreadhook.ledger import MAX_RESERVED, Ledger
from spreadhook.model import Obj, WorkloadSpreadStatus
from spreadhook.store import MemoryStore, NotFound
from tests.unit.factories import pod, ws_dict

WORKLOAD = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "app", "namespace": "default"}, "spec": {"replicas": 10}}


class AnotherWriterAlwaysWins(MemoryStore):
    """Every status write meets a 409: another writer bumped the resourceVersion just before."""

    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self._doc = doc
        self.apply_workload_spread(doc)

    def write_status(self, ws: Any, status: Any) -> Any:
        self.apply_workload_spread(self._doc)
        return super().write_status(ws, status)


def webhook_over(subsets: list[dict[str, Any]]) -> admission.Webhook:
    store = AnotherWriterAlwaysWins(ws_dict(subsets))
    store.apply_workload(WORKLOAD)
    return admission.Webhook(store, Ledger(store), budget_seconds=0.3)


class DeletedOnTheServer(MemoryStore):
    """The cache still holds the WorkloadSpread, but the API server has deleted it (with its namespace, say):
    every status write and fresh read finds nothing."""

    def write_status(self, ws: model.WorkloadSpread, status: WorkloadSpreadStatus) -> model.WorkloadSpread:
        raise NotFound(f"WorkloadSpread {ws.key} not found")

    def patch_status(self, ws: model.WorkloadSpread, operations: list[Obj]) -> model.WorkloadSpread:
        raise NotFound(f"WorkloadSpread {ws.key} not found")

    def fresh_workload_spread(self, namespace: str, name: str) -> model.WorkloadSpread | None:
        return None


def review(webhook: admission.Webhook, operation: str, obj: Any, old: Any = None) -> admission.Verdict:
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "operation": operation, "namespace": "default",
                        "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"},
                        "object": obj, "oldObject": old, "dryRun": False}}
    return webhook.pods(admission.parse_review(json.dumps(body).encode()))


def create(webhook: admission.Webhook, name: str) -> admission.Verdict:
    return review(webhook, "CREATE", pod(name))


def webhook_after_deletion() -> admission.Webhook:
    store = DeletedOnTheServer()
    status = {"versionedSubsetStatuses": {spread.pod_version(pod()): [
        {"name": "local", "replicas": 1, "missingReplicas": 4},
        {"name": "cloud", "replicas": 0, "missingReplicas": -1}]}}
    store.apply_workload_spread(ws_dict([{"name": "local", "maxReplicas": 5}, {"name": "cloud"}], status=status))
    store.apply_workload(WORKLOAD)
    return admission.Webhook(store, Ledger(store), budget_seconds=0.3)


def test_a_pod_created_just_after_its_workloadspread_was_deleted_is_admitted_unchanged_with_a_warning() -> None:
    verdict = create(webhook_after_deletion(), "app-0")

    assert verdict.outcome == "ignored"
    assert not verdict.patch
    assert verdict.warnings and "was deleted meanwhile" in verdict.warnings[0]


def test_deleting_a_pod_whose_workloadspread_is_already_gone_is_allowed_without_a_release() -> None:
    leaving = pod("app-0", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "local").to_annotation()})

    verdict = review(webhook_after_deletion(), "DELETE", None, old=leaving)

    assert verdict.outcome == "ignored"
    assert not verdict.warnings


def test_a_pod_whose_slot_cannot_be_recorded_in_time_goes_to_the_first_subset_without_a_max() -> None:
    webhook = webhook_over([{"name": "local", "maxReplicas": 5}, {"name": "cloud", "maxReplicas": 5},
                            {"name": "serverless"}])
    verdict = create(webhook, "app-0")
    assert verdict.subset == "serverless"
    assert verdict.outcome == "fallback"
    assert verdict.warnings and "no max" in verdict.warnings[0]
    annotation = next(op["value"] for op in verdict.patch if op["path"].startswith("/metadata/annotations"))
    matched = annotation if isinstance(annotation, str) else annotation[spread.MATCHED_ANNOTATION]
    assert '"subset":"serverless"' in matched.replace(" ", "")


def test_a_subset_without_a_max_marked_unschedulable_is_not_a_fallback() -> None:
    unschedulable = {"type": "Schedulable", "status": "False", "reason": "PodUnschedulable", "message": "",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}
    doc = ws_dict([{"name": "local", "maxReplicas": 5}, {"name": "spot"}, {"name": "serverless"}],
                  status={"versionedSubsetStatuses": {"versionIgnored": [
                      {"name": "local", "replicas": 0, "missingReplicas": 5},
                      {"name": "spot", "replicas": 0, "missingReplicas": -1, "conditions": [unschedulable]},
                      {"name": "serverless", "replicas": 0, "missingReplicas": -1}]}})
    chosen = spread.admit_unlimited(model.parse(doc), pod("app-0"), workload_replicas=10)
    assert chosen is not None and chosen.subset is not None
    assert chosen.subset.name == "serverless" and not chosen.changed


def test_without_a_subset_without_a_max_the_webhook_cannot_decide_and_failure_policy_applies() -> None:
    webhook = webhook_over([{"name": "local", "maxReplicas": 5}, {"name": "cloud", "maxReplicas": 5}])
    with pytest.raises(admission.Unavailable, match="cannot record the pod in the ledger"):
        create(webhook, "app-0")


@pytest.mark.parametrize(("timeout", "decides_within"), [(None, 8.0), (5.0, 4.0), (10.0, 8.0), (1.0, 0.5)])
def test_a_decision_keeps_a_second_of_kube_apiservers_timeout_for_the_answer_to_arrive(
    timeout: float | None, decides_within: float
) -> None:
    store = MemoryStore()
    webhook = admission.Webhook(store, Ledger(store))
    assert webhook._time_to_decide(timeout) == decides_within


def test_a_workload_scaling_out_has_slots_reserved_before_its_first_pod_arrives() -> None:
    """The first pods of a burst arrive while its first write is made; reserved on the scale-out itself,
    they find slots waiting. A workload scaling in reserves nothing."""
    store = MemoryStore()
    store.apply_workload_spread(ws_dict([{"name": "a", "maxReplicas": 100}, {"name": "b"}]))
    webhook = admission.Webhook(store, Ledger(store, reserve=True))
    store.subscribe_workloads(webhook.workload_changed)
    store.apply_workload(WORKLOAD)
    store.apply_workload({**WORKLOAD, "spec": {"replicas": 5}})

    def held() -> set[str]:
        current = store.workload_spread("default", "ws")
        assert current is not None
        entries = current.status.versioned_subset_statuses.get(model.VERSION_IGNORED)
        return set(entries[0].creating_pods) if entries else set()

    assert held() == set(), "no slot for a scale-in"
    store.apply_workload({**WORKLOAD, "spec": {"replicas": 60}, "status": {"replicas": 10}})
    deadline = time.monotonic() + 5
    while not held() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(held()) == 50 and all(key.startswith(spread.RESERVED_PREFIX) for key in held())
    writes = store.status_writes
    verdict = create(webhook, "p-1")
    assert verdict.subset == "a" and store.status_writes == writes, "the pod took a slot without a write"


def test_a_scale_out_keeps_its_slots_topped_up_until_the_pods_it_announced_have_taken_them() -> None:
    """Early in a burst the arrival rate is still being measured and sized refills far too small (33 slots
    where 200 pods a second came, in a traced C=64 burst); the scale-out's own count keeps the slots held at
    ``MAX_RESERVED`` instead, while that many pods are still to come."""
    store = MemoryStore()
    store.apply_workload_spread(ws_dict([{"name": "a", "maxReplicas": 5000}, {"name": "b"}]))
    webhook = admission.Webhook(store, Ledger(store, reserve=True))
    store.subscribe_workloads(webhook.workload_changed)
    store.apply_workload(WORKLOAD)
    store.apply_workload({**WORKLOAD, "spec": {"replicas": 3000}, "status": {"replicas": 1000}})

    def entries() -> int:
        current = store.workload_spread("default", "ws")
        assert current is not None
        held = current.status.versioned_subset_statuses.get(model.VERSION_IGNORED)
        return len(held[0].creating_pods) if held else 0

    def reaches(count: int) -> bool:
        deadline = time.monotonic() + 0.5  # the slots nobody takes for a second are given back
        while entries() < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return entries() >= count

    assert reaches(MAX_RESERVED), "the scale-out's first slots"
    for i in range(200):
        assert create(webhook, f"p-{i}").subset == "a"
    # A refill is asked for when a quarter of the slots held are gone. Without the announced count, 200 pods
    # in a second sized the target at 200, and the 312 slots left were plenty: no refill.
    assert reaches(200 + 3 * MAX_RESERVED // 4), "the 200 taken stay recorded, and the slots held were topped up"
