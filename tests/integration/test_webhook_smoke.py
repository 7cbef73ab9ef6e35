"""Smoke tests proving spreadhook is really wired into the control plane (issue 4, item 4).

Pods created by kube-controller-manager go through the mutating webhook; the validating webhook rejects an
invalid WorkloadSpread with the engine's own message; the conversion webhook serves both API versions; and
the failurePolicy decides what happens to pod creation when the webhook process is dead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from harness.controlplane import ControlPlane
from harness.install import Webhook, register
from tests.integration.conftest import MATCHED, Kube, Obj, pod_subset

pytestmark = pytest.mark.controlplane

PAUSE = "registry.k8s.io/pause:3.10"


def _deployment(name: str, replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "app", "image": PAUSE}]}}}}


def _spread(name: str, version: str = "v1alpha1", subset_overrides: Obj | None = None) -> Obj:
    selector_field = "requiredNodeSelectorTerm" if version == "v1alpha1" else "requiredNodeSelector"
    first = {"name": "ecs", selector_field: {"matchExpressions": [
        {"key": "spreadhook.io/pool", "operator": "In", "values": ["ecs"]}]},
        "maxReplicas": 2, "patch": {"metadata": {"labels": {"tier": "ecs"}}}, **(subset_overrides or {})}
    second = {"name": "serverless", selector_field: {"matchExpressions": [
        {"key": "type", "operator": "In", "values": ["acs-virtual-kubelet"]}]},
        "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"}],
        "patch": {"metadata": {"labels": {"tier": "serverless"}}}}
    return {"apiVersion": f"apps.kruise.io/{version}", "kind": "WorkloadSpread", "metadata": {"name": name},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                     "subsets": [first, second]}}


def test_deployment_pods_carry_the_webhooks_patch_and_land_on_the_subsets_nodes(kube: Kube) -> None:
    kube.apply([_spread("web"), _deployment("web", 3)])
    pods = kube.wait(lambda: kube.active_pods("app=web"),
                     lambda ps: len(ps) == 3 and all(p["spec"].get("nodeName") for p in ps), "3 pods bound")
    tiers = sorted((pod_subset(p), p["metadata"]["labels"].get("tier")) for p in pods)
    assert tiers == [("ecs", "ecs"), ("ecs", "ecs"), ("serverless", "serverless")]
    for pod in pods:
        matched = json.loads(pod["metadata"]["annotations"][MATCHED])
        assert matched["name"] == "web"
        terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert terms["nodeSelectorTerms"], "the subset's node selector is injected as required node affinity"
        if pod_subset(pod) == "ecs":
            assert pod["spec"]["nodeName"].startswith("ecs-")
        else:
            assert pod["spec"]["nodeName"] == "vk-acs"


@pytest.mark.parametrize(("subset_change", "message"), [
    ({"maxReplicas": "50"}, "spec.subsets[0].maxReplicas: maxReplicas is not valid for subset: '50' must be a "
                            "whole-number percentage"),
    ({"name": "serverless"}, "spec.subsets[1].name: duplicated subset name serverless"),
])
def test_kubectl_apply_of_an_invalid_workloadspread_is_rejected_naming_the_field(
    kube: Kube, subset_change: Obj, message: str
) -> None:
    proc = kube.apply(_spread("bad", subset_overrides=subset_change), check=False)
    assert proc.returncode != 0
    assert 'admission webhook "vworkloadspread.spreadhook.io" denied the request' in proc.stderr
    assert message in proc.stderr
    assert kube.kubectl("get", "workloadspread", "bad", check=False).returncode != 0, "nothing was stored"


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_workloadspread_applied_in_either_version_reads_back_in_both(kube: Kube, version: str) -> None:
    kube.apply(_spread("conv", version))
    alpha = kube.ws("conv", "v1alpha1")["spec"]["subsets"]
    beta = kube.ws("conv", "v1beta1")["spec"]["subsets"]
    expression = {"key": "spreadhook.io/pool", "operator": "In", "values": ["ecs"]}
    assert alpha[0]["requiredNodeSelectorTerm"]["matchExpressions"] == [expression]
    assert beta[0]["requiredNodeSelector"]["matchExpressions"] == [expression]
    assert "requiredNodeSelector" not in alpha[0] and "requiredNodeSelectorTerm" not in beta[0]
    for subsets in (alpha, beta):
        assert [s["name"] for s in subsets] == ["ecs", "serverless"]
        assert subsets[0]["maxReplicas"] == 2
        assert subsets[1]["patch"] == {"metadata": {"labels": {"tier": "serverless"}}}
    # kubectl reads through the preferred version too
    got = json.loads(kube.kubectl("get", "workloadspreads.v1alpha1.apps.kruise.io", "conv", "-o", "json").stdout)
    assert got["apiVersion"] == "apps.kruise.io/v1alpha1"


@pytest.fixture
def dead_webhook(spreadhook: Webhook, controlplane: ControlPlane) -> Iterator[Webhook]:
    """spreadhook's process killed (SIGKILL); afterwards it is restarted and registered again with the
    default failure policies, whatever the test did, so later tests find it as it was."""
    spreadhook.kill()
    try:
        yield spreadhook
    finally:
        spreadhook.start()
        register(controlplane, spreadhook.url, (spreadhook.cert_dir / "ca.crt").read_bytes())


def _create_outcome(core: client.CoreV1Api, namespace: str, owner: Obj) -> str:
    """Create a controller-owned pod (only those reach the webhook) for real; 'admitted' or the error."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"generateName": "probe-", "labels": {"probe": "yes"}, "ownerReferences": [owner]},
           "spec": {"containers": [{"name": "app", "image": PAUSE}]}}
    try:
        core.create_namespaced_pod(namespace, pod)
    except client.ApiException as err:
        return str(err.body)
    return "admitted"


def test_with_the_webhook_process_dead_failure_policy_fail_blocks_pods_and_ignore_lets_them_through(
    kube: Kube, dead_webhook: Webhook, controlplane: ControlPlane
) -> None:
    apps = client.AppsV1Api(kube.api)
    rs = apps.create_namespaced_replica_set(kube.ns, {
        "metadata": {"name": "probe"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "probe"}},
                 "template": {"metadata": {"labels": {"app": "probe"}},
                              "spec": {"containers": [{"name": "app", "image": PAUSE}]}}}})
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "probe", "uid": rs.metadata.uid,
             "controller": True}
    core = client.CoreV1Api(kube.api)
    ca = (dead_webhook.cert_dir / "ca.crt").read_bytes()

    register(controlplane, dead_webhook.url, ca, failure_policy="Fail")
    # the apiserver's webhook informer needs a moment to see the new policy
    outcome = kube.wait(lambda: _create_outcome(core, kube.ns, owner), lambda o: o != "admitted",
                        "pod creation blocked under failurePolicy Fail", timeout=30, interval=0.5)
    assert "failed calling webhook" in outcome and "mpod.spreadhook.io" in outcome
    blocked_at = len(kube.pods("probe=yes"))

    register(controlplane, dead_webhook.url, ca, failure_policy="Ignore")
    kube.wait(lambda: _create_outcome(core, kube.ns, owner), lambda o: o == "admitted",
              "pod creation allowed under failurePolicy Ignore", timeout=30, interval=0.5)
    pods = kube.pods("probe=yes")
    assert len(pods) > blocked_at
    assert all(MATCHED not in (p["metadata"].get("annotations") or {}) for p in pods), "nothing mutated them"
