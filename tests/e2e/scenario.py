"""The bandwidth-package scenario as the fault tests drive it: a CloneSet whose pods we create ourselves.

There is no Kruise controller in the test cluster, so the test plays it: it creates pods owned by the CloneSet
(controller ownerReference with its uid, the template's labels, ``load-agent-<random>`` names) from many
threads, while the main thread injects a fault. What must hold afterwards is checked on the pods themselves,
never on spreadhook's own view: no subset holds more pods than its ``maxReplicas``, and the WorkloadSpread's
status says what the pods say once the reconciler has run.
"""

from __future__ import annotations

import contextlib
import copy
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client

from harness.bandwidth import (
    active,
    list_pods,
    read_workload_spread,
    scenario_documents,
    status_mismatches,
    subset_counts,
    subset_limits,
    subset_of,
)

COST = "controller.kubernetes.io/pod-deletion-cost"


LIMITS: dict[str, int | None] = subset_limits(scenario_documents()[0])


def cloneset_pod(cloneset: Mapping[str, Any]) -> dict[str, Any]:
    """One pod as Kruise's CloneSet controller would create it."""
    template = cloneset["spec"]["template"]
    suffix = secrets.token_hex(4)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": f"load-agent-{suffix}",
            "labels": {**template["metadata"]["labels"], "apps.kruise.io/cloneset-instance-id": suffix},
            "ownerReferences": [{"apiVersion": cloneset["apiVersion"], "kind": "CloneSet",
                                 "name": cloneset["metadata"]["name"], "uid": cloneset["metadata"]["uid"],
                                 "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": copy.deepcopy(template["spec"]),
    }


@dataclass
class Burst:
    """PODS CloneSet pods from CLIENTS threads, in the background; ``created`` counts as it goes.

    Like a controller, a client whose create failed for a reason that is not the pod's fault (connection
    refused while kube-apiserver restarts, a webhook error under failurePolicy Fail) tries again with a new
    name, up to ``retries`` times in all, so the burst reaches its size unless the fault never ends. Every
    failure is kept, so a test can assert on how many there were.
    """

    api: client.ApiClient
    namespace: str
    cloneset: dict[str, Any]
    pods: int
    clients: int = 32
    retries: int = 200
    created: int = 0
    failures: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _taken: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Burst:
        for index in range(self.clients):
            thread = threading.Thread(target=self._work, name=f"burst-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _take(self) -> bool:
        with self._lock:
            if self._taken >= self.pods or len(self.failures) >= self.retries:
                return False
            self._taken += 1
            return True

    def _work(self) -> None:
        core = client.CoreV1Api(self.api)
        while self._take():
            while True:
                try:
                    response = core.create_namespaced_pod(self.namespace, cloneset_pod(self.cloneset),
                                                          _preload_content=False, _request_timeout=30)
                    response.read()  # drain before release, or the pooled connection reads this body next
                    response.release_conn()
                    with self._lock:
                        self.created += 1
                    break
                except (client.ApiException, urllib3.exceptions.HTTPError, OSError) as err:
                    with self._lock:
                        self.failures.append(f"{type(err).__name__}: {str(err)[:300]}")
                        if len(self.failures) >= self.retries:
                            return
                    time.sleep(0.2)

    def wait_for(self, created: int, timeout: float = 120.0) -> None:
        """Block until at least CREATED pods exist (the moment to inject the next fault)."""
        deadline = time.monotonic() + timeout
        while self.created < created and self.running():
            if time.monotonic() > deadline:
                raise AssertionError(f"burst stuck at {self.created} pods; failures: {self.failures[-3:]}")
            time.sleep(0.05)

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float = 300.0) -> Burst:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not self.running(), f"burst still running after {timeout}s at {self.created} pods"
        return self


def over_cap(counts: Mapping[str, int]) -> dict[str, int]:
    """Subsets holding more pods than their maxReplicas, with how many they hold."""
    return {name: counts.get(name, 0) for name, limit in LIMITS.items()
            if limit is not None and counts.get(name, 0) > limit}


def provenance(pods: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per subset, how its pods got there: ``webhook`` (the admission patched the subset's node affinity into
    the spec) or ``adopted`` (only the reconciler's annotation: the pod was created past the webhook)."""
    out: dict[str, dict[str, int]] = {}
    for pod in pods:
        if active(pod):
            how = "webhook" if (pod.get("spec") or {}).get("affinity") else "adopted"
            entry = out.setdefault(subset_of(pod), {"webhook": 0, "adopted": 0})
            entry[how] += 1
    return out


def eventually(what: str, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float,
               interval: float = 1.0) -> Any:
    """Poll PROBE until DONE holds; the assertion message carries the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        with contextlib.suppress(client.ApiException, urllib3.exceptions.HTTPError):
            value = probe()
            if done(value):
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s; last: {str(value)[:1500]}")
        time.sleep(interval)


def assert_spread_holds(api: client.ApiClient, namespace: str, created: int, timeout: float = 150.0) -> dict[str, int]:
    """The invariants every fault test ends with; returns the final pods per subset.

    * at least the CREATED pods exist (a create whose answer was lost may still have happened) and no subset
      holds more than its maxReplicas, counted on the pods;
    * the WorkloadSpread status equals what the pods say once the reconciler has run, and every pod carries
      a deletion cost. A reservation whose pod never came (the webhook died between its status write and its
      answer) is expired by the reconciler after upstream's 30 s creation timeout, so this can take a little
      over 30 s. Pods admitted without the webhook (failurePolicy Ignore) are adopted into a subset when
      their node fits one; the others stay in no subset ("" in the result), which is allowed.
    """
    pods = list_pods(api, namespace)
    counts = subset_counts(pods)
    assert sum(counts.values()) >= created, counts
    assert over_cap(counts) == {}, f"subsets over their maxReplicas: {over_cap(counts)}; {provenance(pods)}"

    def settled() -> tuple[list[str], dict[str, int], int]:
        pods = list_pods(api, namespace)
        counts = subset_counts(pods)
        uncosted = sum(1 for p in pods if active(p) and COST not in (p["metadata"].get("annotations") or {}))
        return status_mismatches(read_workload_spread(api, namespace), counts, LIMITS), counts, uncosted

    problems, counts, _ = eventually("status equal to the pods and a deletion cost on every pod", settled,
                                     lambda v: not v[0] and v[2] == 0, timeout, 2.0)
    assert over_cap(counts) == {}, (f"subsets over their maxReplicas after reconciliation: {over_cap(counts)}; "
                                    f"{provenance(list_pods(api, namespace))}")
    assert not problems
    return counts
