"""Microseconds per pod for the engine's choose-and-mutate step (issue 2's figure), and for a whole
AdmissionReview through the flask app with the embedded store (no network), so a regression in either shows.

    python benchmarks/engine.py [--pods N] [-o table|json]

Prints the figures; it asserts nothing (speed is measured, not asserted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import time
from typing import Any

from spreadhook import model, mutation, spread
from spreadhook.admission import Webhook
from spreadhook.ledger import Ledger
from spreadhook.metrics import Metrics
from spreadhook.server import create_app
from spreadhook.store import MemoryStore

SUBSETS = 12


def workload_spread() -> dict[str, Any]:
    """12 subsets, each with a node selector, a toleration and a patch touching labels, annotations, env and
    resources: heavier than any scenario of DESIGN.md."""
    subsets: list[dict[str, Any]] = []
    for i in range(SUBSETS):
        subset: dict[str, Any] = {
            "name": f"subset-{i}",
            "requiredNodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In", "values": [f"p{i}"]}]},
            "preferredNodeSelector": [{"weight": 10, "preference": {"matchExpressions": [
                {"key": "zone", "operator": "In", "values": [f"z{i}"]}]}}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": f"p{i}", "effect": "NoSchedule"}],
            "patch": {"metadata": {"labels": {"subset": f"s{i}"}, "annotations": {"bandwidth": f"cbwp-{i}"}},
                      "spec": {"containers": [{"name": "app", "env": [{"name": "SUBSET", "value": f"s{i}"}],
                                              "resources": {"limits": {"cpu": "2"}}}]}},
        }
        if i < SUBSETS - 1:
            subset["maxReplicas"] = 1_000_000
        subsets.append(subset)
    return {"apiVersion": model.V1BETA1, "kind": "WorkloadSpread",
            "metadata": {"name": "bench", "namespace": "default", "uid": "u", "resourceVersion": "1"},
            "spec": {"targetRef": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "app"},
                     "subsets": subsets}}


def pod(i: int) -> dict[str, Any]:
    """A realistic pod: two containers with env, mounts, probes and resources, affinity, tolerations."""
    container = {"name": "app", "image": "registry.example.com/app:1.2.3", "ports": [{"containerPort": 8080}],
                 "env": [{"name": f"VAR_{k}", "value": str(k)} for k in range(8)],
                 "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                 "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 5}}
    sidecar = {"name": "proxy", "image": "registry.example.com/proxy:9", "args": ["--port=15001"]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"app-{i:06d}", "namespace": "default",
                         "labels": {"app": "app", "tier": "backend", "version": "v1"},
                         "annotations": {"prometheus.io/scrape": "true"},
                         "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                                              "name": "app", "uid": "x", "controller": True}]},
            "spec": {"containers": [container, sidecar], "volumes": [{"name": "config", "configMap": {"name": "c"}}],
                     "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 300}],
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                         "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In",
                                                                      "values": ["linux"]}]}]}}}}}


def engine_us_per_pod(count: int) -> float:
    """Choose (ledger decision on the status) + mutate (inject and JSON patch) for one pod."""
    ws = model.parse(workload_spread())
    # Fill the first 11 subsets so the choice walks all 12, as the last pods of a burst do.
    ws.status.versioned_subset_statuses[model.VERSION_IGNORED] = [
        model.SubsetStatus(s.name, 0, 0 if i < SUBSETS - 1 else -1) for i, s in enumerate(ws.subsets)]
    pods = [pod(i) for i in range(count)]
    now = dt.datetime.now(dt.UTC)
    uids = (str(i) for i in itertools.count())
    started = time.perf_counter()
    for p in pods:
        admission = spread.admit(ws, ws.status, p, workload_replicas=count, now=now, new_uid=lambda: next(uids))
        assert admission.subset is not None
        mutation.mutate(p, ws, admission.subset, admission.generated_uid)
    return (time.perf_counter() - started) / count * 1e6


def review_us_per_pod(count: int) -> float:
    """A whole AdmissionReview through the flask app (parse, decide, ledger commit, patch, metrics)."""
    store = MemoryStore()
    store.apply_workload_spread(workload_spread())
    metrics = Metrics()
    webhook = Webhook(store, Ledger(store, on_commit=metrics.ledger_commit))
    client = create_app(webhook, metrics, ready=lambda: True).test_client()
    bodies = [json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(i), "operation": "CREATE", "namespace": "default", "resource": {"resource": "pods"},
        "object": pod(i)}}) for i in range(count)]
    started = time.perf_counter()
    for body in bodies:
        reply = client.post("/mutate-pods", data=body, content_type="application/json")
        assert reply.status_code == 200
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args()
    figures = {"subsets": SUBSETS, "pods": args.pods,
               "choose_and_mutate_us_per_pod": round(engine_us_per_pod(args.pods), 1),
               "admission_review_us_per_pod": round(review_us_per_pod(args.pods), 1)}
    if args.output == "json":
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
