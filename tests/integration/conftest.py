"""Fixtures for spreadhook on the real control plane: one installed spreadhook per session, a per-test
``Kube`` helper bound to the test's namespace, and waits that say what they waited for.

spreadhook is installed once per session (CRDs, RBAC, certificates, one ``spreadhook run`` process,
webhook registration) because that is what a user does once per cluster; every test works in its own
namespace, so tests cannot see each other's pods or WorkloadSpreads. At the end of the session the
process is stopped and its log must hold no ``Traceback``: an exception swallowed by a worker thread would
otherwise pass every test while the component is broken.
"""

from __future__ import annotations

import json
import random
import string
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from harness.controlplane import ControlPlane, repo_root
from harness.install import Webhook, install_spreadhook
from harness.waiting import wait_for

T = TypeVar("T")

EXAMPLES = repo_root() / "deploy" / "examples"
GROUP = "apps.kruise.io"
MATCHED = "apps.kruise.io/matched-workloadspread"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
Obj = dict[str, Any]


def _logs(workdir: Path) -> dict[str, str]:
    return {path.name: path.read_text(errors="replace") for path in sorted(workdir.glob("*.log"))}


@pytest.fixture(scope="session")
def spreadhook(controlplane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    """spreadhook installed into the session's control plane, as ``scripts/controlplane up --spreadhook``
    does; stopped at the end, and its logs (every replica a test started in the same workdir) checked."""
    workdir = tmp_path_factory.mktemp("spreadhook")
    webhook = install_spreadhook(controlplane, workdir)
    try:
        yield webhook
    finally:
        webhook.stop()
    tracebacks = {name: text for name, text in _logs(workdir).items() if "Traceback" in text}
    assert not tracebacks, "spreadhook logged a Traceback:\n" + "\n".join(
        f"--- {name}\n{text[text.index('Traceback') - 2000:][:6000]}" for name, text in tracebacks.items())


def pod_subset(pod: Obj) -> str | None:
    """The subset the webhook (or the reconciler's adoption) put the pod in, from the matched annotation."""
    raw = (pod["metadata"].get("annotations") or {}).get(MATCHED)
    return str(json.loads(raw).get("subset")) if raw else None


def is_active(pod: Obj) -> bool:
    """Counted by the ledger: not terminating and not finished (as upstream counts)."""
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get("phase") not in (
        "Succeeded", "Failed")


class Kube:
    """The test's view of its namespace: kubectl for what users do, the API (raw JSON, fast for thousands of
    pods) for what the test checks."""

    def __init__(self, cp: ControlPlane, api: ApiClient, namespace: str) -> None:
        self.cp = cp
        self.api = api
        self.ns = namespace
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    # -- what a user does ----------------------------------------------------------------------------

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cp.kubectl("-n", self.ns, *args, check=check, input=input)

    def apply_example(self, name: str) -> None:
        """``kubectl apply -n NS -f deploy/examples/NAME``, exactly as README tells users."""
        self.kubectl("apply", "-f", str(EXAMPLES / name))

    def apply(self, manifest: Obj | list[Obj], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        docs = manifest if isinstance(manifest, list) else [manifest]
        return self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs), check=check)

    def scale(self, resource: str, replicas: int) -> None:
        self.kubectl("scale", resource, f"--replicas={replicas}")

    def status_cli(self, name: str) -> str:
        """``spreadhook status NAME -n NS``, the command README shows."""
        proc = subprocess.run([sys.executable, "-m", "spreadhook.cli", "status", name, "-n", self.ns],
                              capture_output=True, text=True, env=self.cp.env(), timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    # -- what the test checks ------------------------------------------------------------------------

    def pods(self, selector: str = "") -> list[Obj]:
        response = self.core.list_namespaced_pod(self.ns, label_selector=selector, _preload_content=False)
        return list(json.loads(response.data)["items"])

    def active_pods(self, selector: str = "") -> list[Obj]:
        return [p for p in self.pods(selector) if is_active(p)]

    def subset_counts(self, selector: str = "") -> dict[str | None, int]:
        """Active pods per subset, read from the pods themselves (None: in no subset)."""
        return dict(Counter(pod_subset(p) for p in self.active_pods(selector)))

    def ws(self, name: str, version: str = "v1beta1") -> Obj:
        return dict(self.custom.get_namespaced_custom_object(GROUP, version, self.ns, "workloadspreads", name))

    def status_counts(self, name: str) -> dict[str, int]:
        """``subsetStatuses[].replicas`` as the reconciler wrote them (subsets with 0 included)."""
        status = self.ws(name).get("status") or {}
        return {s["name"]: int(s.get("replicas") or 0) for s in status.get("subsetStatuses") or []}

    def wait(self, probe: Callable[[], T], until: Callable[[T], bool], what: str, timeout: float = 60.0,
             interval: float = 0.5) -> T:
        return wait_for(probe, until, what, timeout=timeout, interval=interval)

    def wait_counts(self, selector: str, expected: dict[str | None, int], timeout: float = 90.0) -> None:
        """Until the active pods per subset are exactly EXPECTED (a ReplicaSet works asynchronously)."""
        self.wait(lambda: self.subset_counts(selector), lambda got: got == expected,
                  f"pods {selector} per subset == {expected}", timeout=timeout)

    def wait_reconciled(self, name: str, expected: dict[str, int], timeout: float = 90.0) -> Obj:
        """Until the status says EXPECTED (subsets not named must say 0), is of the current generation, holds
        no in-flight creating/deleting entries, and no managedFields entry is still v1alpha1: the reconciler
        has caught up with the pods, and has made the restatement it makes once the ledger is idle (a write
        that changes resourceVersion, so a test comparing it must wait for it too)."""

        def settled(ws: Obj) -> bool:
            status = ws.get("status") or {}
            subsets = status.get("subsetStatuses") or []
            counts = {s["name"]: int(s.get("replicas") or 0) for s in subsets}
            return (status.get("observedGeneration") == ws["metadata"]["generation"]
                    and {k: v for k, v in counts.items() if v} == {k: v for k, v in expected.items() if v}
                    and not any(s.get("creatingPods") or s.get("deletingPods") for s in subsets)
                    and all(m.get("apiVersion") != "apps.kruise.io/v1alpha1"
                            for m in ws["metadata"].get("managedFields") or []))

        return self.wait(lambda: self.ws(name), settled, f"WorkloadSpread {name} status reconciled to {expected}",
                         timeout=timeout)


@pytest.fixture
def kube(spreadhook: Webhook, controlplane: ControlPlane, k8s_client: ApiClient, namespace: str) -> Kube:
    """A test namespace with spreadhook installed in the cluster."""
    return Kube(controlplane, k8s_client, namespace)


class CloneSetController:
    """What OpenKruise's CloneSet controller does that matters here: set replicas, create pods named
    ``<cloneset>-<instance id>`` owned by the CloneSet (controller=true) with the template's labels, and on
    scale-in delete the pods with the lowest ``pod-deletion-cost`` first. Pods are created and deleted
    from many threads at once, as a burst.

    Instance ids are unique, as CloneSet's are: it draws ids that no pod of the set holds. Drawing them
    blindly from 36^5 collides in about 7 % of 3,000-pod bursts, and the refused duplicate's reserved slot
    is only given back when its creatingPods entry expires, so the retry lands one subset later."""

    def __init__(self, kube: Kube, name: str, threads: int = 32) -> None:
        self.kube = kube
        self.name = name
        self.threads = threads
        self.cloneset = kube.custom.get_namespaced_custom_object("apps.kruise.io", "v1alpha1", kube.ns,
                                                                 "clonesets", name)
        self._local = threading.local()
        self._names_lock = threading.Lock()
        self._names_taken = {p["metadata"]["name"] for p in kube.pods(f"app={name}")}

    def _core(self) -> client.CoreV1Api:
        """One API client per thread: a shared one serialises on its connection pool."""
        if not hasattr(self._local, "core"):
            self._local.core = client.CoreV1Api(self.kube.cp.api_client(pool_maxsize=2))
        return self._local.core  # type: ignore[no-any-return]

    def _pod(self) -> Obj:
        template = self.cloneset["spec"]["template"]
        with self._names_lock:
            while True:
                suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
                if f"{self.name}-{suffix}" not in self._names_taken:
                    self._names_taken.add(f"{self.name}-{suffix}")
                    break
        owner = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": self.name,
                 "uid": self.cloneset["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"{self.name}-{suffix}", "labels": dict(template["metadata"]["labels"]),
                             "ownerReferences": [owner]},
                "spec": template["spec"]}

    def _run(self, count: int, work: Callable[[int], None]) -> None:
        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(work, range(count)))

    def scale_out(self, replicas: int) -> None:
        """Set spec.replicas, then create the missing pods concurrently."""
        self.kube.scale(f"clonesets.apps.kruise.io/{self.name}", replicas)
        self.create(replicas - len(self.kube.active_pods(f"app={self.name}")))

    def create(self, count: int, spec: Obj | None = None) -> None:
        """Create COUNT pods from the template (with SPEC merged into the pod spec), from many threads."""

        def create_one(_: int) -> None:
            for _attempt in range(5):
                pod = self._pod()
                pod["spec"] = {**pod["spec"], **(spec or {})}
                try:
                    self._core().create_namespaced_pod(self.kube.ns, pod)
                    return
                except client.ApiException as exc:
                    if exc.status != 409:  # 409: a pod from elsewhere has the name; draw another
                        raise

        self._run(count, create_one)

    def scale_in(self, replicas: int) -> list[Obj]:
        """Delete the cheapest pods; returns them. Every pod must already carry a deletion cost."""
        self.kube.scale(f"clonesets.apps.kruise.io/{self.name}", replicas)
        pods = self.kube.active_pods(f"app={self.name}")
        pods.sort(key=lambda p: int(p["metadata"]["annotations"][DELETION_COST]))
        leaving = pods[: len(pods) - replicas]

        def delete(i: int) -> None:
            self._core().delete_namespaced_pod(leaving[i]["metadata"]["name"], self.kube.ns)

        self._run(len(leaving), delete)
        return leaving
