"""The live ledger on the API server: exact counts under concurrent bursts, across processes and crashes.

The workload is a CloneSet whose pods the test creates itself from many threads (there is no Kruise
controller here), so the burst's concurrency is the test's, not kube-controller-manager's. Every count is
checked on the pods themselves (the subset in each pod's ``apps.kruise.io/matched-workloadspread``
annotation), and the status is checked against the pods once the reconciler has run.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import pytest

from harness.controlplane import ControlPlane
from harness.install import Webhook, register, second_replica
from harness.tcpproxy import RoundRobinProxy
from tests.integration.conftest import DELETION_COST, CloneSetController, Kube, Obj, pod_subset

pytestmark = pytest.mark.controlplane

VK_TOLERATION = {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}


def _subset(name: str, pool: str, max_replicas: int | None) -> Obj:
    subset: Obj = {"name": name,
                   "requiredNodeSelectorTerm": {"matchExpressions": [
                       {"key": "spreadhook.io/pool", "operator": "In", "values": [pool]}]},
                   "patch": {"metadata": {"labels": {"subset": name}}}}
    if pool == "serverless":
        subset["tolerations"] = [VK_TOLERATION]
    if max_replicas is not None:
        subset["maxReplicas"] = max_replicas
    return subset


def _cloneset_and_spread(name: str, subsets: list[Obj], replicas: int = 0) -> list[Obj]:
    spread = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "WorkloadSpread", "metadata": {"name": name},
              "spec": {"targetRef": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": name},
                       "subsets": subsets}}
    cloneset = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "metadata": {"name": name},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                                               "resources": {"requests": {"cpu": "1m"}}}]}}}}
    return [spread, cloneset]


def _assert_status_matches_pods(kube: Kube, name: str) -> None:
    """Once the reconciler has caught up, the status says exactly what the pods say."""
    counts = {k: v for k, v in kube.subset_counts(f"app={name}").items() if k is not None}
    kube.wait_reconciled(name, counts, timeout=120)  # type: ignore[arg-type]


@pytest.fixture
def two_replicas_behind_a_proxy(spreadhook: Webhook, controlplane: ControlPlane) -> Iterator[RoundRobinProxy]:
    """A second ``spreadhook run`` process and a round-robin proxy in front of both, registered as the
    webhook; afterwards the first process alone is registered again and the second one is stopped."""
    replica = second_replica(spreadhook)
    proxy = RoundRobinProxy([spreadhook.port, replica.port]).start()
    ca = (spreadhook.cert_dir / "ca.crt").read_bytes()
    try:
        register(controlplane, f"https://127.0.0.1:{proxy.port}", ca)
        time.sleep(2)  # the apiserver's webhook informer picks the new URL up asynchronously
        yield proxy
    finally:
        register(controlplane, spreadhook.url, ca)
        time.sleep(2)
        proxy.stop()
        replica.stop()


def test_two_webhook_processes_admitting_one_burst_never_exceed_any_max(
    kube: Kube, two_replicas_behind_a_proxy: RoundRobinProxy
) -> None:
    limits = {"ecs-a": 150, "ecs-b": 150}
    kube.apply(_cloneset_and_spread("burst", [_subset("ecs-a", "ecs", 150), _subset("ecs-b", "ecs", 150),
                                              _subset("overflow", "serverless", None)]))
    controller = CloneSetController(kube, "burst")
    controller.scale_out(3000)  # the issue's burst size: two processes meeting at every subset boundary
    proxy = two_replicas_behind_a_proxy
    assert all(proxy.connections[port] > 0 for port in proxy.backends), proxy.connections
    counts = kube.subset_counts("app=burst")
    assert counts == {"ecs-a": 150, "ecs-b": 150, "overflow": 2700}, counts
    for subset, limit in limits.items():
        labelled = len(kube.active_pods(f"app=burst,subset={subset}"))
        assert labelled == limit, f"{subset}: {labelled} pods carry its patch, max is {limit}"
    _assert_status_matches_pods(kube, "burst")


def test_webhook_killed_with_sigkill_mid_burst_loses_no_count_once_reconciled(
    kube: Kube, spreadhook: Webhook
) -> None:
    kube.apply(_cloneset_and_spread("crash", [_subset("ecs", "ecs", 200), _subset("overflow", "serverless", None)]))
    controller = CloneSetController(kube, "crash")
    kube.scale("clonesets.apps.kruise.io/crash", 600)

    def killer() -> None:
        kube.wait(lambda: len(kube.pods("app=crash")), lambda n: n >= 150, "150 pods created", timeout=60)
        spreadhook.kill()
        time.sleep(1)
        spreadhook.start()

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        controller.create(600)
    finally:
        thread.join()
        if not spreadhook.alive():
            spreadhook.start()
    assert len(kube.active_pods("app=crash")) == 600
    # Pods created while no webhook answered (failurePolicy Ignore) went wherever the scheduler put them.
    # The reconciler adopts each one on an ECS node into `ecs` (as upstream does: it is physically there, even
    # past the max) and leaves the ones on other nodes in no subset; then the status says what the pods say,
    # and every pod beyond the max is priced to leave first.

    def unadopted() -> int:
        return sum(1 for p in kube.active_pods("app=crash")
                   if pod_subset(p) is None and p["spec"].get("nodeName", "").startswith("ecs-"))

    kube.wait(unadopted, lambda n: n == 0, "every pod on an ECS node adopted into ecs", timeout=90)
    _assert_status_matches_pods(kube, "crash")

    def cheap_and_extra() -> tuple[int, int]:
        """(pods priced to leave first, pods in ecs beyond its max): the reconciler patches the costs after
        the status write, so they follow it by a moment."""
        in_ecs = [p for p in kube.active_pods("app=crash") if pod_subset(p) == "ecs"]
        cheap = [p for p in in_ecs if int(p["metadata"]["annotations"].get(DELETION_COST, "0")) < 0]
        return len(cheap), max(0, len(in_ecs) - 200)

    kube.wait(cheap_and_extra, lambda v: v[0] == v[1], "every pod beyond ecs's max priced to leave first",
              timeout=60)


def test_server_side_dry_run_pod_creation_leaves_the_status_untouched(kube: Kube) -> None:
    kube.apply(_cloneset_and_spread("dry", [_subset("ecs", "ecs", 3), _subset("overflow", "serverless", None)]))
    controller = CloneSetController(kube, "dry")
    controller.scale_out(2)
    kube.wait_reconciled("dry", {"ecs": 2})
    before = kube.ws("dry")
    pod = controller._pod()
    out = kube.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod))
    assert '"subset": "ecs"' in out.stdout, "a dry run gets the same answer as a real admission"
    time.sleep(3)  # long enough for a ledger write or a reconcile to have landed
    after = kube.ws("dry")
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert len(kube.pods("app=dry")) == 2


def test_workloadspread_edited_mid_life_converges_on_the_new_subsets_and_limits(kube: Kube) -> None:
    docs = _cloneset_and_spread("edit", [_subset("ecs", "ecs", 5), _subset("overflow", "serverless", None)])
    kube.apply(docs)
    controller = CloneSetController(kube, "edit")
    controller.scale_out(8)
    kube.wait_counts("app=edit", {"ecs": 5, "overflow": 3})
    kube.wait_reconciled("edit", {"ecs": 5, "overflow": 3})

    # lower ecs to 3 and insert a new subset before overflow
    docs[0]["spec"]["subsets"] = [_subset("ecs", "ecs", 3), _subset("idc", "idc", 2),
                                  _subset("overflow", "serverless", None)]
    kube.apply(docs[0])
    ws = kube.wait_reconciled("edit", {"ecs": 5, "overflow": 3})
    missing = {s["name"]: s["missingReplicas"] for s in ws["status"]["subsetStatuses"]}
    assert missing == {"ecs": 0, "idc": 2, "overflow": -1}
    # ecs's 2 pods over the new max are priced to leave first among ecs's pods
    kube.wait(lambda: sorted(int((p["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
                             for p in kube.active_pods("app=edit") if pod_subset(p) == "ecs"),
              lambda c: sum(1 for x in c if x < 0) == 2, "2 ecs pods with a negative deletion cost")
    controller.scale_out(11)
    kube.wait_counts("app=edit", {"ecs": 5, "idc": 2, "overflow": 4})
    kube.wait_reconciled("edit", {"ecs": 5, "idc": 2, "overflow": 4})


def test_a_v1alpha1_apply_is_restated_in_v1beta1_managed_fields_and_a_later_apply_still_works(kube: Kube) -> None:
    docs = _cloneset_and_spread("restate", [_subset("ecs", "ecs", 2), _subset("overflow", "serverless", None)])
    kube.apply(docs)

    def managers(ws: Obj) -> dict[str, Obj]:
        return {f"{m['manager']}/{m.get('subresource', '')}": m for m in ws["metadata"]["managedFields"]}

    ws = kube.wait(lambda: kube.ws("restate"), lambda w: w.get("status") and all(
        m["apiVersion"] == "apps.kruise.io/v1beta1" for m in w["metadata"]["managedFields"]),
        "every managedFields entry in v1beta1")
    applied = managers(ws)["kubectl-client-side-apply/"]
    assert "f:subsets" in applied["fieldsV1"]["f:spec"], "kubectl still owns what it applied"
    assert "NodeSelectorTerm" not in json.dumps(applied["fieldsV1"])
    assert "spreadhook/status" in managers(ws), "the ledger's writes are named after spreadhook"

    # The user keeps applying v1alpha1 manifests: raising ecs's max takes effect, and is restated again.
    docs[0]["spec"]["subsets"][0]["maxReplicas"] = 3
    kube.apply(docs[0])
    CloneSetController(kube, "restate").scale_out(4)
    kube.wait_counts("app=restate", {"ecs": 3, "overflow": 1})
    kube.wait(lambda: kube.ws("restate"), lambda w: all(
        m["apiVersion"] == "apps.kruise.io/v1beta1" for m in w["metadata"]["managedFields"]),
        "the new v1alpha1 entry restated too")


def test_pods_that_existed_before_the_workloadspread_are_adopted_into_the_subset_of_their_node(kube: Kube) -> None:
    docs = _cloneset_and_spread("early", [_subset("ecs", "ecs", 10), _subset("overflow", "serverless", None)])
    kube.apply(docs[1])
    controller = CloneSetController(kube, "early")
    controller.create(3, {"nodeSelector": {"spreadhook.io/pool": "ecs"}})
    controller.create(2, {"nodeSelector": {"spreadhook.io/pool": "serverless"}, "tolerations": [VK_TOLERATION]})
    kube.wait(lambda: kube.active_pods("app=early"), lambda ps: len(ps) == 5 and all(
        p["spec"].get("nodeName") for p in ps), "5 pods bound")
    assert kube.subset_counts("app=early") == {None: 5}
    kube.apply(docs[0])
    kube.wait_counts("app=early", {"ecs": 3, "overflow": 2})
    kube.wait_reconciled("early", {"ecs": 3, "overflow": 2})
    for pod in kube.active_pods("app=early"):
        assert pod["metadata"]["annotations"][DELETION_COST] == ("200" if pod_subset(pod) == "ecs" else "100")
