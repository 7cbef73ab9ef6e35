"""Pod-creation throughput: N pods from C concurrent client threads.

The bare control plane's figure (no webhook) is the baseline later burst
benchmarks divide by, so both must be measured by this same function: the
same client library, the same pod, the same threading.

    python -m benchmarks.podcreate --kubeconfig .controlplane/kubeconfig --pods 1000 --clients 16

Responses are not deserialized into model objects (``_preload_content=False``):
at thousands of pods the Python client's model decoding would otherwise be what
gets measured, on the same two cores as the apiserver.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from kubernetes import client, config

PodFactory = Callable[[int], dict[str, Any]]


def default_pod(index: int, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A minimal pod: one pause container, schedulable on the un-tainted kwok nodes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"bench-{index:06d}", "labels": {"app": "podcreate", **(labels or {})}},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


@dataclass
class PodCreateResult:
    """What one run measured; latencies are client-side, per create call, in milliseconds."""

    pods: int
    clients: int
    created: int
    errors: int
    seconds: float
    pods_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    first_error: str = ""

    def summary(self) -> str:
        return (
            f"{self.created}/{self.pods} pods from {self.clients} clients in {self.seconds:.2f}s: "
            f"{self.pods_per_second:.1f} pods/s, create latency p50 {self.p50_ms:.1f} ms, "
            f"p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms, errors {self.errors}"
        )


def _percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _api_client(kubeconfig: str, pool: int) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


class _Worker(threading.Thread):
    """One client: its own ApiClient (own connection), takes indices from a shared counter."""

    def __init__(
        self,
        kubeconfig: str,
        namespace: str,
        next_index: Callable[[], int | None],
        factory: PodFactory,
        start_gate: threading.Barrier,
    ) -> None:
        super().__init__(daemon=True)
        self.core = client.CoreV1Api(_api_client(kubeconfig, 2))
        self.namespace, self.next_index, self.factory, self.start_gate = (
            namespace,
            next_index,
            factory,
            start_gate,
        )
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        self.start_gate.wait()
        while (index := self.next_index()) is not None:
            body = self.factory(index)
            began = time.perf_counter()
            try:
                resp = self.core.create_namespaced_pod(self.namespace, body, _preload_content=False)
                resp.read()  # drain the body, or the pooled connection is unusable
                resp.release_conn()
                self.latencies.append((time.perf_counter() - began) * 1000)
            except client.ApiException as err:
                self.errors.append(f"{err.status} {err.reason}: {str(err.body)[:300]}")
            except Exception as err:  # a benchmark reports failures rather than dying on the first
                self.errors.append(repr(err)[:300])


def _counter(limit: int) -> Callable[[], int | None]:
    lock = threading.Lock()
    state = {"next": 0}

    def take() -> int | None:
        with lock:
            if state["next"] >= limit:
                return None
            state["next"] += 1
            return state["next"] - 1

    return take


def create_pods(
    kubeconfig: str, namespace: str, pods: int = 1000, clients: int = 16, factory: PodFactory = default_pod
) -> PodCreateResult:
    """Create PODS pods in NAMESPACE from CLIENTS threads; wall time from first to last response."""
    gate = threading.Barrier(clients + 1)
    next_index = _counter(pods)
    workers = [_Worker(kubeconfig, namespace, next_index, factory, gate) for _ in range(clients)]
    for worker in workers:
        worker.start()
    gate.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    seconds = time.perf_counter() - began
    latencies = sorted(lat for w in workers for lat in w.latencies)
    errors = [e for w in workers for e in w.errors]
    return PodCreateResult(
        pods=pods,
        clients=clients,
        created=len(latencies),
        errors=len(errors),
        seconds=seconds,
        pods_per_second=len(latencies) / seconds if seconds else 0.0,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p99_ms=_percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        first_error=errors[0] if errors else "",
    )


def prepare_namespace(kubeconfig: str, namespace: str, timeout: float = 60.0) -> None:
    """Create NAMESPACE and wait for its default ServiceAccount (pods are rejected before)."""
    core = client.CoreV1Api(_api_client(kubeconfig, 2))
    core.create_namespace({"metadata": {"name": namespace, "labels": {"spreadhook.io/benchmark": "podcreate"}}})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except client.ApiException:
            time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {namespace}")


def delete_namespace(kubeconfig: str, namespace: str) -> None:
    """Delete NAMESPACE in the background (kwok finishes the pods)."""
    core = client.CoreV1Api(_api_client(kubeconfig, 2))
    core.delete_namespace(namespace, propagation_policy="Background")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", default=None, help="default: a fresh bench-<random> namespace")
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--keep", action="store_true", help="do not delete the namespace afterwards")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    namespace = args.namespace or f"bench-{uuid.uuid4().hex[:6]}"
    if args.namespace is None:
        prepare_namespace(args.kubeconfig, namespace)
    result = create_pods(args.kubeconfig, namespace, args.pods, args.clients)
    if args.namespace is None and not args.keep:
        delete_namespace(args.kubeconfig, namespace)
    print(json.dumps(asdict(result)) if args.json else result.summary())
    if result.first_error:
        print(f"first error: {result.first_error}", file=sys.stderr)
    return 0 if result.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
