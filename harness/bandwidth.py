"""The bandwidth-package scenario (DESIGN.md scenario 1) on a live cluster, shared by benchmarks/burst.py and
the fault suite (tests/e2e): its documents, the CloneSet stand-in's scaling, and the counts and status checks
made on the pods themselves."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from kubernetes import client

from harness.controlplane import ControlPlane, repo_root

SCENARIO = repo_root() / "deploy" / "examples" / "bandwidth-packages.yaml"
MATCHED = "apps.kruise.io/matched-workloadspread"


def scenario_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    """(WorkloadSpread, CloneSet) of the bandwidth-package scenario, in the order they must be applied."""
    docs = [d for d in yaml.safe_load_all(SCENARIO.read_text()) if d]
    ws = next(d for d in docs if d["kind"] == "WorkloadSpread")
    cloneset = next(d for d in docs if d["kind"] == "CloneSet")
    return ws, cloneset


def subset_limits(ws: Mapping[str, Any]) -> dict[str, int | None]:
    """Subset name -> maxReplicas (None = unlimited); the scenario uses integers only."""
    return {s["name"]: s.get("maxReplicas") for s in ws["spec"]["subsets"]}


def apply_scenario(cp: ControlPlane, namespace: str, *, with_spread: bool = True,
                   replicas: int | None = None) -> dict[str, Any]:
    """Apply the WorkloadSpread (unless bare) then the CloneSet, scaled to ``replicas`` if given; return the
    CloneSet as stored (its uid)."""
    ws, cloneset = scenario_documents()
    if with_spread:
        cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(ws))
    cp.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(cloneset))
    if replicas is not None:
        scale_cloneset(cp, namespace, replicas)
    return json.loads(cp.kubectl("-n", namespace, "get", "clonesets.apps.kruise.io", "load-agent", "-o", "json").stdout)


def scale_cloneset(cp: ControlPlane, namespace: str, replicas: int) -> None:
    """What ``kubectl scale`` does; the pods themselves are then made by us, the stand-in controller."""
    cp.kubectl("-n", namespace, "patch", "clonesets.apps.kruise.io", "load-agent", "--type=merge",
               "-p", json.dumps({"spec": {"replicas": replicas}}))


def list_pods(api: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    """Every pod of the namespace as plain JSON (model decoding of thousands of pods costs seconds)."""
    response: Any = client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    return list(json.loads(response.data)["items"])


def active(pod: Mapping[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get("phase") not in (
        "Succeeded", "Failed")


def subset_of(pod: Mapping[str, Any]) -> str:
    """The subset the webhook (or the reconciler's adoption) wrote into the pod, "" when none."""
    raw = (pod["metadata"].get("annotations") or {}).get(MATCHED)
    if not raw:
        return ""
    try:
        return str(json.loads(raw).get("subset") or "")
    except ValueError:
        return ""


def subset_counts(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Active pods per subset, counted on the pods themselves ("" = in no subset)."""
    counts: dict[str, int] = {}
    for pod in pods:
        if active(pod):
            counts[subset_of(pod)] = counts.get(subset_of(pod), 0) + 1
    return counts


def status_mismatches(ws: Mapping[str, Any], counts: Mapping[str, int], limits: Mapping[str, int | None]) -> list[str]:
    """How the WorkloadSpread's overall status differs from the pods (empty once the reconciler caught up)."""
    problems = []
    by_name = {s["name"]: s for s in (ws.get("status") or {}).get("subsetStatuses") or []}
    for name, limit in limits.items():
        entry = by_name.get(name, {})
        replicas = counts.get(name, 0)
        missing = -1 if limit is None else max(0, limit - replicas)
        got = (entry.get("replicas", 0), entry.get("missingReplicas"), len(entry.get("creatingPods") or {}),
               len(entry.get("deletingPods") or {}))
        if got != (replicas, missing, 0, 0):
            problems.append(f"{name}: status replicas/missing/creating/deleting {got}, pods say ({replicas}, "
                            f"{missing}, 0, 0)")
    return problems


def read_workload_spread(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    found: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "apps.kruise.io", "v1beta1", namespace, "workloadspreads", "load-agent")
    return dict(found)
