"""Smoke tests proving the test control plane is a real Kubernetes control plane.

kube-controller-manager scales Deployments, kube-scheduler binds pods to the
kwok nodes of docs/test-cluster-nodes.md honouring their taints, kwok runs and
terminates them, admission webhooks are really called and RBAC is on. If any of
these silently stopped being true, spreadhook's integration tests would pass
against something that is not Kubernetes.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.utils import parse_quantity

from harness import nodes, versions
from harness.controlplane import ControlPlane, repo_root
from harness.waiting import wait_for

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
VK_TOLERATION = {
    "key": "virtual-kubelet.io/provider",
    "operator": "Equal",
    "value": "alibabacloud",
    "effect": "NoSchedule",
}


def _pod(
    name: str, node_selector: dict[str, str] | None = None, tolerations: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "app", "image": PAUSE_IMAGE}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    if tolerations:
        spec["tolerations"] = tolerations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _pod_state(core: client.CoreV1Api, namespace: str, name: str) -> tuple[str, str, str]:
    """(phase, node, PodScheduled reason) of one pod."""
    pod = core.read_namespaced_pod(name, namespace)
    scheduled = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
    reason = (scheduled.reason or scheduled.status) if scheduled else ""
    return pod.status.phase or "", pod.spec.node_name or "", reason


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ the contract, no cluster needed


def _contract_rows() -> dict[str, tuple[str, str, str]]:
    """node -> (labels cell, taints cell, capacity cell) from docs/test-cluster-nodes.md."""
    rows: dict[str, tuple[str, str, str]] = {}
    for line in (repo_root() / "docs" / "test-cluster-nodes.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("node", "") or set(cells[0]) <= {"-"}:
            continue
        for node_name in cells[0].split(","):
            rows[node_name.strip()] = (cells[1], cells[2], cells[3])
    return rows


def test_harness_nodes_match_the_documented_node_contract() -> None:
    rows = _contract_rows()
    assert sorted(rows) == sorted(n.name for n in nodes.NODES)
    for node in nodes.NODES:
        labels_cell, taints_cell, capacity_cell = rows[node.name]
        documented = dict(re.findall(r"`([^`:]+): ([^`]+)`", labels_cell))
        assert documented == node.labels, node.name
        documented_taints = re.findall(r"`([^`=]+)=([^`:]+):(\w+)`", taints_cell)
        assert documented_taints == [(t["key"], t["value"], t["effect"]) for t in node.taints], node.name
        assert [c.strip() for c in capacity_cell.split("/")] == [node.cpu, node.memory, node.pods], node.name


# ------------------------------------------------------------------ on the real control plane


@pytest.mark.controlplane
def test_kwok_nodes_are_ready_with_contract_labels_taints_and_capacity(k8s_client: ApiClient) -> None:
    items = {n.metadata.name: n for n in client.CoreV1Api(k8s_client).list_node().items}
    assert set(items) == {n.name for n in nodes.NODES}
    for spec in nodes.NODES:
        node = items[spec.name]
        assert spec.all_labels().items() <= node.metadata.labels.items()
        assert [(t.key, t.value, t.effect) for t in node.spec.taints or []] == [
            (t["key"], t["value"], t["effect"]) for t in spec.taints
        ]
        for resource, quantity in (("cpu", spec.cpu), ("memory", spec.memory), ("pods", spec.pods)):
            assert parse_quantity(node.status.allocatable[resource]) == parse_quantity(quantity)
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


@pytest.mark.controlplane
def test_deployment_is_scaled_by_kcm_bound_by_scheduler_and_running_on_kwok_nodes(
    controlplane: ControlPlane, k8s_client: ApiClient, namespace: str
) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 5,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": PAUSE_IMAGE}]},
            },
        },
    }
    client.AppsV1Api(k8s_client).create_namespaced_deployment(namespace, deployment)
    core = client.CoreV1Api(k8s_client)
    pods = wait_for(
        lambda: core.list_namespaced_pod(namespace, label_selector="app=web").items,
        lambda items: len(items) == 5 and all(p.status.phase == "Running" for p in items),
        "5 Running pods of Deployment web",
    )
    vk_nodes = {n.name for n in nodes.NODES if n.taints}
    assert all(p.spec.node_name and p.spec.node_name not in vk_nodes for p in pods)
    owners = {p.metadata.owner_references[0].kind for p in pods}
    assert owners == {"ReplicaSet"}
    wait_for(
        lambda: client.AppsV1Api(k8s_client).read_namespaced_deployment(deployment["metadata"]["name"], namespace),
        lambda d: d.status.available_replicas == 5,
        "Deployment web available",
    )


@pytest.mark.controlplane
def test_kubectl_apply_works_with_the_built_kubectl(controlplane: ControlPlane, namespace: str) -> None:
    version = json.loads(controlplane.kubectl("version", "-o", "json").stdout)
    assert version["clientVersion"]["gitVersion"] == versions.KUBERNETES_VERSION
    assert version["serverVersion"]["gitVersion"] == versions.KUBERNETES_VERSION
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "v1"}}
    out = controlplane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest)).stdout
    assert "configmap/cfg created" in out
    manifest["data"] = {"k": "v2"}
    out = controlplane.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(manifest)).stdout
    assert "configmap/cfg configured" in out
    got = controlplane.kubectl("-n", namespace, "get", "configmap", "cfg", "-o", "jsonpath={.data.k}").stdout
    assert got == "v2"


@pytest.mark.controlplane
def test_deleting_a_running_pod_completes(k8s_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    core.create_namespaced_pod(namespace, _pod("doomed"))
    wait_for(lambda: _pod_state(core, namespace, "doomed")[0], lambda phase: phase == "Running", "pod Running")
    core.delete_namespaced_pod("doomed", namespace)  # default grace period: kwok must finish it
    wait_for(
        lambda: [p.metadata.name for p in core.list_namespaced_pod(namespace).items],
        lambda names: "doomed" not in names,
        "deleted pod gone",
        timeout=60,
    )


@pytest.mark.controlplane
def test_pods_land_on_virtual_kubelet_nodes_only_with_the_toleration(k8s_client: ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(k8s_client)
    serverless = {"spreadhook.io/pool": "serverless"}
    core.create_namespaced_pod(namespace, _pod("no-toleration", serverless))
    core.create_namespaced_pod(namespace, _pod("tolerating", serverless, [VK_TOLERATION]))
    _, node, _ = wait_for(
        lambda: _pod_state(core, namespace, "tolerating"),
        lambda s: s[0] == "Running",
        "tolerating pod Running",
    )
    assert node in {"vk-acs", "vk-eci"}
    state = wait_for(
        lambda: _pod_state(core, namespace, "no-toleration"),
        lambda s: s[2] == "Unschedulable",
        "Unschedulable",
    )
    assert state[:2] == ("Pending", "")


@pytest.mark.controlplane
def test_admission_webhooks_are_called_and_failure_policy_fail_blocks_pods(
    k8s_client: ApiClient, namespace: str
) -> None:
    """kwokctl switches admission off unless told otherwise; prove a webhook really is consulted."""
    admission = client.AdmissionregistrationV1Api(k8s_client)
    name = f"smoke-{namespace}"
    admission.create_mutating_webhook_configuration(
        {
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": "smoke.spreadhook.io",
                    "clientConfig": {"url": f"https://127.0.0.1:{_free_port()}/mutate"},
                    "rules": [
                        {
                            "operations": ["CREATE"],
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "resources": ["pods"],
                        }
                    ],
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 2,
                }
            ],
        }
    )
    try:
        core = client.CoreV1Api(k8s_client)

        def create_outcome() -> str:
            try:
                core.create_namespaced_pod(namespace, _pod("blocked"), dry_run="All")
            except client.ApiException as err:
                return str(err.body)
            return "admitted"

        # the apiserver's webhook informer needs a moment to see the new configuration
        outcome = wait_for(create_outcome, lambda o: o != "admitted", "webhook consulted", timeout=30)
        assert "failed calling webhook" in outcome
    finally:
        admission.delete_mutating_webhook_configuration(name)


@pytest.mark.controlplane
def test_rbac_is_enforced_for_service_accounts(controlplane: ControlPlane, namespace: str) -> None:
    as_sa = f"--as=system:serviceaccount:{namespace}:default"
    allowed = controlplane.kubectl("auth", "can-i", "list", "pods", "-n", namespace, as_sa, check=False)
    assert allowed.stdout.strip() == "no"
    assert controlplane.kubectl("auth", "can-i", "create", "pods", "-n", namespace).stdout.strip() == "yes"


def test_controlplane_binaries_are_cached_under_a_key_naming_every_version() -> None:
    key = versions.cache_key()
    for version in (versions.KUBERNETES_VERSION, versions.ETCD_VERSION, versions.KWOK_VERSION):
        assert version in key
    assert Path(key).name == key


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains TEXT (how we find a cluster's components)."""
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(proc_dir.name))
    return pids


@pytest.mark.controlplane
def test_cli_up_prints_exports_and_down_leaves_no_process(controlplane: ControlPlane, tmp_path: Path) -> None:
    """scripts/controlplane is the same code as the fixture; a second cluster on other free ports."""
    script = str(repo_root() / "scripts" / "controlplane")
    state = tmp_path / "cp"
    up = subprocess.run([script, "up", "--dir", str(state)], capture_output=True, text=True, timeout=300, check=False)
    try:
        assert up.returncode == 0, up.stderr
        assert f"export KUBECONFIG={state / 'kubeconfig'}" in up.stdout
        assert f'export PATH="{controlplane.bin_dir}:$PATH"' in up.stdout
        second = ControlPlane(state)
        assert second.server != controlplane.server
        assert len(_processes_mentioning(str(state))) == 5
    finally:
        down = subprocess.run([script, "down", "--dir", str(state)], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert _processes_mentioning(str(state / "kwok")) == []
    assert not (state / "kubeconfig").exists()
