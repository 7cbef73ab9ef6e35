"""AdmissionReview bodies as kube-apiserver sends them."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any


def pod(name: str, owner: str = "load-agent", annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": owner},
                         "annotations": dict(annotations or {}),
                         "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                                              "name": owner, "uid": "u", "controller": True}]},
            "spec": {"containers": [{"name": "main", "image": "pause"}]}}


def review(operation: str, obj: Any = None, old: Any = None, *, dry_run: bool = False,
           resource: str = "pods", sub_resource: str = "", name: str = "") -> dict[str, Any]:
    request = {"uid": str(uuid.uuid4()), "operation": operation, "namespace": "default", "name": name,
               "kind": {"group": "", "version": "v1", "kind": "Pod"},
               "resource": {"group": "", "version": "v1", "resource": resource},
               "object": obj, "oldObject": old, "dryRun": dry_run}
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    return json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []
