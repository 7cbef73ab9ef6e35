"""The five scenarios of DESIGN.md, end to end on the real control plane.

Each test applies ``deploy/examples/<file>`` with ``kubectl apply -n NS -f`` and scales with ``kubectl
scale``, as README tells users. Deployments are scaled by the real kube-controller-manager (whose ReplicaSet
controller honours ``controller.kubernetes.io/pod-deletion-cost``, so the scale-in order is the real one)
and bound by the real kube-scheduler onto the kwok nodes of docs/test-cluster-nodes.md. There is no Kruise
controller, so the CloneSet scenario plays the CloneSet controller itself. Counts are checked on the pods
after every step, and on the WorkloadSpread status once the reconciler has caught up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import pytest
from kubernetes import client

from tests.integration.conftest import DELETION_COST, CloneSetController, Kube, Obj, pod_subset

pytestmark = pytest.mark.controlplane

IDC_NODES = ("idc-1", "idc-2")


def _labels(pods: Iterable[Obj], key: str) -> Counter[str | None]:
    return Counter((p["metadata"].get("labels") or {}).get(key) for p in pods)


def _env(pod: Obj, container: str, name: str) -> str | None:
    for c in pod["spec"]["containers"]:
        if c["name"] == container:
            return next((e.get("value") for e in c.get("env") or [] if e["name"] == name), None)
    return None


def _wait_idc_nodes_free(kube: Kube) -> None:
    """The IDC nodes' 8 CPUs are this scenario's capacity: wait until other tests' namespaces (deleted in
    the background) no longer hold pods there."""

    def others() -> list[str]:
        found = []
        for node in IDC_NODES:
            reply = client.CoreV1Api(kube.api).list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node}",
                                                                           _preload_content=False)
            found += [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in json.loads(reply.data)["items"]
                      if p["metadata"]["namespace"] != kube.ns
                      and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        return found

    kube.wait(others, lambda pods: not pods, "IDC nodes free of other tests' pods", timeout=60)


# ------------------------------------------------------------------------------------------ scenario 2


def test_sidecar_scale_8_to_12_puts_the_4_new_pods_in_the_cloud_with_the_sidecar_label(kube: Kube) -> None:
    kube.apply_example("sidecar-on-cloud.yaml")
    kube.wait_counts("app=accel-app", {"local": 8})
    first = {p["metadata"]["name"]: p for p in kube.active_pods("app=accel-app")}
    assert _labels(first.values(), "needs-acceleration-sidecar") == {"false": 8}

    kube.scale("deployment/accel-app", 12)
    kube.wait_counts("app=accel-app", {"local": 8, "aliyun-acs": 4})
    pods = kube.wait(lambda: kube.active_pods("app=accel-app"),
                     lambda ps: all(p["spec"].get("nodeName") and (p["metadata"].get("annotations") or {}).get(
                         DELETION_COST) for p in ps),
                     "12 pods bound and carrying a deletion cost")
    now = {p["metadata"]["name"]: p for p in pods}
    assert set(first) <= set(now), "scaling out must not touch the first 8 pods"
    for name, pod in now.items():
        labels = pod["metadata"]["labels"]
        node = pod["spec"]["nodeName"]
        if name in first:
            assert (pod_subset(pod), labels["needs-acceleration-sidecar"]) == ("local", "false")
            assert node in IDC_NODES
            assert pod["metadata"]["annotations"][DELETION_COST] == "200"
        else:
            assert (pod_subset(pod), labels["needs-acceleration-sidecar"]) == ("aliyun-acs", "true")
            assert node == "vk-acs"
            assert pod["metadata"]["annotations"][DELETION_COST] == "100"
    kube.wait_reconciled("accel-app", {"local": 8, "aliyun-acs": 4})
    printed = kube.status_cli("accel-app")
    assert [line.split()[:3] for line in printed.splitlines()[2:]] == [["local", "8", "0"],
                                                                       ["aliyun-acs", "4", "unlimited"]]

    # Scale-in in reverse subset order: kcm's ReplicaSet controller deletes the cheapest pods first.
    kube.scale("deployment/accel-app", 8)
    kube.wait_counts("app=accel-app", {"local": 8})
    assert {p["metadata"]["name"] for p in kube.active_pods("app=accel-app")} == set(first)
    kube.wait_reconciled("accel-app", {"local": 8})


# ------------------------------------------------------------------------------------------ scenario 3


def test_idc_full_moves_unschedulable_pods_to_serverless_after_reschedule_critical_seconds(kube: Kube) -> None:
    _wait_idc_nodes_free(kube)
    kube.apply_example("idc-then-serverless.yaml")
    kube.wait(lambda: kube.active_pods("app=idc-burst"),
              lambda ps: len(ps) == 4 and all(p["status"].get("phase") == "Running" for p in ps), "4 pods Running")
    assert kube.subset_counts("app=idc-burst") == {"idc": 4}

    kube.scale("deployment/idc-burst", 12)
    # 8 CPUs in IDC, 1 CPU per pod: 4 pods stay Pending until the reconciler gives up on them (10 s), deletes
    # them, and the ReplicaSet re-creates them into acs-serverless.
    pods = kube.wait(
        lambda: kube.active_pods("app=idc-burst"),
        lambda ps: Counter(pod_subset(p) for p in ps) == {"idc": 8, "acs-serverless": 4}
        and all(p["status"].get("phase") == "Running" for p in ps),
        "8 Running in idc and 4 Running in acs-serverless", timeout=120)
    for pod in pods:
        if pod_subset(pod) == "idc":
            assert pod["spec"]["nodeName"] in IDC_NODES
            assert _env(pod, "app", "APP_RUNTIME_MODE") == "IDC"
        else:
            assert pod["spec"]["nodeName"] == "vk-acs"
            assert _env(pod, "app", "APP_RUNTIME_MODE") == "SERVERLESS"
    ws = kube.wait_reconciled("idc-burst", {"idc": 8, "acs-serverless": 4})
    idc = next(s for s in ws["status"]["subsetStatuses"] if s["name"] == "idc")
    schedulable = [c for c in idc.get("conditions") or [] if c["type"] == "Schedulable"]
    assert schedulable and schedulable[0]["status"] == "False", idc
    events = client.CoreV1Api(kube.api).list_namespaced_event(kube.ns).items
    assert any(e.involved_object.kind == "WorkloadSpread" and e.involved_object.name == "idc-burst"
               for e in events), "rescheduling must be visible to users as Events on the WorkloadSpread"


# ------------------------------------------------------------------------------------------ scenario 4


def test_zones_percent_keeps_50_25_25_after_each_scale_step_and_on_scale_in(kube: Kube) -> None:
    kube.apply_example("zones-percent.yaml")
    steps = [(8, {"intel": 4, "amd": 2, "arm": 2}), (16, {"intel": 8, "amd": 4, "arm": 4}),
             (8, {"intel": 4, "amd": 2, "arm": 2}), (4, {"intel": 2, "amd": 1, "arm": 1})]
    cpu = {"intel": "1", "amd": "750m", "arm": "500m"}
    vendor = {"intel": "intel", "amd": "amd", "arm": "arm"}
    nodes = {n["metadata"]["name"]: n for n in json.loads(
        client.CoreV1Api(kube.api).list_node(_preload_content=False).data)["items"]}
    for replicas, expected in steps:
        kube.scale("deployment/zoned-app", replicas)
        kube.wait_counts("app=zoned-app", expected)
        kube.wait_reconciled("zoned-app", expected)
        for pod in kube.wait(lambda: kube.active_pods("app=zoned-app"),
                             lambda ps: all(p["spec"].get("nodeName") for p in ps), "all pods bound"):
            subset = pod_subset(pod)
            assert subset is not None
            assert pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] == cpu[subset]
            node = nodes[pod["spec"]["nodeName"]]["metadata"]["labels"]
            assert node["spreadhook.io/cpu-vendor"] == vendor[subset], pod["metadata"]["name"]


# ------------------------------------------------------------------------------------------ scenario 5


def test_eci_by_label_sends_pods_beyond_two_to_eci_with_label_and_gpu_spec_annotation(kube: Kube) -> None:
    kube.apply_example("eci-by-label.yaml")
    kube.wait_counts("app=gpu-inference", {"local-gpu": 2, "eci": 2})
    kube.scale("deployment/gpu-inference", 6)
    kube.wait_counts("app=gpu-inference", {"local-gpu": 2, "eci": 4})
    pods = kube.wait(lambda: kube.active_pods("app=gpu-inference"),
                     lambda ps: all(p["status"].get("phase") == "Running" for p in ps), "6 pods Running")
    for pod in pods:
        labels, annotations = pod["metadata"]["labels"], pod["metadata"].get("annotations") or {}
        if pod_subset(pod) == "local-gpu":
            assert "alibabacloud.com/eci" not in labels
            assert "k8s.aliyun.com/eci-use-specs" not in annotations
            assert pod["spec"]["nodeName"] == "ecs-intel-1"
        else:
            assert labels["alibabacloud.com/eci"] == "true"
            assert annotations["k8s.aliyun.com/eci-use-specs"] == "ecs.gn6i-c4g1.xlarge"
            assert pod["spec"]["nodeName"] == "vk-eci"
    kube.wait_reconciled("gpu-inference", {"local-gpu": 2, "eci": 4})
    kube.scale("deployment/gpu-inference", 2)
    kube.wait_counts("app=gpu-inference", {"local-gpu": 2})
    kube.wait_reconciled("gpu-inference", {"local-gpu": 2})


# ------------------------------------------------------------------------------------------ scenario 1


def _package_annotations(pods: Iterable[Obj]) -> Counter[str | None]:
    return Counter((p["metadata"].get("annotations") or {}).get("k8s.aliyun.com/eip-common-bandwidth-package-id")
                   for p in pods)


def test_bandwidth_packages_hold_exactly_300_each_through_0_3000_3300_1000_and_scale_in_reverse(
    kube: Kube,
) -> None:
    kube.apply_example("bandwidth-packages.yaml")
    controller = CloneSetController(kube, "load-agent")
    packages = [f"bandwidthPackage-{i}" for i in range(1, 11)]
    selector = "app=load-agent"

    controller.scale_out(3000)
    kube.wait_counts(selector, {p: 300 for p in packages}, timeout=60)
    by_package = _package_annotations(kube.active_pods(selector))
    assert by_package == {f"cbwp-spreadhook{i:04d}": 300 for i in range(1, 11)}
    kube.wait_reconciled("load-agent", {p: 300 for p in packages}, timeout=180)

    controller.scale_out(3300)
    expected: dict[str | None, int] = {**{p: 300 for p in packages}, "no-eip": 300}
    kube.wait_counts(selector, expected, timeout=60)
    pods = kube.active_pods(selector)
    no_eip = [p for p in pods if pod_subset(p) == "no-eip"]
    assert all(p["metadata"]["annotations"]["k8s.aliyun.com/pod-with-eip"] == "false" for p in no_eip)
    assert _package_annotations(no_eip) == {None: 300}
    kube.wait_reconciled("load-agent", {k: v for k, v in expected.items() if k}, timeout=180)

    # CloneSet deletes by deletion cost: wait until the reconciler has priced every pod.
    costs = {p: str(100 * (11 - i)) for i, p in enumerate(packages)} | {"no-eip": "100"}
    kube.wait(lambda: kube.active_pods(selector),
              lambda ps: len(ps) == 3300 and all(
                  (p["metadata"].get("annotations") or {}).get(DELETION_COST) == costs[str(pod_subset(p))]
                  for p in ps),
              "a deletion cost on all 3,300 pods", timeout=240, interval=2)
    leaving = controller.scale_in(1000)
    order = [pod_subset(p) for p in leaving]
    assert Counter(order) == {"no-eip": 300, **{f"bandwidthPackage-{i}": 300 for i in range(5, 11)},
                              "bandwidthPackage-4": 200}
    assert order[:300] == ["no-eip"] * 300, "no-eip empties first"
    remaining = {f"bandwidthPackage-{i}": 300 for i in range(1, 4)} | {"bandwidthPackage-4": 100}
    kube.wait_counts(selector, dict(remaining), timeout=120)
    kube.wait_reconciled("load-agent", remaining, timeout=180)
    status = kube.ws("load-agent")["status"]["subsetStatuses"]
    missing = {s["name"]: s["missingReplicas"] for s in status}
    assert missing == {**{p: 300 - remaining.get(p, 0) for p in packages}, "no-eip": -1}
