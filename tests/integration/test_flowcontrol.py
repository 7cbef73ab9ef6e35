"""deploy/flowcontrol.yaml on a kube-apiserver that runs API Priority and Fairness, as real clusters do.

kube-apiserver names, in two response headers, the FlowSchema and the priority level that served each
request; a real service-account token (TokenRequest) makes the request spreadhook's own.
"""

from __future__ import annotations

import requests

from harness.controlplane import ControlPlane
from harness.install import NAMESPACE, apply_base
from harness.waiting import wait_for

PRIORITY_LEVEL_HEADER = "X-Kubernetes-PF-PriorityLevel-UID"


def _priority_level_serving(cp: ControlPlane, service_account: str, namespace: str) -> str:
    """The UID of the priority level that serves a GET of WorkloadSpreads made with the service account's
    token, once kube-apiserver answers it (a priority level just created has no seats for a moment: 429)."""
    token = cp.kubectl("create", "token", service_account, "-n", namespace).stdout.strip()

    def get() -> requests.Response:
        return requests.get(f"{cp.server}/apis/apps.kruise.io/v1beta1/workloadspreads", timeout=10,
                            headers={"Authorization": f"Bearer {token}"}, verify=str(cp.ca_file))

    reply = wait_for(get, lambda r: r.status_code != 429, f"a request of {namespace}/{service_account} not "
                     "throttled", timeout=30)
    return reply.headers[PRIORITY_LEVEL_HEADER]


def _uid(cp: ControlPlane, kind: str, name: str) -> str:
    return cp.kubectl("get", kind, name, "-o", "jsonpath={.metadata.uid}").stdout


def test_spreadhooks_requests_are_served_from_its_own_priority_level_and_nobody_elses_are(
    flow_controlled_controlplane: ControlPlane,
) -> None:
    cp = flow_controlled_controlplane
    apply_base(cp)
    ours = _uid(cp, "prioritylevelconfiguration", "spreadhook")
    assert _priority_level_serving(cp, "spreadhook-webhook", NAMESPACE) == ours
    assert _priority_level_serving(cp, "default", "default") == _uid(cp, "prioritylevelconfiguration",
                                                                      "workload-low")
