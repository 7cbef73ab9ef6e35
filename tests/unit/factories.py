"""Plain-dict builders for unit tests: WorkloadSpreads, pods and nodes as the API server would hand them."""

from __future__ import annotations

import datetime as dt
from typing import Any

from spreadhook import model

T0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)


def ws_dict(
    subsets: list[dict[str, Any]],
    *,
    kind: str = "CloneSet",
    api_version: str = model.V1BETA1,
    strategy: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    name: str = "ws",
) -> dict[str, Any]:
    target_api = {"CloneSet": "apps.kruise.io/v1alpha1", "Job": "batch/v1"}.get(kind, "apps/v1")
    obj: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": "WorkloadSpread",
        "metadata": {"name": name, "namespace": "default", "uid": "ws-uid", "generation": 1,
                     "resourceVersion": "1"},
        "spec": {"targetRef": {"apiVersion": target_api, "kind": kind, "name": "app"}, "subsets": subsets},
    }
    if strategy is not None:
        obj["spec"]["scheduleStrategy"] = strategy
    if status is not None:
        obj["status"] = status
    return obj


def ws(subsets: list[dict[str, Any]], **kwargs: Any) -> model.WorkloadSpread:
    return model.parse(ws_dict(subsets, **kwargs))


def pod(
    name: str = "app-0",
    *,
    owner_kind: str = "CloneSet",
    owner_name: str = "app",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node: str | None = None,
    phase: str = "Running",
    created: dt.datetime = T0,
    ready: bool = True,
    generate_name: bool = False,
) -> dict[str, Any]:
    api = {"CloneSet": "apps.kruise.io/v1alpha1", "Job": "batch/v1"}.get(owner_kind, "apps/v1")
    metadata: dict[str, Any] = {
        "namespace": "default",
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
        "creationTimestamp": model.format_time(created),
        "ownerReferences": [{"apiVersion": api, "kind": owner_kind, "name": owner_name, "uid": "u",
                             "controller": True}],
    }
    if generate_name:
        metadata["generateName"] = f"{owner_name}-"
    else:
        metadata["name"] = name
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": model.format_time(created)}] if ready \
        else []
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "main", "image": "nginx"}]},
        "status": {"phase": phase, "conditions": conditions},
    }
    if node:
        obj["spec"]["nodeName"] = node
    return obj


def node(name: str, labels: dict[str, str] | None = None, taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": dict(labels or {})}, "spec": {"taints": list(taints or [])}}
