"""Workload kinds, pure: which owner chain leads from a pod to the workload a WorkloadSpread targets, how
many replicas that workload wants, and which pod version is its newest.

The lookups of owner objects are passed in as a function, so the same rules serve the webhook (cached
reads), the reconciler and the embedded store, and are tested on plain dicts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spreadhook.model import VERSION_IGNORED, Obj, WorkloadSpread, api_group

OwnerLookup = Callable[[str, str, str], Obj | None]
"""(apiVersion, kind, name) -> the owner object in the pod's namespace, or None when it does not exist."""

MAX_OWNER_DEPTH = 4


@dataclass(frozen=True, slots=True)
class CustomWorkload:
    """An entry of upstream's custom-workload whitelist (``WorkloadSpread_Watch_Custom_Workload_WhiteList``)."""

    group: str
    kind: str
    replicas_path: str = ""
    sub_resources: tuple[tuple[str, str], ...] = ()  # (group, kind) of intermediate owners


BUILTIN_KINDS: frozenset[tuple[str, str]] = frozenset({
    ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("batch", "Job"),
    ("apps.kruise.io", "CloneSet"), ("apps.kruise.io", "StatefulSet"),
})
JOB = ("batch", "Job")


def parse_whitelist(text: str) -> list[CustomWorkload]:
    """Read the whitelist JSON as upstream's ConfigMap holds it; a malformed entry is skipped, not fatal."""
    try:
        body = json.loads(text) if text else {}
    except ValueError:
        return []
    entries = body.get("workloads") if isinstance(body, dict) else None
    result = []
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict) or not entry.get("Kind"):
            continue
        subs = tuple(
            (str(s.get("Group", "")), str(s.get("Kind", "")))
            for s in entry.get("subResources") or ()
            if isinstance(s, dict)
        )
        result.append(CustomWorkload(str(entry.get("Group", "")), str(entry["Kind"]),
                                     str(entry.get("replicasPath", "")), subs))
    return result


def known_kinds(custom: Iterable[CustomWorkload]) -> frozenset[tuple[str, str]]:
    """Every (group, kind) that may stand in a pod's owner chain."""
    kinds = set(BUILTIN_KINDS)
    for workload in custom:
        kinds.add((workload.group, workload.kind))
        kinds.update(workload.sub_resources)
    return frozenset(kinds)


def controller_of(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def owner_chain(
    pod: Mapping[str, Any], lookup: OwnerLookup, kinds: frozenset[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    """The pod's controller, its controller, and so on, as (apiVersion, kind, name), stopping at an owner of
    an unknown kind or one that does not exist. Pod -> ReplicaSet -> Deployment; Pod -> CloneSet."""
    chain: list[tuple[str, str, str]] = []
    ref = controller_of(pod)
    while ref is not None and len(chain) < MAX_OWNER_DEPTH:
        api_version, kind, name = str(ref.get("apiVersion", "")), str(ref.get("kind", "")), str(ref.get("name", ""))
        if (api_group(api_version), kind) not in kinds:
            break
        chain.append((api_version, kind, name))
        owner = lookup(api_version, kind, name)
        if owner is None:
            break
        ref = controller_of(owner)
    return chain


def selects(ws: WorkloadSpread, pod: Mapping[str, Any]) -> bool:
    """``targetFilter.selector``: a WorkloadSpread may govern only some of its workload's pods."""
    if ws.target_filter is None or ws.target_filter.selector is None:
        return True
    return label_selector_matches(ws.target_filter.selector, (pod.get("metadata") or {}).get("labels") or {})


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for req in selector.get("matchExpressions") or ():
        key, operator, values = req.get("key"), req.get("operator"), req.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def replicas(ws: WorkloadSpread, workload: Mapping[str, Any] | None, custom: Iterable[CustomWorkload] = ()) -> int:
    """How many pods the workload wants: the base of percentage maxReplicas.

    A missing workload, or a nil ``replicas``/``parallelism``, gives 0 rather than a crash (upstream #2523).
    ``targetFilter.replicasPathList`` wins over everything; custom kinds use the whitelist's path.
    """
    if workload is None:
        return 0
    if ws.target_filter is not None and ws.target_filter.replicas_path_list:
        return sum(_int_at(workload, path) for path in ws.target_filter.replicas_path_list)
    group, kind = _group_kind(workload)
    if (group, kind) == JOB:
        return _int_at(workload, "spec.parallelism")
    if (group, kind) in BUILTIN_KINDS:
        return _int_at(workload, "spec.replicas")
    for entry in custom:
        if (entry.group, entry.kind) == (group, kind):
            return _int_at(workload, entry.replicas_path) if entry.replicas_path else 0
    return _int_at(workload, "spec.replicas")


POD_OWNER_KINDS: frozenset[tuple[str, str]] = BUILTIN_KINDS - {("apps", "Deployment")}
"""The built-in kinds whose controller creates the pods itself (a Deployment's come from its ReplicaSet)."""


def wanted_pods(workload: Mapping[str, Any] | None) -> int:
    """``spec.replicas``, or a Job's ``spec.parallelism``: what a scale-out changes."""
    if workload is None:
        return 0
    return _int_at(workload, "spec.parallelism" if _group_kind(workload) == JOB else "spec.replicas")


def template_pod(workload: Mapping[str, Any]) -> Obj | None:
    """A pod as the workload's controller will create it: its template's labels and a controller reference to
    the workload. It names the WorkloadSpread and the pod version a scale-out's pods will count in (through the
    same owner chain and ``spread.pod_version`` as the pods themselves) before any of them exists. None for
    kinds that do not create pods themselves."""
    if _group_kind(workload) not in POD_OWNER_KINDS:
        return None
    metadata = workload.get("metadata") or {}
    template = ((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}
    owner = {"apiVersion": workload.get("apiVersion"), "kind": workload.get("kind"), "name": metadata.get("name"),
             "uid": metadata.get("uid"), "controller": True}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": metadata.get("namespace"), "labels": dict(template.get("labels") or {}),
                         "ownerReferences": [owner]}}


def pods_to_come(ws: WorkloadSpread, workload: Mapping[str, Any] | None,
                 custom: Iterable[CustomWorkload] = ()) -> int:
    """How many pods the workload has yet to create, by its own object: the pods it wants (``replicas``) less
    those its controller last reported (``status.replicas``; a Job's ``status.active``). Controllers report in
    batches, so during a burst this runs ahead of the truth: it sizes the slots a burst's first write reserves,
    and never decides where a pod goes. A StatefulSet that creates its pods in order, each once the one before
    is ready (``podManagementPolicy`` other than ``Parallel``), has none to come at once: 0."""
    if workload is None:
        return 0
    if str(workload.get("kind", "")) == "StatefulSet" and (workload.get("spec") or {}).get(
            "podManagementPolicy") != "Parallel":
        return 0
    reported = "status.active" if _group_kind(workload) == JOB else "status.replicas"
    return max(0, replicas(ws, workload, custom) - _int_at(workload, reported))


def _group_kind(workload: Mapping[str, Any]) -> tuple[str, str]:
    return api_group(str(workload.get("apiVersion", ""))), str(workload.get("kind", ""))


def _int_at(obj: Any, path: str) -> int:
    """The integer at a dot-separated path (list indexes as numbers); anything else counts as 0."""
    node = obj
    for part in path.split("."):
        if isinstance(node, Mapping):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return 0
    return node if isinstance(node, int) and not isinstance(node, bool) and node > 0 else 0


def latest_version(workload: Mapping[str, Any] | None, replica_sets: Iterable[Mapping[str, Any]] = ()) -> str | None:
    """The newest pod version of the workload (upstream 2.8), for the reversed scale-in of old versions.

    Deployment: the ``pod-template-hash`` of its ReplicaSet whose template equals the Deployment's; a
    ReplicaSet: its own hash; CloneSet: the short form of ``status.updateRevision``. None when unknown yet,
    in which case no version is treated as old.
    """
    if workload is None:
        return None
    kind = workload.get("kind")
    labels = (workload.get("metadata") or {}).get("labels") or {}
    if kind == "ReplicaSet":
        return str(labels.get("pod-template-hash") or VERSION_IGNORED)
    if kind == "Deployment":
        template = _without_hash((workload.get("spec") or {}).get("template") or {})
        for rs in replica_sets:
            if (rs.get("metadata") or {}).get("deletionTimestamp"):
                continue
            if _without_hash((rs.get("spec") or {}).get("template") or {}) == template:
                return str(((rs.get("metadata") or {}).get("labels") or {}).get("pod-template-hash") or "") or None
        return None
    return VERSION_IGNORED


def _without_hash(template: Mapping[str, Any]) -> Obj:
    metadata = dict(template.get("metadata") or {})
    metadata["labels"] = {k: v for k, v in (metadata.get("labels") or {}).items() if k != "pod-template-hash"}
    return {**template, "metadata": metadata}
