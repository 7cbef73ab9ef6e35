"""A workload scaled on the embedded store, through the same ledger, mutation and reconciler as the cluster.

``spreadhook plan`` answers "what happens if I scale to N" with this, and ``spreadhook demo`` uses its pod
factory and scale-in order while sending the admissions over HTTPS. Nothing of the decision is
re-implemented here: pods are admitted by ``Ledger``, mutated by ``mutation.inject``, counted and costed
by ``Reconciler``; this module only plays the workload controller and the API server's clock.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spreadhook import mutation, spread
from spreadhook.ledger import Ledger
from spreadhook.model import Obj, WorkloadSpread, resolve_max_replicas
from spreadhook.reconciler import Reconciler
from spreadhook.store import MemoryStore

RECONCILE_EVERY = 250
"""Admissions between two reconciler passes, as a live reconciler keeps up with a burst."""


def workload_objects(ws: WorkloadSpread, replicas: int) -> list[Obj]:
    """The target workload (and a Deployment's ReplicaSet) as their controllers would hold them."""
    ref = ws.target_ref
    assert ref is not None
    meta = {"name": ref.name, "namespace": ws.namespace, "uid": f"uid-{ref.name}"}
    labels = {"app": ref.name}
    template: Obj = {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}}
    spec: Obj = {"replicas": replicas, "template": template}
    if ref.kind == "Job":
        spec = {"parallelism": replicas, "template": template}
    workload: Obj = {"apiVersion": ref.api_version, "kind": ref.kind, "metadata": meta, "spec": spec}
    if ref.kind != "Deployment":
        return [workload]
    rs_meta = {"name": f"{ref.name}-{template_hash(ref.name)}", "namespace": ws.namespace,
               "labels": {"pod-template-hash": template_hash(ref.name)},
               "ownerReferences": [_owner(ref.api_version, ref.kind, ref.name)]}
    rs_template = {**template, "metadata": {"labels": {**labels, "pod-template-hash": template_hash(ref.name)}}}
    replica_set: Obj = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": rs_meta,
                        "spec": {"replicas": replicas, "template": rs_template}}
    return [workload, replica_set]


def template_hash(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:10]


def _owner(api_version: str, kind: str, name: str) -> Obj:
    return {"apiVersion": api_version, "kind": kind, "name": name, "uid": f"uid-{name}", "controller": True,
            "blockOwnerDeletion": True}


def new_pod(ws: WorkloadSpread, index: int) -> Obj:
    """The pod the workload's controller would send to the API server for its ``index``-th replica.

    Deployment pods come with ``generateName`` only, as the ReplicaSet controller sends them, so the
    ledger's nameless-pod path is exercised; StatefulSet pods carry their ordinal.
    """
    ref = ws.target_ref
    assert ref is not None
    labels = {"app": ref.name}
    metadata: Obj = {"namespace": ws.namespace, "labels": labels}
    if ref.kind == "Deployment":
        rs = f"{ref.name}-{template_hash(ref.name)}"
        labels["pod-template-hash"] = template_hash(ref.name)
        metadata["generateName"] = f"{rs}-"
        metadata["ownerReferences"] = [_owner("apps/v1", "ReplicaSet", rs)]
    else:
        metadata["name"] = f"{ref.name}-{index}" if ref.kind == "StatefulSet" else f"{ref.name}-{index:05d}"
        metadata["ownerReferences"] = [_owner(ref.api_version, ref.kind, ref.name)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}


def scale_in_order(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The order in which a ReplicaSet or CloneSet controller deletes pods that are otherwise alike:
    lowest ``pod-deletion-cost`` first, then Kubernetes' usual deletability order."""
    def key(pod: Mapping[str, Any]) -> tuple[Any, ...]:
        cost = (pod.get("metadata", {}).get("annotations") or {}).get(spread.DELETION_COST_ANNOTATION, "0")
        return (int(cost), spread.deletability_key(pod))
    return sorted(pods, key=key)


def subset_of(pod: Mapping[str, Any]) -> str | None:
    info = spread.matched(pod)
    return info.subset if info is not None else None


@dataclass
class Simulation:
    """One WorkloadSpread and its workload on a ``MemoryStore``, with a clock that moves one second per
    reconciler pass so that ledger entries age as they would in a cluster."""

    ws_obj: Mapping[str, Any]
    store: MemoryStore = field(default_factory=MemoryStore)
    started: dt.datetime = field(default_factory=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))

    def __post_init__(self) -> None:
        self._ticks = 0
        obj = dict(self.ws_obj)
        obj["metadata"] = {"namespace": "default", **(obj.get("metadata") or {})}
        self.ws = self.store.apply_workload_spread(obj)
        self.namespace = self.ws.namespace
        self._names = itertools.count()
        self._uids = (f"uid-{i}" for i in itertools.count())
        self.ledger = Ledger(self.store, clock=self.now, new_uid=lambda: next(self._uids))
        self.reconciler = Reconciler(self.store, clock=self.now)
        self.replicas = 0
        self._set_replicas(0)

    def now(self) -> dt.datetime:
        return self.started + dt.timedelta(seconds=self._ticks)

    def _set_replicas(self, replicas: int) -> None:
        self.replicas = replicas
        for obj in workload_objects(self.ws, replicas):
            self.store.apply_workload(obj)

    def _current_ws(self) -> WorkloadSpread:
        ws = self.store.workload_spread(self.ws.namespace, self.ws.name)
        assert ws is not None
        return ws

    def reconcile(self, workload_replicas: int | None = None) -> None:
        self._ticks += 1
        self.reconciler.sync(self.namespace, self.ws.name, workload_replicas=workload_replicas)

    def pods(self) -> list[Obj]:
        return self.store.pods(self.namespace)

    def scale_out(self, replicas: int, *, workload_replicas: int | None = None) -> None:
        """Create pods up to ``replicas``, each admitted through the ledger and mutated as the webhook would."""
        self._set_replicas(replicas)
        base = self.replicas if workload_replicas is None else workload_replicas
        for done, _ in enumerate(range(len(self.pods()), replicas), start=1):
            pod = new_pod(self.ws, next(self._names))
            ws = self._current_ws()
            admission = self.ledger.admit(ws, pod, workload_replicas=base, deadline=time.monotonic() + 5)
            if admission.subset is not None:
                pod = mutation.inject(pod, ws, admission.subset, admission.generated_uid)
            self._persist(pod)
            if done % RECONCILE_EVERY == 0:
                self.reconcile(workload_replicas)
        self.reconcile(workload_replicas)

    def _persist(self, pod: Obj) -> None:
        """What the API server does after admission: name a generateName pod, bind it, run it."""
        metadata = dict(pod["metadata"])
        if not metadata.get("name"):
            metadata["name"] = f"{metadata.pop('generateName', 'pod-')}{next(self._names):05d}"
        metadata["creationTimestamp"] = spread.format_time(self.now())
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": metadata["creationTimestamp"]}
        self.store.put_pod({**pod, "metadata": metadata, "spec": {**pod["spec"], "nodeName": "node-1"},
                            "status": {"phase": "Running", "conditions": [ready]}})

    def scale_in(self, replicas: int, *, workload_replicas: int | None = None) -> list[str | None]:
        """Delete pods down to ``replicas`` in the controller's order; returns their subsets in that order.

        As in a cluster, the controller deletes at once with the costs the reconciler wrote for the old
        replica count: it does not wait for the reconciler to see the new one.
        """
        self.reconcile(workload_replicas)
        self._set_replicas(replicas)
        pods = self.pods()
        leaving = scale_in_order(pods)[: max(0, len(pods) - replicas)]
        ws = self._current_ws()
        for pod in leaving:
            self.ledger.release(ws, pod, deadline=time.monotonic() + 5)
            self.store.delete_pod(self.namespace, pod["metadata"]["name"])
        self.reconcile(workload_replicas)
        return [subset_of(p) for p in leaving]

    def distribution(self, workload_replicas: int | None = None) -> list[Obj]:
        """Per subset: active pods and the resolved limit (None when unlimited)."""
        counts: dict[str | None, int] = {}
        for pod in self.pods():
            if spread.is_active(pod):
                counts[subset_of(pod)] = counts.get(subset_of(pod), 0) + 1
        base = self.replicas if workload_replicas is None else workload_replicas
        rows: list[Obj] = [
            {"name": s.name, "replicas": counts.get(s.name, 0),
             "maxReplicas": resolve_max_replicas(s.max_replicas, base)}
            for s in self.ws.subsets
        ]
        if counts.get(None):
            rows.append({"name": None, "replicas": counts[None], "maxReplicas": None})
        return rows


def runs(subsets: Iterable[str | None]) -> list[Obj]:
    """Consecutive runs of the same subset: ``[a, a, b] -> [{a, 2}, {b, 1}]``."""
    return [{"subset": name, "pods": sum(1 for _ in group)} for name, group in itertools.groupby(subsets)]


def plan(
    ws_obj: Mapping[str, Any], replicas: int, *, start: int = 0, workload_replicas: int | None = None
) -> Obj:
    """``spreadhook plan``: the subsets after scaling from ``start`` to ``replicas``, and the order pods
    leave when scaling from the larger of the two back to the smaller."""
    simulation = Simulation(ws_obj)
    high, low = max(replicas, start), min(replicas, start)
    simulation.scale_out(high, workload_replicas=workload_replicas)
    at_high = simulation.distribution(workload_replicas)
    leaving = simulation.scale_in(low, workload_replicas=workload_replicas) if low < high else []
    subsets = at_high if replicas >= start else simulation.distribution(workload_replicas)
    return {"subsets": subsets, "scaleIn": runs(leaving)}

