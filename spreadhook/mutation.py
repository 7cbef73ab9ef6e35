"""A chosen subset applied to a pod, and the RFC 6902 patch the webhook answers with. Pure.

The JSON patch is never written by hand: the pod is edited (copy-on-write, the caller's pod is never
touched) and the patch is the diff between the two, so what the API server applies is exactly the pod this
module computed. Every step is idempotent, because kube-apiserver may call a mutating webhook again on the
same pod (reinvocation) and nothing may stack twice.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jsonpatch

from spreadhook import strategic
from spreadhook.model import FieldError, Obj, Subset, WorkloadSpread
from spreadhook.spread import DELETION_COST_ANNOTATION, MATCHED_ANNOTATION, Matched, admission_deletion_cost


def inject(pod: Mapping[str, Any], ws: WorkloadSpread, subset: Subset, generated_uid: str = "") -> Obj:
    """The pod as admitted into ``subset`` (upstream 2.6, in its order): tolerations, node affinity,
    the subset patch, then the matched annotation (and the deletion cost the reconciler would write) last
    so that no patch can override them."""
    spec = dict(pod.get("spec") or {})
    if subset.tolerations:
        tolerations = list(spec.get("tolerations") or ())
        tolerations += [t for t in subset.tolerations if t not in tolerations]
        spec["tolerations"] = copy.deepcopy(tolerations)
    spec["affinity"] = _with_node_affinity(spec.get("affinity"), subset)
    mutated: Obj = {**pod, "spec": spec}
    if subset.patch:
        original_priority_class = spec.get("priorityClassName")
        mutated = strategic.apply_pod_patch(mutated, subset.patch)
        if mutated.get("spec", {}).get("priorityClassName") != original_priority_class:
            # The Priority admission plugin refuses a pod whose priority does not match its class;
            # clearing it lets the plugin recompute it (upstream #1607).
            mutated["spec"] = {k: v for k, v in mutated["spec"].items() if k != "priority"}
    metadata = dict(mutated.get("metadata") or {})
    metadata["labels"] = dict(metadata.get("labels") or {})
    annotations = dict(metadata.get("annotations") or {})
    annotations[MATCHED_ANNOTATION] = Matched(ws.name, subset.name, generated_uid).to_annotation()
    cost = admission_deletion_cost(ws, subset)
    if cost is not None:
        annotations[DELETION_COST_ANNOTATION] = str(cost)
    metadata["annotations"] = annotations
    mutated["metadata"] = metadata
    return mutated


def _with_node_affinity(affinity: Any, subset: Subset) -> Obj:
    result = dict(affinity or {})
    node_affinity = dict(result.get("nodeAffinity") or {})
    if subset.preferred_node_selector:
        preferred = list(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or ())
        preferred += [copy.deepcopy(t) for t in subset.preferred_node_selector if t not in preferred]
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    if subset.required_node_selector is not None:
        required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        terms = list(required.get("nodeSelectorTerms") or ())
        required["nodeSelectorTerms"] = (
            [_and_term(t, subset.required_node_selector) for t in terms]
            if terms
            else [copy.deepcopy(subset.required_node_selector)]
        )
        node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    result["nodeAffinity"] = node_affinity
    return result


def _and_term(term: Mapping[str, Any], extra: Mapping[str, Any]) -> Obj:
    """Terms are ORed, so the subset's requirements go into every one of them, once."""
    out = dict(term)
    for key in ("matchExpressions", "matchFields"):
        additions = extra.get(key) or ()
        if not additions:
            continue
        existing = list(term.get(key) or ())
        out[key] = existing + [copy.deepcopy(r) for r in additions if r not in existing]
    return out


def json_patch(original: Any, mutated: Any, pointer: str = "") -> list[Obj]:
    """The RFC 6902 operations that turn ``original`` into ``mutated``.

    ``inject`` shares every untouched subtree of the pod with the result, so the diff first walks both
    trees by identity and skips what is shared; only lists that really changed go to ``jsonpatch``'s
    minimal list diff. A plain ``jsonpatch.make_patch`` of the whole pod costs most of an admission
    (benchmarks/engine.py measured ~420 of 550 µs per pod); this walk makes it a small part.
    """
    if original is mutated:
        return []
    if isinstance(original, dict) and isinstance(mutated, dict):
        ops: list[Obj] = []
        for key in original.keys() - mutated.keys():
            ops.append({"op": "remove", "path": f"{pointer}/{_escape(key)}"})
        for key, value in mutated.items():
            path = f"{pointer}/{_escape(key)}"
            if key not in original:
                ops.append({"op": "add", "path": path, "value": value})
            else:
                ops += json_patch(original[key], value, path)
        return ops
    if isinstance(original, list) and isinstance(mutated, list):
        if len(original) == len(mutated):
            return [op for i, (a, b) in enumerate(zip(original, mutated, strict=True))
                    for op in json_patch(a, b, f"{pointer}/{i}")]
        if len(mutated) > len(original) and all(a is b or a == b for a, b in zip(original, mutated, strict=False)):
            return [{"op": "add", "path": f"{pointer}/{i}", "value": mutated[i]}
                    for i in range(len(original), len(mutated))]
        return [_prefixed(op, pointer) for op in jsonpatch.make_patch(original, mutated).patch]
    if original == mutated and type(original) is type(mutated):
        return []
    return [{"op": "replace", "path": pointer, "value": mutated}]


def _escape(key: str) -> str:
    """RFC 6901: annotation keys such as ``apps.kruise.io/matched-workloadspread`` contain a slash."""
    return key.replace("~", "~0").replace("/", "~1")


def _prefixed(op: Obj, pointer: str) -> Obj:
    out = {**op, "path": pointer + op["path"]}
    if "from" in op:
        out["from"] = pointer + op["from"]
    return out


def mutate(
    pod: Mapping[str, Any], ws: WorkloadSpread, subset: Subset, generated_uid: str = ""
) -> tuple[Obj, list[Obj]]:
    """The admitted pod and the JSON patch that produces it from ``pod``."""
    mutated = inject(pod, ws, subset, generated_uid)
    return mutated, json_patch(pod, mutated)


def validate_patches_against_template(ws: WorkloadSpread, template: Mapping[str, Any]) -> list[FieldError]:
    """Upstream rule 11: each subset's patch, applied to a pod made from the workload's template, must give
    a pod the API server would accept. Checked only when the workload exists (the caller fetches it)."""
    pod: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": dict(template.get("metadata") or {}),
                "spec": dict(template.get("spec") or {})}
    errors: list[FieldError] = []
    for i, subset in enumerate(ws.subsets):
        path = f"spec.subsets[{i}].patch"
        if subset.patch is None:
            continue
        problems = strategic.validate_pod_patch(subset.patch)
        if problems:
            errors += [FieldError(path, p) for p in problems]
            continue
        try:
            patched = strategic.apply_pod_patch(pod, subset.patch)
        except strategic.PatchError as exc:
            errors.append(FieldError(path, f"failed to merge patch: {exc}"))
            continue
        errors += [FieldError(path, p) for p in _pod_spec_problems(patched)]
    return errors


def _pod_spec_problems(pod: Mapping[str, Any]) -> list[str]:
    """The pod-spec checks a patch can break most easily (a subset of core ValidatePodSpec)."""
    problems: list[str] = []
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return ["the patched pod has no spec"]
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append("the patched pod has no containers")
        containers = []
    names: set[str] = set()
    for kind in ("initContainers", "containers"):
        for k, container in enumerate(spec.get(kind) or ()):
            if not isinstance(container, Mapping):
                problems.append(f"spec.{kind}[{k}] is not an object")
                continue
            name = container.get("name")
            if not name:
                problems.append(f"spec.{kind}[{k}].name: Required value")
            elif name in names:
                problems.append(f"spec.{kind}[{k}].name: Duplicate value: {name!r}")
            names.add(str(name))
            if not container.get("image"):
                problems.append(f"spec.{kind}[{k}].image: Required value")
            for e, env in enumerate(container.get("env") or ()):
                if not isinstance(env, Mapping) or not env.get("name"):
                    problems.append(f"spec.{kind}[{k}].env[{e}].name: Required value")
    volumes = [v.get("name") for v in spec.get("volumes") or () if isinstance(v, Mapping)]
    if len(volumes) != len(set(volumes)):
        problems.append("spec.volumes: Duplicate volume names")
    return problems
