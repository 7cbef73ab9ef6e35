"""The simulated kwok nodes of the test control plane.

This is the Python side of the contract written in docs/test-cluster-nodes.md
(deploy/examples select these nodes by label and tolerate their taints);
tests/integration/test_controlplane_smoke.py checks that both stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: kwok-controller (as started by kwokctl) only manages nodes carrying this
#: annotation, so nodes created by anyone else are left alone.
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

VK_TAINT = {"key": "virtual-kubelet.io/provider", "value": "alibabacloud", "effect": "NoSchedule"}


@dataclass(frozen=True)
class NodeSpec:
    """One simulated node: name, extra labels, taints and capacity."""

    name: str
    labels: dict[str, str]
    cpu: str
    memory: str
    pods: str
    taints: tuple[dict[str, str], ...] = field(default_factory=tuple)

    def all_labels(self) -> dict[str, str]:
        """Labels as a kubelet would report them, plus the contract's labels."""
        return {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", **self.labels}

    def manifest(self) -> dict[str, Any]:
        """The Node object, status included: kwok keeps capacity/allocatable as given."""
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.all_labels(),
                "annotations": {
                    KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1],
                    "node.alpha.kubernetes.io/ttl": "0",
                },
            },
            "spec": {"taints": [dict(t) for t in self.taints]},
            "status": {
                "capacity": resources,
                "allocatable": dict(resources),
                "phase": "Running",
            },
        }


def _idc(name: str) -> NodeSpec:
    labels = {
        "spreadhook.io/pool": "idc",
        "topology.kubernetes.io/zone": "idc-a",
        "kubernetes.io/arch": "amd64",
        "spreadhook.io/cpu-vendor": "intel",
    }
    return NodeSpec(name, labels, cpu="4", memory="16Gi", pods="110")


def _ecs(name: str, pool: str, zone: str, arch: str, vendor: str, instance_type: str) -> NodeSpec:
    labels = {
        "spreadhook.io/pool": "ecs",
        "alibabacloud.com/nodepool-id": pool,
        "topology.kubernetes.io/zone": zone,
        "kubernetes.io/arch": arch,
        "spreadhook.io/cpu-vendor": vendor,
        "node.kubernetes.io/instance-type": instance_type,
    }
    return NodeSpec(name, labels, cpu="64", memory="256Gi", pods="1000")


def _vk(name: str, vk_type: str, zone: str) -> NodeSpec:
    labels = {"type": vk_type, "spreadhook.io/pool": "serverless", "topology.kubernetes.io/zone": zone}
    return NodeSpec(name, labels, cpu="10000", memory="40Ti", pods="20000", taints=(VK_TAINT,))


NODES: tuple[NodeSpec, ...] = (
    _idc("idc-1"),
    _idc("idc-2"),
    _ecs("ecs-intel-1", "np-intel", "cn-hangzhou-h", "amd64", "intel", "ecs.g7.16xlarge"),
    _ecs("ecs-amd-1", "np-amd", "cn-hangzhou-i", "amd64", "amd", "ecs.g7a.16xlarge"),
    _ecs("ecs-arm-1", "np-arm", "cn-hangzhou-j", "arm64", "arm", "ecs.g8y.16xlarge"),
    _vk("vk-acs", "acs-virtual-kubelet", "cn-hangzhou-h"),
    _vk("vk-eci", "virtual-kubelet", "cn-hangzhou-i"),
)


def node_manifests() -> dict[str, Any]:
    """All nodes as one v1 List, ready for `kubectl apply -f -`."""
    return {"apiVersion": "v1", "kind": "List", "items": [n.manifest() for n in NODES]}
