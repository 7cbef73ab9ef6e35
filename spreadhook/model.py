"""WorkloadSpread in one typed internal form, parsed from and written back to the API's plain dicts.

Both served versions (``apps.kruise.io/v1alpha1`` and ``v1beta1``) parse into the same dataclasses, so the
algorithm never cares which version a user wrote; ``to_dict`` writes either version back, which is also the
whole of the v1alpha1 <-> v1beta1 conversion. Node selector terms, tolerations and patches are kept as the
API's own dicts: they are Kubernetes core types that the algorithm passes through, not reinterprets.

This module is pure: no I/O, no Kubernetes client (an import-linter contract checks it).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

GROUP = "apps.kruise.io"
V1ALPHA1 = f"{GROUP}/v1alpha1"
V1BETA1 = f"{GROUP}/v1beta1"
SERVED_VERSIONS = (V1ALPHA1, V1BETA1)
KIND = "WorkloadSpread"

VERSION_IGNORED = "versionIgnored"
CONDITION_SCHEDULABLE = "Schedulable"
MAX_UNSCHEDULABLE_SECONDS = 300
"""How long a subset stays marked unschedulable; it also bounds ``rescheduleCriticalSeconds`` (rule 20)."""

Obj: TypeAlias = dict[str, Any]
MaxReplicas: TypeAlias = int | str | None


class ModelError(ValueError):
    """The object cannot even be read as a WorkloadSpread (wrong shape, not a mapping)."""


# --------------------------------------------------------------------------------------------------
# Time: metav1.Time is RFC 3339 with second precision; the ledger compares these to decide expiry.


def parse_time(value: Any) -> dt.datetime | None:
    """Read an RFC 3339 timestamp as an aware UTC datetime; ``None`` for anything unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def format_time(value: dt.datetime) -> str:
    """Write a datetime the way metav1.Time serialises: UTC, whole seconds, ``Z`` suffix."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------------
# Spec types


@dataclass(frozen=True, slots=True)
class TargetRef:
    api_version: str
    kind: str
    name: str

    @property
    def group(self) -> str:
        """The API group: upstream compares group, kind and name, never the version."""
        return api_group(self.api_version)

    def same_workload(self, api_version: str, kind: str, name: str) -> bool:
        return self.kind == kind and self.name == name and self.group == api_group(api_version)


def api_group(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


@dataclass(frozen=True, slots=True)
class TargetFilter:
    selector: Obj | None = None
    replicas_path_list: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AdaptiveStrategy:
    disable_simulation_schedule: bool | None = None
    reschedule_critical_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class ScheduleStrategy:
    type: str = ""
    adaptive: AdaptiveStrategy | None = None

    @property
    def reschedule_seconds(self) -> int | None:
        """Rescheduling is on only for Adaptive with a positive ``rescheduleCriticalSeconds`` (upstream 3.7)."""
        if self.type != "Adaptive" or self.adaptive is None:
            return None
        seconds = self.adaptive.reschedule_critical_seconds
        return seconds if seconds is not None and seconds > 0 else None


@dataclass(frozen=True, slots=True)
class Subset:
    name: str
    required_node_selector: Obj | None = None
    preferred_node_selector: tuple[Obj, ...] = ()
    tolerations: tuple[Obj, ...] = ()
    max_replicas: MaxReplicas = None
    patch: Obj | None = None


# --------------------------------------------------------------------------------------------------
# Status types


@dataclass(slots=True)
class SubsetCondition:
    type: str
    status: str
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


@dataclass(slots=True)
class SubsetStatus:
    name: str
    replicas: int = 0
    missing_replicas: int = -1
    creating_pods: dict[str, str] = field(default_factory=dict)
    deleting_pods: dict[str, str] = field(default_factory=dict)
    conditions: list[SubsetCondition] = field(default_factory=list)

    def condition(self, condition_type: str) -> SubsetCondition | None:
        return next((c for c in self.conditions if c.type == condition_type), None)

    def is_unschedulable(self) -> bool:
        condition = self.condition(CONDITION_SCHEDULABLE)
        return condition is not None and condition.status == "False"

    def clone(self) -> SubsetStatus:
        return SubsetStatus(
            self.name,
            self.replicas,
            self.missing_replicas,
            dict(self.creating_pods),
            dict(self.deleting_pods),
            [replace(c) for c in self.conditions],
        )


@dataclass(slots=True)
class WorkloadSpreadStatus:
    observed_generation: int = 0
    subset_statuses: list[SubsetStatus] = field(default_factory=list)
    versioned_subset_statuses: dict[str, list[SubsetStatus]] = field(default_factory=dict)

    def clone(self) -> WorkloadSpreadStatus:
        return WorkloadSpreadStatus(
            self.observed_generation,
            [s.clone() for s in self.subset_statuses],
            {v: [s.clone() for s in subs] for v, subs in self.versioned_subset_statuses.items()},
        )


@dataclass(slots=True)
class WorkloadSpread:
    metadata: Obj
    target_ref: TargetRef | None
    subsets: tuple[Subset, ...]
    target_filter: TargetFilter | None = None
    schedule_strategy: ScheduleStrategy = ScheduleStrategy()
    status: WorkloadSpreadStatus = field(default_factory=WorkloadSpreadStatus)
    api_version: str = V1BETA1

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace", ""))

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def generation(self) -> int:
        value = self.metadata.get("generation", 0)
        return value if isinstance(value, int) else 0

    @property
    def resource_version(self) -> str:
        return str(self.metadata.get("resourceVersion", ""))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


# --------------------------------------------------------------------------------------------------
# maxReplicas


_PERCENT = re.compile(r"^(\d+)%$")


def resolve_max_replicas(max_replicas: MaxReplicas, workload_replicas: int) -> int | None:
    """The integer limit of a subset: ``None`` when unlimited, percentages rounded up as upstream does.

    Raises ``ValueError`` for a string that is not ``<digits>%``: upstream's legacy parser silently reads
    ``"50"`` as 50% at validation and 0 at run time; here it is refused at validation and never reaches this.
    """
    if max_replicas is None:
        return None
    if isinstance(max_replicas, bool):
        raise ValueError(f"maxReplicas {max_replicas!r} is not an integer or a percentage")
    if isinstance(max_replicas, int):
        return max_replicas
    match = _PERCENT.match(max_replicas)
    if match is None:
        raise ValueError(f"maxReplicas {max_replicas!r} is not an integer or a percentage like '50%'")
    return math.ceil(int(match.group(1)) * max(workload_replicas, 0) / 100)


def is_percent(max_replicas: MaxReplicas) -> bool:
    return isinstance(max_replicas, str)


# --------------------------------------------------------------------------------------------------
# Parsing


def _mapping(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ModelError(f"{path}: must be an object, got {type(value).__name__}")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ModelError(f"{path}: must be a list, got {type(value).__name__}")
    return value


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _str_map(value: Any, path: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in _mapping(value, path).items()}


def parse(obj: Mapping[str, Any]) -> WorkloadSpread:
    """Read a WorkloadSpread of either served version. Shape errors raise ``ModelError``; content errors
    (an empty name, a bad selector) are left to ``validate`` so that all of them are reported at once."""
    if not isinstance(obj, Mapping):
        raise ModelError("a WorkloadSpread must be a JSON object")
    api_version = str(obj.get("apiVersion") or V1BETA1)
    alpha = api_version == V1ALPHA1
    spec = _mapping(obj.get("spec"), "spec")
    metadata = copy.deepcopy(dict(_mapping(obj.get("metadata"), "metadata")))

    raw_ref = spec.get("targetRef")
    target_ref = None
    if raw_ref is not None:
        ref = _mapping(raw_ref, "spec.targetRef")
        target_ref = TargetRef(str(ref.get("apiVersion", "")), str(ref.get("kind", "")), str(ref.get("name", "")))

    target_filter = None
    if spec.get("targetFilter") is not None:
        raw_filter = _mapping(spec["targetFilter"], "spec.targetFilter")
        selector = raw_filter.get("selector")
        target_filter = TargetFilter(
            dict(_mapping(selector, "spec.targetFilter.selector")) if selector is not None else None,
            tuple(str(p) for p in _list(raw_filter.get("replicasPathList"), "spec.targetFilter.replicasPathList")),
        )

    subsets = tuple(
        _parse_subset(_mapping(raw, f"spec.subsets[{i}]"), alpha)
        for i, raw in enumerate(_list(spec.get("subsets"), "spec.subsets"))
    )
    return WorkloadSpread(
        metadata=metadata,
        target_ref=target_ref,
        subsets=subsets,
        target_filter=target_filter,
        schedule_strategy=_parse_strategy(_mapping(spec.get("scheduleStrategy"), "spec.scheduleStrategy")),
        status=parse_status(obj.get("status")),
        api_version=api_version,
    )


def _parse_subset(raw: Mapping[str, Any], alpha: bool) -> Subset:
    required_key, preferred_key = _selector_keys(alpha)
    max_replicas = raw.get("maxReplicas")
    if not (max_replicas is None or isinstance(max_replicas, int | str)) or isinstance(max_replicas, bool):
        max_replicas = str(max_replicas)  # kept so validation can name it; never resolved
    required = raw.get(required_key)
    patch = raw.get("patch")
    return Subset(
        name=str(raw.get("name", "")),
        required_node_selector=copy.deepcopy(dict(required)) if isinstance(required, Mapping) else None,
        preferred_node_selector=tuple(copy.deepcopy(t) for t in _list(raw.get(preferred_key), preferred_key)),
        tolerations=tuple(copy.deepcopy(t) for t in _list(raw.get("tolerations"), "tolerations")),
        max_replicas=max_replicas,
        patch=copy.deepcopy(patch) if patch is not None else None,
    )


def _selector_keys(alpha: bool) -> tuple[str, str]:
    """The only field names the two versions disagree on."""
    if alpha:
        return "requiredNodeSelectorTerm", "preferredNodeSelectorTerms"
    return "requiredNodeSelector", "preferredNodeSelector"


def _parse_strategy(raw: Mapping[str, Any]) -> ScheduleStrategy:
    adaptive = None
    if raw.get("adaptive") is not None:
        a = _mapping(raw["adaptive"], "spec.scheduleStrategy.adaptive")
        rcs = a.get("rescheduleCriticalSeconds")
        dss = a.get("disableSimulationSchedule")
        adaptive = AdaptiveStrategy(
            disable_simulation_schedule=dss if isinstance(dss, bool) else None,
            reschedule_critical_seconds=rcs if isinstance(rcs, int) and not isinstance(rcs, bool) else None,
        )
    return ScheduleStrategy(type=str(raw.get("type") or ""), adaptive=adaptive)


def parse_status(raw: Any) -> WorkloadSpreadStatus:
    status = _mapping(raw, "status")
    versioned = _mapping(status.get("versionedSubsetStatuses"), "status.versionedSubsetStatuses")
    return WorkloadSpreadStatus(
        observed_generation=_int(status.get("observedGeneration")),
        subset_statuses=[_parse_subset_status(s) for s in _list(status.get("subsetStatuses"), "subsetStatuses")],
        versioned_subset_statuses={
            str(v): [_parse_subset_status(s) for s in _list(subs, f"versionedSubsetStatuses.{v}")]
            for v, subs in versioned.items()
        },
    )


def _parse_subset_status(raw: Any) -> SubsetStatus:
    s = _mapping(raw, "subsetStatus")
    return SubsetStatus(
        name=str(s.get("name", "")),
        replicas=_int(s.get("replicas")),
        missing_replicas=_int(s.get("missingReplicas"), -1),
        creating_pods=_str_map(s.get("creatingPods"), "creatingPods"),
        deleting_pods=_str_map(s.get("deletingPods"), "deletingPods"),
        conditions=[_parse_condition(_mapping(c, "condition")) for c in _list(s.get("conditions"), "conditions")],
    )


def _parse_condition(c: Mapping[str, Any]) -> SubsetCondition:
    generation = c.get("observedGeneration")
    return SubsetCondition(
        type=str(c.get("type", "")),
        status=str(c.get("status", "")),
        reason=str(c.get("reason") or ""),
        message=str(c.get("message") or ""),
        last_transition_time=str(c["lastTransitionTime"]) if c.get("lastTransitionTime") else None,
        observed_generation=generation if isinstance(generation, int) else None,
    )


# --------------------------------------------------------------------------------------------------
# Writing back (this is also the conversion between versions)


def to_dict(ws: WorkloadSpread, api_version: str | None = None, *, with_status: bool = True) -> Obj:
    """Write ``ws`` as ``api_version`` (default: the version it was read as). Empty optional fields are
    omitted, as Go's ``omitempty`` does, so a parse/write round trip gives back what the user wrote."""
    version = api_version or ws.api_version
    if version not in SERVED_VERSIONS:
        raise ModelError(f"apiVersion {version!r} is not served; use one of {', '.join(SERVED_VERSIONS)}")
    alpha = version == V1ALPHA1
    spec: Obj = {}
    if ws.target_ref is not None:
        spec["targetRef"] = {
            "apiVersion": ws.target_ref.api_version,
            "kind": ws.target_ref.kind,
            "name": ws.target_ref.name,
        }
    if ws.target_filter is not None:
        tf: Obj = {}
        if ws.target_filter.selector is not None:
            tf["selector"] = copy.deepcopy(ws.target_filter.selector)
        if ws.target_filter.replicas_path_list:
            tf["replicasPathList"] = list(ws.target_filter.replicas_path_list)
        spec["targetFilter"] = tf
    spec["subsets"] = [_subset_to_dict(s, alpha) for s in ws.subsets]
    strategy = _strategy_to_dict(ws.schedule_strategy)
    if strategy:
        spec["scheduleStrategy"] = strategy
    out: Obj = {"apiVersion": version, "kind": KIND, "metadata": copy.deepcopy(ws.metadata), "spec": spec}
    if with_status:
        status = status_to_dict(ws.status, alpha=alpha)
        if status:
            out["status"] = status
    return out


def _subset_to_dict(s: Subset, alpha: bool) -> Obj:
    required_key, preferred_key = _selector_keys(alpha)
    out: Obj = {"name": s.name}
    if s.required_node_selector is not None:
        out[required_key] = copy.deepcopy(s.required_node_selector)
    if s.preferred_node_selector:
        out[preferred_key] = copy.deepcopy(list(s.preferred_node_selector))
    if s.tolerations:
        out["tolerations"] = copy.deepcopy(list(s.tolerations))
    if s.max_replicas is not None:
        out["maxReplicas"] = s.max_replicas
    if s.patch is not None:
        out["patch"] = copy.deepcopy(s.patch)
    return out


def _strategy_to_dict(strategy: ScheduleStrategy) -> Obj:
    out: Obj = {}
    if strategy.type:
        out["type"] = strategy.type
    if strategy.adaptive is not None:
        adaptive: Obj = {}
        if strategy.adaptive.disable_simulation_schedule is not None:
            adaptive["disableSimulationSchedule"] = strategy.adaptive.disable_simulation_schedule
        if strategy.adaptive.reschedule_critical_seconds is not None:
            adaptive["rescheduleCriticalSeconds"] = strategy.adaptive.reschedule_critical_seconds
        out["adaptive"] = adaptive
    return out


def status_to_dict(status: WorkloadSpreadStatus, *, alpha: bool = False) -> Obj:
    out: Obj = {}
    if status.observed_generation:
        out["observedGeneration"] = status.observed_generation
    if status.subset_statuses:
        out["subsetStatuses"] = [_subset_status_to_dict(s, alpha) for s in status.subset_statuses]
    if status.versioned_subset_statuses:
        out["versionedSubsetStatuses"] = {
            v: [_subset_status_to_dict(s, alpha) for s in subs]
            for v, subs in status.versioned_subset_statuses.items()
        }
    return out


def _subset_status_to_dict(s: SubsetStatus, alpha: bool) -> Obj:
    out: Obj = {"name": s.name, "replicas": s.replicas, "missingReplicas": s.missing_replicas}
    if s.creating_pods:
        out["creatingPods"] = dict(s.creating_pods)
    if s.deleting_pods:
        out["deletingPods"] = dict(s.deleting_pods)
    if s.conditions:
        out["conditions"] = [_condition_to_dict(c, alpha) for c in s.conditions]
    return out


def _condition_to_dict(c: SubsetCondition, alpha: bool) -> Obj:
    """v1alpha1 has its own condition type; v1beta1 uses metav1.Condition, whose ``reason`` is required
    (conversion writes ``Unknown`` when it is empty) and which alone carries ``observedGeneration``."""
    out: Obj = {"type": c.type, "status": c.status}
    if alpha:
        if c.last_transition_time:
            out["lastTransitionTime"] = c.last_transition_time
        if c.reason:
            out["reason"] = c.reason
        if c.message:
            out["message"] = c.message
        return out
    if c.observed_generation is not None:
        out["observedGeneration"] = c.observed_generation
    out["lastTransitionTime"] = c.last_transition_time or "1970-01-01T00:00:00Z"
    out["reason"] = c.reason or "Unknown"
    out["message"] = c.message
    return out


def convert(obj: Mapping[str, Any], api_version: str) -> Obj:
    """v1alpha1 <-> v1beta1, as the conversion webhook answers it."""
    return to_dict(parse(obj), api_version)


def managed_fields_in_storage_version(managed_fields: Any) -> list[Any] | None:
    """``metadata.managedFields`` with every v1alpha1 entry restated in v1beta1, or None when none is v1alpha1.

    On every update kube-apiserver converts the object into the version of each managedFields entry, to work
    out which fields change hands: one ``kubectl apply`` of a v1alpha1 manifest (OpenKruise's examples all
    are) made each ledger status write wait for about five calls to the conversion webhook, most of the
    write's time under a burst (measured: 5.9 conversions per status PUT, 1.1 once restated). The versions
    differ only in the names of a subset's two node-selector fields, so restating an entry renames those
    keys in its field set; who owns which field stays exactly as it was."""
    if not isinstance(managed_fields, list) or not any(
            isinstance(entry, Mapping) and entry.get("apiVersion") == V1ALPHA1 for entry in managed_fields):
        return None
    return [{**entry, "apiVersion": V1BETA1, "fieldsV1": _renamed_fields(entry.get("fieldsV1"))}
            if isinstance(entry, Mapping) and entry.get("apiVersion") == V1ALPHA1 else copy.deepcopy(entry)
            for entry in managed_fields]


_BETA_FIELD_NAMES = {f"f:{alpha}": f"f:{beta}" for alpha, beta in zip(_selector_keys(True), _selector_keys(False),
                                                                       strict=True)}


def _renamed_fields(fields: Any) -> Any:
    if isinstance(fields, Mapping):
        return {_BETA_FIELD_NAMES.get(key, key): _renamed_fields(value) for key, value in fields.items()}
    return copy.deepcopy(fields)


# --------------------------------------------------------------------------------------------------
# Validation: upstream's 23 rules (reference section 4), every error at once, each naming its field path.


@dataclass(frozen=True, slots=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


BUILTIN_TARGET_GROUPS: Mapping[str, frozenset[str]] = {
    "CloneSet": frozenset({"apps.kruise.io"}),
    "Deployment": frozenset({"apps"}),
    "ReplicaSet": frozenset({"apps"}),
    "StatefulSet": frozenset({"apps", "apps.kruise.io"}),
    "Job": frozenset({"batch"}),
}
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NODE_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"})
_LABEL_SELECTOR_OPERATORS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_TAINT_EFFECTS = frozenset({"", "NoSchedule", "PreferNoSchedule", "NoExecute"})


def validate(
    ws: WorkloadSpread,
    *,
    custom_kinds: Iterable[tuple[str, str]] = (),
) -> list[FieldError]:
    """The rules that need nothing but the object (upstream rules 1-10 and 12-21).

    ``custom_kinds`` are the (group, kind) pairs of the custom-workload whitelist (rule 4). The rules that
    need the cluster (11: the patch against the workload's template, 22: one WorkloadSpread per workload,
    23: immutable targetRef) are ``validate_update``, ``validate_unique_target`` and, in ``mutation``,
    ``validate_patches_against_template``.
    """
    errors: list[FieldError] = []
    errors += _validate_target_ref(ws.target_ref, frozenset(custom_kinds))
    errors += _validate_subsets(ws)
    errors += _validate_max_replicas(ws)
    errors += _validate_strategy(ws)
    errors += _validate_target_filter(ws.target_filter)
    return errors


def _validate_target_ref(ref: TargetRef | None, custom_kinds: frozenset[tuple[str, str]]) -> list[FieldError]:
    path = "spec.targetRef"
    if ref is None:
        return [FieldError(path, "no targetRef defined in WorkloadSpread")]
    if not (ref.api_version and ref.kind and ref.name):
        return [FieldError(path, "empty TargetReference is not valid: apiVersion, kind and name are all required")]
    groups = BUILTIN_TARGET_GROUPS.get(ref.kind)
    if groups is not None:
        if ref.group not in groups:
            allowed = " or ".join(sorted(groups))
            return [FieldError(path, f"TargetReference is not valid for {ref.kind}: its API group must be {allowed}")]
        return []
    if (ref.group, ref.kind) not in custom_kinds:
        return [
            FieldError(
                path,
                f"TargetReference's GroupKind {ref.kind}.{ref.group} is not permitted: use CloneSet, Deployment,"
                " ReplicaSet, StatefulSet, Job, or a kind in the custom workload whitelist",
            )
        ]
    return []


def _validate_subsets(ws: WorkloadSpread) -> list[FieldError]:
    errors: list[FieldError] = []
    if not ws.subsets:
        return [FieldError("spec.subsets", "subsets number must >= 1: give at least one subset")]
    seen: set[str] = set()
    beta = ws.api_version != V1ALPHA1
    required_key, preferred_key = _selector_keys(not beta)
    for i, subset in enumerate(ws.subsets):
        path = f"spec.subsets[{i}]"
        if not subset.name:
            errors.append(FieldError(f"{path}.name", "must not be empty"))
        elif subset.name in seen:
            errors.append(FieldError(f"{path}.name", f"duplicated subset name {subset.name}"))
        seen.add(subset.name)
        if subset.required_node_selector is not None:
            errors += validate_node_selector_term(subset.required_node_selector, f"{path}.{required_key}")
        for j, term in enumerate(subset.preferred_node_selector):
            errors += _validate_preferred_term(term, f"{path}.{preferred_key}[{j}]")
        for j, toleration in enumerate(subset.tolerations):
            errors += _validate_toleration(toleration, f"{path}.tolerations[{j}]")
        if subset.patch is not None and not isinstance(subset.patch, Mapping):
            errors.append(FieldError(f"{path}.patch", "must be a JSON object (a strategic merge patch of a Pod)"))
    return errors


def validate_node_selector_term(term: Any, path: str) -> list[FieldError]:
    """core/v1 ValidateNodeSelectorTerm: what kube-apiserver would refuse once the pod carries the term."""
    if not isinstance(term, Mapping):
        return [FieldError(path, "must be an object with matchExpressions and/or matchFields")]
    errors: list[FieldError] = []
    for k, req in enumerate(_as_list(term.get("matchExpressions"))):
        errors += _validate_node_requirement(req, f"{path}.matchExpressions[{k}]", fields=False)
    for k, req in enumerate(_as_list(term.get("matchFields"))):
        errors += _validate_node_requirement(req, f"{path}.matchFields[{k}]", fields=True)
    return errors


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _validate_node_requirement(req: Any, path: str, *, fields: bool) -> list[FieldError]:
    if not isinstance(req, Mapping):
        return [FieldError(path, "must be an object with key, operator and values")]
    errors: list[FieldError] = []
    key, operator, values = req.get("key", ""), req.get("operator", ""), req.get("values")
    values = values if isinstance(values, list) else []
    if operator not in _NODE_SELECTOR_OPERATORS:
        errors.append(FieldError(f"{path}.operator", f"{operator!r} is not a valid operator: use one of "
                                 + ", ".join(sorted(_NODE_SELECTOR_OPERATORS))))
    elif operator in ("In", "NotIn") and not values:
        errors.append(FieldError(f"{path}.values", f"must be specified when operator is {operator}"))
    elif operator in ("Exists", "DoesNotExist") and values:
        errors.append(FieldError(f"{path}.values", f"may not be specified when operator is {operator}"))
    elif operator in ("Gt", "Lt") and (len(values) != 1 or not str(values[0]).lstrip("-").isdigit()):
        errors.append(FieldError(f"{path}.values", f"must be a single integer when operator is {operator}"))
    if fields:
        if key != "metadata.name":
            errors.append(FieldError(f"{path}.key", "matchFields supports only the key metadata.name"))
        if operator not in ("In", "NotIn") or len(values) != 1:
            errors.append(FieldError(path, "matchFields needs operator In or NotIn with exactly one value"))
    elif not _is_qualified_name(str(key)):
        errors.append(FieldError(f"{path}.key", f"{key!r} is not a valid label key"))
    return errors


def _is_qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def _validate_preferred_term(term: Any, path: str) -> list[FieldError]:
    if not isinstance(term, Mapping):
        return [FieldError(path, "must be an object with weight and preference")]
    errors: list[FieldError] = []
    weight = term.get("weight")
    if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 100:
        errors.append(FieldError(f"{path}.weight", f"{weight!r} must be an integer in the range 1-100"))
    errors += validate_node_selector_term(term.get("preference") or {}, f"{path}.preference")
    return errors


def _validate_toleration(tol: Any, path: str) -> list[FieldError]:
    """core/v1 ValidateTolerations."""
    if not isinstance(tol, Mapping):
        return [FieldError(path, "must be an object")]
    errors: list[FieldError] = []
    key, operator = str(tol.get("key") or ""), str(tol.get("operator") or "Equal")
    value, effect = str(tol.get("value") or ""), str(tol.get("effect") or "")
    if key and not _is_qualified_name(key):
        errors.append(FieldError(f"{path}.key", f"{key!r} is not a valid label key"))
    if not key and operator != "Exists":
        errors.append(FieldError(f"{path}.operator", "must be Exists when key is empty (to match all taints)"))
    if operator == "Exists" and value:
        errors.append(FieldError(f"{path}.operator", "value must be empty when operator is Exists"))
    elif operator not in ("Equal", "Exists"):
        errors.append(FieldError(f"{path}.operator", f"{operator!r} is not supported: use Equal or Exists"))
    elif not _LABEL_VALUE.match(value) or len(value) > 63:
        errors.append(FieldError(f"{path}.value", f"{value!r} is not a valid label value"))
    if effect not in _TAINT_EFFECTS:
        errors.append(FieldError(f"{path}.effect", f"{effect!r} is not one of NoSchedule, PreferNoSchedule, NoExecute"))
    if tol.get("tolerationSeconds") is not None and effect != "NoExecute":
        errors.append(FieldError(f"{path}.effect", "must be NoExecute when tolerationSeconds is set"))
    return errors


def _validate_max_replicas(ws: WorkloadSpread) -> list[FieldError]:
    """Rules 12-16 and 19-20's maxReplicas part, with one deliberate change: a string without ``%`` is an
    error here (upstream accepts "50" at validation and then counts it as 0 at run time)."""
    subsets = ws.subsets
    set_maxes = [(i, s.max_replicas) for i, s in enumerate(subsets) if s.max_replicas is not None]
    if not set_maxes:
        return []
    path = "spec.subsets[{}].maxReplicas"
    kinds = {is_percent(m) for _, m in set_maxes}
    if len(kinds) > 1:
        first_odd = next(i for i, m in set_maxes if is_percent(m) != is_percent(set_maxes[0][1]))
        return [FieldError(path.format(first_odd), "the maxReplicas type of all subsets must be the same "
                           "(all integers or all percentages)")]
    errors: list[FieldError] = []
    if ws.target_ref is not None and ws.target_ref.kind == "StatefulSet" and kinds == {True}:
        errors.append(FieldError(path.format(set_maxes[0][0]), "the maxReplicas type must be Int for StatefulSet"))
    percent_sum = 0
    all_valid = True
    for i, value in set_maxes:
        if isinstance(value, bool) or not isinstance(value, int | str):
            errors.append(FieldError(path.format(i), f"{value!r} is not an integer or a percentage"))
            all_valid = False
            continue
        if isinstance(value, int):
            if value < 0:
                errors.append(FieldError(path.format(i), f"maxReplicas is not valid for subset: {value} must be >= 0"))
            continue
        match = _PERCENT.match(value)
        if match is None:
            errors.append(FieldError(path.format(i), f"maxReplicas is not valid for subset: {value!r} must be a "
                                     "whole-number percentage like '50%' (or an integer)"))
            all_valid = False
            continue
        percent_sum += int(match.group(1))
        if percent_sum > 100:
            errors.append(FieldError(path.format(i), "the sum of all subset's maxReplicas exceeds 100%, which is "
                                     "not permitted"))
            all_valid = False
    if kinds == {True} and all_valid and percent_sum < 100 and subsets[-1].max_replicas is not None:
        errors.append(FieldError(path.format(0), "maxReplicas sum of all subsets must equal 100% when type is "
                                 "specified as percent (or leave the last subset's maxReplicas unset)"))
    return errors


def _validate_strategy(ws: WorkloadSpread) -> list[FieldError]:
    strategy = ws.schedule_strategy
    errors: list[FieldError] = []
    if strategy.type not in ("", "Fixed", "Adaptive"):
        errors.append(FieldError("spec.scheduleStrategy.type", f"{strategy.type!r} is not supported: use Fixed "
                                 "or Adaptive"))
    if strategy.adaptive is None:
        return errors
    if strategy.type != "Adaptive":
        errors.append(FieldError("spec.scheduleStrategy.type", "the scheduleStrategy's type must be Adaptive when "
                                 "using adaptive scheduleStrategy"))
    n = len(ws.subsets)
    if n > 1 and ws.subsets[-1].max_replicas is not None:
        errors.append(FieldError("spec.scheduleStrategy.adaptive", "the last subset's maxReplicas must be not "
                                 "specified, so that rescheduled pods always have somewhere to go"))
    rcs = strategy.adaptive.reschedule_critical_seconds
    if rcs is not None:
        allowed = (MAX_UNSCHEDULABLE_SECONDS - 5) // (n - 1) if n > 1 else 2**31 - 1
        if not 0 <= rcs <= allowed:
            errors.append(FieldError("spec.scheduleStrategy.adaptive.rescheduleCriticalSeconds",
                                     f"rescheduleCriticalSeconds < 0 or rescheduleCriticalSeconds > {allowed} is "
                                     "not permitted"))
    return errors


def _validate_target_filter(target_filter: TargetFilter | None) -> list[FieldError]:
    if target_filter is None or target_filter.selector is None:
        return []
    return validate_label_selector(target_filter.selector, "spec.targetFilter.selector")


def validate_label_selector(selector: Any, path: str) -> list[FieldError]:
    """metav1.LabelSelectorAsSelector's checks."""
    if not isinstance(selector, Mapping):
        return [FieldError(path, "must be an object with matchLabels and/or matchExpressions")]
    errors: list[FieldError] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        if not _is_qualified_name(str(key)) or not _LABEL_VALUE.match(str(value)):
            errors.append(FieldError(f"{path}.matchLabels", f"{key}={value} is not a valid label"))
    for k, req in enumerate(_as_list(selector.get("matchExpressions"))):
        req_path = f"{path}.matchExpressions[{k}]"
        if not isinstance(req, Mapping):
            errors.append(FieldError(req_path, "must be an object"))
            continue
        operator, values = req.get("operator"), req.get("values") or []
        if operator not in _LABEL_SELECTOR_OPERATORS:
            errors.append(FieldError(f"{req_path}.operator", f"{operator!r} is not a valid label selector operator"))
        elif operator in ("In", "NotIn") and not values:
            errors.append(FieldError(f"{req_path}.values", "for 'in', 'notin' operators, values set can't be empty"))
        elif operator in ("Exists", "DoesNotExist") and values:
            errors.append(FieldError(f"{req_path}.values", "values set must be empty for exists and does not exist"))
        if not _is_qualified_name(str(req.get("key", ""))):
            errors.append(FieldError(f"{req_path}.key", f"{req.get('key')!r} is not a valid label key"))
    return errors


def validate_update(old: WorkloadSpread, new: WorkloadSpread) -> list[FieldError]:
    """Rule 23: the target cannot change (group, kind and name; the version may)."""
    if old.target_ref is None or new.target_ref is None:
        return []
    o, n = old.target_ref, new.target_ref
    if (o.group, o.kind, o.name) != (n.group, n.kind, n.name):
        return [FieldError("spec.targetRef", "change TargetReference is not permitted")]
    return []


def validate_unique_target(ws: WorkloadSpread, others: Iterable[WorkloadSpread]) -> list[FieldError]:
    """Rule 22: one WorkloadSpread per workload in a namespace."""
    if ws.target_ref is None:
        return []
    ref = ws.target_ref
    for other in others:
        if other.name == ws.name or other.target_ref is None:
            continue
        if other.target_ref.same_workload(ref.api_version, ref.kind, ref.name):
            return [FieldError("spec.targetRef", f"ws.spec.targetRef is in conflict with other WorkloadSpread "
                               f"{other.name}")]
    return []
