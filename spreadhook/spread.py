"""The decision the webhook and the reconciler share, pure: which subset a pod goes to, what the status is.

One module holds both sides (as upstream's ``pkg/util/workloadspread`` does) so that the webhook's ledger
and the reconciler's recomputation can never disagree about a pod. Everything here works on plain dicts and
the types of ``model``; time is passed in, never read, so every decision can be replayed in a unit test.

Upstream references (section numbers of ``shared/reference/workloadspread.md``) are given where a rule is
subtle; where spreadhook deliberately differs, the docstring says so.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from spreadhook import strategic
from spreadhook.model import (
    CONDITION_SCHEDULABLE,
    MAX_UNSCHEDULABLE_SECONDS,
    VERSION_IGNORED,
    Obj,
    Subset,
    SubsetCondition,
    SubsetStatus,
    WorkloadSpread,
    WorkloadSpreadStatus,
    format_time,
    parse_time,
    resolve_max_replicas,
)

MATCHED_ANNOTATION = "apps.kruise.io/matched-workloadspread"
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
IGNORE_PATCH_EXISTING_PODS_ANNOTATION = "workloadspread.kruise.io/ignore-patch-existing-pods-metadata"
FAKE_SUBSET = "kruise.io/workloadspread-fake-subset-name"
RESERVED_PREFIX = "reserved-"
"""Ledger keys of slots reserved ahead of their pods (``reserve_ahead``); pod names cannot hold the prefix's
meaning, and an entry under such a key that expires was a reservation nobody used, not a failed pod."""
CREATE_TIMEOUT = dt.timedelta(seconds=30)
DELETE_TIMEOUT = dt.timedelta(seconds=15)
UNSCHEDULABLE_PERIOD = dt.timedelta(seconds=MAX_UNSCHEDULABLE_SECONDS)
COST_STEP = 100
_MAX_INT32 = 2**31 - 1
_VERSIONED_OWNER_KINDS = frozenset({"deployment", "replicaset"})
_ORDINAL_SUFFIX_DIGITS = frozenset("0123456789")


# --------------------------------------------------------------------------------------------------
# Reading pods


def controller_ref(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner reference with ``controller: true``; pods without one are never spread."""
    for ref in obj.get("metadata", {}).get("ownerReferences") or ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return ref
    return None


def is_active(pod: Mapping[str, Any]) -> bool:
    """Active = not finished and not being deleted; only active pods take a slot (upstream #739)."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    return pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")


def pod_version(pod: Mapping[str, Any]) -> str:
    """The pod version whose ledger the pod counts in (upstream 2.8): Deployment and ReplicaSet pods are
    counted per ``pod-template-hash`` so a rollout's old and new pods do not share slots (upstream #1194)."""
    ref = controller_ref(pod)
    if ref is None or str(ref.get("kind", "")).lower() not in _VERSIONED_OWNER_KINDS:
        return VERSION_IGNORED
    labels = pod.get("metadata", {}).get("labels") or {}
    if labels.get("pod-template-hash"):
        return str(labels["pod-template-hash"])
    revision = labels.get("controller-revision-hash")
    if revision:
        return str(revision).rsplit("-", 1)[-1]
    return VERSION_IGNORED


@dataclass(frozen=True, slots=True)
class Matched:
    """The content of the ``apps.kruise.io/matched-workloadspread`` annotation."""

    workload_spread: str
    subset: str
    uid: str = ""

    def to_annotation(self) -> str:
        body: dict[str, str] = {"name": self.workload_spread, "subset": self.subset}
        if self.uid:
            body["uid"] = self.uid
        return json.dumps(body, separators=(",", ":"))


def matched(pod: Mapping[str, Any]) -> Matched | None:
    """Read the annotation; keys are case-insensitive, as Go's ``encoding/json`` reads them."""
    raw = (pod.get("metadata", {}).get("annotations") or {}).get(MATCHED_ANNOTATION)
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    lowered = {str(k).lower(): v for k, v in body.items()}
    name = lowered.get("name")
    if not isinstance(name, str) or not name:
        return None
    return Matched(name, str(lowered.get("subset") or ""), str(lowered.get("uid") or ""))


def pod_name(pod: Mapping[str, Any]) -> str:
    return str(pod.get("metadata", {}).get("name") or "")


def ledger_key(pod: Mapping[str, Any]) -> str:
    """The key a pod has in ``creatingPods``: its name, or the uid the webhook made up for a nameless pod."""
    info = matched(pod)
    return info.uid if info is not None and info.uid else pod_name(pod)


# --------------------------------------------------------------------------------------------------
# Webhook side: the ledger (upstream 2.4-2.5). These functions mutate the status they are given, which is
# the ledger's private working copy, so that a group commit can apply a whole batch before one write.


@dataclass(frozen=True, slots=True)
class Admission:
    """The webhook's decision for one pod CREATE."""

    subset: Subset | None
    """None: admit the pod unchanged (no subset has room, or every subset is unschedulable)."""
    changed: bool
    """True when the ledger changed, so the status must be written before the pod is admitted."""
    generated_uid: str = ""
    """Set for a pod with no name yet (``generateName``): its ledger key, also written into the annotation."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Release:
    """The webhook's decision for one pod DELETE or eviction."""

    subset: str | None
    changed: bool


def needs_ledger(ws: WorkloadSpread) -> bool:
    """False where upstream never writes a ledger: one unlimited subset, or a StatefulSet target."""
    if len(ws.subsets) == 1 and ws.subsets[0].max_replicas is None:
        return False
    return not (ws.target_ref is not None and ws.target_ref.kind == "StatefulSet")


def needs_workload_replicas(ws: WorkloadSpread) -> bool:
    """Percentages are the only reason the webhook ever reads the workload."""
    return any(isinstance(s.max_replicas, str) for s in ws.subsets)


def version_ledger(
    ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str, workload_replicas: int
) -> list[SubsetStatus]:
    """The ledger of one pod version, built from the spec the first time a version is seen (upstream 2.5.1).

    Unlike upstream, subsets added to the spec since the ledger was built are appended, so a subset added
    mid-life takes pods before the reconciler's next pass.
    """
    statuses = status.versioned_subset_statuses.setdefault(version, [])
    known = {s.name for s in statuses}
    for subset in ws.subsets:
        if subset.name not in known:
            limit = _resolve(subset, workload_replicas)
            statuses.append(SubsetStatus(subset.name, 0, -1 if limit is None else limit))
    return statuses


def _resolve(subset: Subset, workload_replicas: int) -> int | None:
    try:
        return resolve_max_replicas(subset.max_replicas, workload_replicas)
    except ValueError:
        return 0  # refused by validation; a ledger never grants a slot to an unreadable limit


def admit(
    ws: WorkloadSpread,
    status: WorkloadSpreadStatus,
    pod: Mapping[str, Any],
    *,
    workload_replicas: int,
    now: dt.datetime,
    new_uid: Callable[[], str],
) -> Admission:
    """Choose the subset for a pod CREATE and record it in ``status`` (upstream 2.4-2.5)."""
    if not ws.subsets:
        return Admission(None, False, reason="the WorkloadSpread has no subsets")
    if len(ws.subsets) == 1 and ws.subsets[0].max_replicas is None:
        return Admission(ws.subsets[0], False, reason="the only subset is unlimited")
    if ws.target_ref is not None and ws.target_ref.kind == "StatefulSet":
        return _admit_by_ordinal(ws, status, pod)

    version = pod_version(pod)
    statuses = version_ledger(ws, status, version, workload_replicas)
    by_name = {s.name: s for s in statuses}
    name = pod_name(pod)
    recorded = recorded_subset(statuses, pod)
    if recorded is not None:
        return Admission(ws.subset(recorded), False, reason="the pod is already in the ledger")
    for subset in ws.subsets:
        entry = by_name[subset.name]
        if entry.is_unschedulable():
            continue
        _follow_percentage(subset, entry, workload_replicas)
        if entry.missing_replicas == -1:
            return Admission(subset, False, reason="the subset is unlimited")
        if entry.missing_replicas > 0:
            key = name or new_uid()
            entry.creating_pods[key] = format_time(now)
            entry.missing_replicas -= 1
            return Admission(subset, True, generated_uid="" if name else key)
    return Admission(None, False, reason="no subset has room: every subset is full or unschedulable")


def recorded_subset(statuses: Iterable[SubsetStatus], pod: Mapping[str, Any]) -> str | None:
    """The subset whose ``creatingPods`` or ``deletingPods`` already holds the pod (by name, or by the key in
    its matched annotation), or None."""
    keys = {pod_name(pod), ledger_key(pod)} - {""}
    for entry in statuses:
        if any(key in entry.creating_pods or key in entry.deleting_pods for key in keys):
            return entry.name
    return None


def reserves_ahead(ws: WorkloadSpread) -> bool:
    """Whether slots may be reserved for pods that have not arrived yet (``reserve_ahead``). Not for
    percentages, whose limits move with the workload's replica count between two writes."""
    return needs_ledger(ws) and not needs_workload_replicas(ws)


def reserve_ahead(
    ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str, count: int, *, now: dt.datetime,
    new_uid: Callable[[], str],
) -> list[tuple[str, str]]:
    """Take up to ``count`` slots, in subset order, for pods of ``version`` that have not arrived yet, as
    ``creatingPods`` entries under keys of their own: ``(subset, key)`` in the order ``admit`` would fill them.

    An entry made here is exactly the one ``admit`` makes for a nameless pod: the pod that later takes it
    carries the key in its matched annotation (``Matched.uid``), so the reconciler pops the entry when it sees
    the pod and expires it after ``CREATE_TIMEOUT`` when no pod ever took it. Nothing is reserved in or past a
    subset without a max: a pod goes there without an entry."""
    statuses = version_ledger(ws, status, version, 0)
    by_name = {s.name: s for s in statuses}
    taken: list[tuple[str, str]] = []
    for subset in ws.subsets:
        entry = by_name[subset.name]
        if entry.is_unschedulable():
            continue
        if entry.missing_replicas == -1 or len(taken) >= count:
            break
        while entry.missing_replicas > 0 and len(taken) < count:
            key = RESERVED_PREFIX + new_uid()
            entry.creating_pods[key] = format_time(now)
            entry.missing_replicas -= 1
            taken.append((subset.name, key))
    return taken


def give_back(ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str, keys: Iterable[str]) -> bool:
    """Drop reserved entries no pod took, and return their room as far as the count allows: never beyond
    ``max - replicas - creating + deleting``, the reconciler's own formula, so a subset that is full for
    another reason (pods adopted past its max) does not gain room. Whether anything changed."""
    wanted = set(keys)
    changed = False
    limits = {s.name: _resolve(s, 0) for s in ws.subsets}
    for entry in status.versioned_subset_statuses.get(version) or []:
        removed = [key for key in wanted & entry.creating_pods.keys() if entry.creating_pods.pop(key, None)]
        if not removed:
            continue
        changed = True
        _return_room(entry, limits.get(entry.name), len(removed))
    return changed


def _return_room(entry: SubsetStatus, limit: int | None, slots: int) -> None:
    """Give ``slots`` dropped reservations' room back to ``entry``, never beyond ``max - replicas - creating +
    deleting`` (the reconciler's formula, over the entries left) nor beyond the max itself."""
    if limit is None or entry.missing_replicas == -1:
        return
    room = limit - entry.replicas - len(entry.creating_pods) + len(entry.deleting_pods)
    entry.missing_replicas = max(0, min(entry.missing_replicas + slots, room, limit))


def _entries_by_name(status: WorkloadSpreadStatus, version: str) -> dict[str, SubsetStatus]:
    """The ledger of one pod version, by subset name (empty when the version has none yet)."""
    return {s.name: s for s in status.versioned_subset_statuses.get(version) or []}


def may_take_reserved(ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str, subset_name: str) -> bool:
    """Whether a pod of ``version`` may take a slot reserved in ``subset_name``: only where ``admit`` would put
    it now, that is when every schedulable subset before it is full (room given back by a deletion, or a
    subset edited into the spec, sends the pod through the ledger instead)."""
    by_name = _entries_by_name(status, version)
    for subset in ws.subsets:
        entry = by_name.get(subset.name)
        if entry is None:
            return False
        if subset.name == subset_name:
            return not entry.is_unschedulable()
        if not entry.is_unschedulable() and entry.missing_replicas != 0:
            return False
    return False


def without_max_next(ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str) -> Subset | None:
    """The subset without a max that ``admit`` would choose now for a pod of ``version``, if it would choose
    one: such a pod needs no ledger entry, so it need not wait for anybody's write."""
    by_name = _entries_by_name(status, version)
    for subset in ws.subsets:
        entry = by_name.get(subset.name)
        if entry is None:
            return None
        if entry.is_unschedulable():
            continue
        if entry.missing_replicas == -1:
            return subset
        if entry.missing_replicas != 0:
            return None
    return None


def reserved_before(
    ws: WorkloadSpread, status: WorkloadSpreadStatus, version: str, subset_name: str, *,
    settled: Container[str], since: dt.datetime,
) -> bool:
    """Whether a schedulable subset before ``subset_name`` holds a reserved slot stamped at or after ``since``
    that is not ``settled`` (known to be taken by a pod or to stay reserved): room that is taken now but may
    come back within moments (another process's slots, or ours on their way back), so a pod sent past it
    might leave a hole behind."""
    by_name = _entries_by_name(status, version)
    for subset in ws.subsets:
        if subset.name == subset_name:
            return False
        entry = by_name.get(subset.name)
        if entry is None or entry.is_unschedulable():
            continue
        for key, stamp in entry.creating_pods.items():
            if key.startswith(RESERVED_PREFIX) and key not in settled and (parse_time(stamp) or since) >= since:
                return True
    return False


def written_by_others(status: WorkloadSpreadStatus, own: Container[str], since: dt.datetime) -> bool:
    """Whether the ledger holds an entry stamped at or after ``since`` under a key this process did not write:
    another webhook process admits pods of this WorkloadSpread. (The reconciler never adds keys.)"""
    for statuses in status.versioned_subset_statuses.values():
        for entry in statuses:
            for entries in (entry.creating_pods, entry.deleting_pods):
                for key, stamp in entries.items():
                    if key not in own and (parse_time(stamp) or since) >= since:
                        return True
    return False


def admit_unlimited(ws: WorkloadSpread, pod: Mapping[str, Any], *, workload_replicas: int) -> Admission | None:
    """The first schedulable subset without a max, for a pod whose slot could not be recorded in time; None
    when there is none (or the spread is a StatefulSet's, whose ordinals fix each pod's subset).

    A subset without a max needs no ledger entry, so no max can be passed by putting a pod there. It is the
    elastic capacity the spread ends in, and a pod may cost more there than in a subset with room it did not
    get; but the alternative is failing open, where the pod has no subset's node selector at all, lands
    wherever the scheduler likes, and once adopted by its node can take a full subset past its max."""
    if ws.target_ref is not None and ws.target_ref.kind == "StatefulSet":
        return None
    statuses = version_ledger(ws, ws.status.clone(), pod_version(pod), workload_replicas)
    by_name = {s.name: s for s in statuses}
    for subset in ws.subsets:
        if subset.max_replicas is None and not by_name[subset.name].is_unschedulable():
            return Admission(subset, False, reason="the ledger could not record the pod in time; this subset "
                                                   "has no max")
    return None


def _follow_percentage(subset: Subset, entry: SubsetStatus, workload_replicas: int) -> None:
    """A percentage limit moves with the workload's replica count, and the ledger's ``missingReplicas`` was
    resolved against the count of its last writer: after ``kubectl scale`` from 8 to 16 the pods arrive
    before the reconciler re-resolves it, and a ledger still saying "4 of 4 taken" for a 50 % subset would
    refuse all of them. So the webhook re-derives it from the count it was given, exactly as the reconciler
    does (``max - replicas - creating + deleting``, clamped to ``[0, max]``)."""
    if not isinstance(subset.max_replicas, str) or entry.missing_replicas == -1:
        return
    limit = _resolve(subset, workload_replicas)
    if limit is None:
        return
    held = entry.replicas + len(entry.creating_pods) - len(entry.deleting_pods)
    entry.missing_replicas = max(0, min(limit, limit - held))


def _admit_by_ordinal(ws: WorkloadSpread, status: WorkloadSpreadStatus, pod: Mapping[str, Any]) -> Admission:
    """StatefulSet pods go by ordinal: ``[0, m1)`` to the first subset, ``[m1, m1+m2)`` to the next..."""
    ordinal = _ordinal(pod_name(pod))
    unschedulable = {s.name for s in status.subset_statuses if s.is_unschedulable()}
    threshold = 0
    for subset in ws.subsets:
        if subset.name in unschedulable:
            continue
        limit = subset.max_replicas if isinstance(subset.max_replicas, int) else _MAX_INT32
        threshold += limit
        if ordinal < threshold:
            return Admission(subset, False, reason=f"ordinal {ordinal} falls in this subset's range")
    return Admission(None, False, reason=f"ordinal {ordinal} is beyond every subset's range")


def _ordinal(name: str) -> int:
    stem, _, digits = name.rpartition("-")
    if stem and digits and set(digits) <= _ORDINAL_SUFFIX_DIGITS:
        return int(digits)
    return -1


def release(
    ws: WorkloadSpread, status: WorkloadSpreadStatus, pod: Mapping[str, Any], *, now: dt.datetime
) -> Release:
    """Record a pod DELETE or eviction: ``deletingPods`` entry, slot given back (upstream 2.5.3)."""
    info = matched(pod)
    if info is None or info.workload_spread != ws.name or not is_active(pod) or not needs_ledger(ws):
        return Release(None, False)
    statuses = status.versioned_subset_statuses.get(pod_version(pod))
    if not statuses:
        return Release(None, False)
    name = pod_name(pod)
    recorded = recorded_subset(statuses, pod)
    if recorded is not None:
        return Release(recorded, False)
    target = next((s for s in statuses if s.name == info.subset), None)
    if target is None or target.missing_replicas == -1:
        return Release(info.subset if target else None, False)
    target.deleting_pods[name] = format_time(now)
    target.missing_replicas += 1
    return Release(target.name, True)


# --------------------------------------------------------------------------------------------------
# Reconciler side: recompute everything from the pods that exist (upstream 3.3-3.7).


@dataclass(frozen=True, slots=True)
class EventRecord:
    type: str  # Normal | Warning
    reason: str
    message: str
    pod: str = ""


@dataclass(frozen=True, slots=True)
class Adoption:
    """A pod that carries no subset yet, and the metadata patch that puts it in one (upstream 3.4)."""

    pod: str
    subset: str
    patch: Obj


@dataclass(slots=True)
class ReconcilePlan:
    status: WorkloadSpreadStatus
    adoptions: list[Adoption] = field(default_factory=list)
    deletion_costs: dict[str, str] = field(default_factory=dict)
    """Pod name -> new ``pod-deletion-cost``, only where it differs from what the pod carries."""
    reschedule: list[str] = field(default_factory=list)
    """Pods to delete so their workload re-creates them in a later subset (Adaptive)."""
    events: list[EventRecord] = field(default_factory=list)
    requeue_after: float | None = None
    """Seconds until the next time-based change (an expiry, a recovery), so the reconcile can be timed."""
    expired_creations: list[str] = field(default_factory=list)
    """``creatingPods`` keys given back because no pod with that key was among the pods given: a slot freed
    for good on the word of the pod list, which the caller should therefore make sure is not lagging."""
    overdue_creations: list[str] = field(default_factory=list)
    """With ``expire_creations=False``: the keys that would have been given back, kept (slots held) instead."""

    def requeue(self, delay: dt.timedelta) -> None:
        seconds = delay.total_seconds()
        if seconds > 0 and (self.requeue_after is None or seconds < self.requeue_after):
            self.requeue_after = seconds


def reconcile(
    ws: WorkloadSpread,
    pods: Sequence[Mapping[str, Any]],
    *,
    workload_replicas: int,
    nodes: Mapping[str, Mapping[str, Any]],
    now: dt.datetime,
    latest_version: str | None = None,
    expire_creations: bool = True,
) -> ReconcilePlan:
    """Everything the reconciler should make true for ``ws``, given the pods of its workload.

    ``pods`` must already be filtered to the workload (and ``targetFilter``); ``nodes`` maps node names to
    Node objects (for adopting pods that were created without the webhook); ``latest_version`` is the
    workload's current pod version (Deployment rollouts), used to reverse the scale-in order of old pods.
    ``expire_creations=False`` keeps ``creatingPods`` entries past their timeout instead of giving their
    slots back: for pods that may exist although ``pods`` does not show them (a lagging cache).
    """
    plan = ReconcilePlan(status=WorkloadSpreadStatus(observed_generation=ws.generation))
    by_version: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        by_version.setdefault(pod_version(pod), []).append(pod)

    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for version, version_pods in by_version.items():
        ledger = ws.status.versioned_subset_statuses.get(version, [])
        grouped[version] = _group_by_subset(ws, version_pods, ledger, workload_replicas, nodes, plan)

    if manages_deletion_cost(ws):
        for version, groups in grouped.items():
            reverse = latest_version is not None and version != latest_version
            _deletion_costs(ws, groups, workload_replicas, reverse, plan)
        plan.adoptions = [_with_deletion_cost(adoption, plan.deletion_costs) for adoption in plan.adoptions]

    everything: dict[str, list[Mapping[str, Any]]] = {}
    for groups in grouped.values():
        for subset_name, subset_pods in groups.items():
            everything.setdefault(subset_name, []).extend(subset_pods)

    old = ws.status
    plan.status.subset_statuses = _subset_statuses(
        ws, old.subset_statuses, everything, workload_replicas, now, plan, overall=True,
        expire_creations=expire_creations)
    for version in sorted(set(grouped) | set(old.versioned_subset_statuses)):
        old_statuses = old.versioned_subset_statuses.get(version, [])
        statuses = _subset_statuses(
            ws, old_statuses, grouped.get(version, {}), workload_replicas, now, plan, overall=False,
            expire_creations=expire_creations)
        if version in grouped or _holds_anything(statuses):
            plan.status.versioned_subset_statuses[version] = statuses
    return plan


def rebase(
    ws: WorkloadSpread,
    planned: WorkloadSpreadStatus,
    base: WorkloadSpreadStatus,
    newest: WorkloadSpreadStatus,
    pods: Sequence[Mapping[str, Any]],
    workload_replicas: int,
) -> WorkloadSpreadStatus:
    """Carry the webhook's ledger entries written since ``base`` into a status planned from ``base``.

    The reconciler plans from one read of the status; while it lists and counts pods, the webhook goes on
    recording admissions. Rather than re-plan after every 409 (which, under a burst, could starve the
    reconciler for as long as the burst lasts), the entries that appeared since ``base`` are replayed onto
    the plan as the reconciler would have counted them: a new ``creatingPods`` entry takes a slot unless
    its pod was already among the counted pods; a new ``deletingPods`` entry gives one back if its pod is
    still active. The one entry the webhook removes is a slot it reserved ahead and gives back unused
    (``give_back``): the plan drops it too, with its room, as ``give_back`` returns room. Nothing else can
    have changed.
    """
    counted = {ledger_key(p) for p in pods} | {pod_name(p) for p in pods}
    active = {pod_name(p) for p in pods if is_active(p)}
    limits = {s.name: _resolve(s, workload_replicas) for s in ws.subsets}
    result = planned.clone()
    for version, newest_entries in newest.versioned_subset_statuses.items():
        base_entries = {s.name: s for s in base.versioned_subset_statuses.get(version, [])}
        target = result.versioned_subset_statuses.setdefault(version, [])
        by_name = {s.name: s for s in target}
        for entry in newest_entries:
            old = base_entries.get(entry.name)
            into = by_name.get(entry.name)
            if into is None:
                if old is None:  # a ledger the webhook started after our read: keep it whole
                    target.append(entry.clone())
                continue  # otherwise the plan dropped it on purpose (its subset left the spec)
            old = old or SubsetStatus(entry.name)
            limit = limits.get(entry.name)
            returned = [key for key in old.creating_pods
                        if key.startswith(RESERVED_PREFIX) and key not in entry.creating_pods
                        and into.creating_pods.pop(key, None) is not None]
            if returned:
                _return_room(into, limit, len(returned))
            for key, stamp in entry.creating_pods.items():
                if key in old.creating_pods or key in counted or key in into.creating_pods:
                    continue
                into.creating_pods[key] = stamp
                if into.missing_replicas > 0:
                    into.missing_replicas -= 1
            for key, stamp in entry.deleting_pods.items():
                if key in old.deleting_pods or key not in active or key in into.deleting_pods:
                    continue
                into.deleting_pods[key] = stamp
                if limit is not None and into.missing_replicas < limit:
                    into.missing_replicas += 1
    return result


SettledEntries = dict[str, dict[str, list[str]]]
"""pod version -> subset name -> ``creatingPods`` keys."""


def settled_entries(status: WorkloadSpreadStatus, pods: Sequence[Mapping[str, Any]]) -> SettledEntries:
    """The ``creatingPods`` entries whose pods exist now: their creation has landed, so the entry may go while
    the slot stays taken (the pod holds it). Removing them changes no ``missingReplicas``, which is why they
    can be removed from whatever status is newest, without re-deciding anything (``Store.drop_creating_entries``)."""
    subset_of: dict[str, str | None] = {pod_name(p): None for p in pods}  # a pod's own name: in any subset
    for pod in pods:
        info = matched(pod)
        if info is not None and info.uid:
            subset_of[info.uid] = info.subset  # a key the webhook made up: only in the subset the pod was given
    settled: SettledEntries = {}
    for version, entries in status.versioned_subset_statuses.items():
        for entry in entries:
            keys = [key for key in entry.creating_pods if key in subset_of and subset_of[key] in (None, entry.name)]
            if keys:
                settled.setdefault(version, {})[entry.name] = keys
    return settled


def manages_deletion_cost(ws: WorkloadSpread) -> bool:
    """Upstream writes costs only for ReplicaSet, Deployment and CloneSet; spreadhook also writes them for
    custom workloads (upstream #1744). StatefulSets and Jobs scale in by their own rules, so not there."""
    return ws.target_ref is not None and ws.target_ref.kind not in ("StatefulSet", "Job")


def ledger_in_flight(ws: WorkloadSpread) -> bool:
    """Whether the webhook has admissions or deletions in flight in the ledger (any version's)."""
    return any(entry.creating_pods or entry.deleting_pods
               for entries in ws.status.versioned_subset_statuses.values() for entry in entries)


def _holds_anything(statuses: Iterable[SubsetStatus]) -> bool:
    return any(s.replicas or s.creating_pods or s.deleting_pods for s in statuses)


def _group_by_subset(
    ws: WorkloadSpread,
    pods: Sequence[Mapping[str, Any]],
    ledger: Sequence[SubsetStatus],
    workload_replicas: int,
    nodes: Mapping[str, Mapping[str, Any]],
    plan: ReconcilePlan,
) -> dict[str, list[Mapping[str, Any]]]:
    """Upstream 3.4 for one version: annotated pods go to their subset, the others are adopted by score.

    Unlike upstream, a slot the webhook reserved for a pod not listed yet (a live ``creatingPods`` entry)
    counts as taken when scoring adoptions, so adopting pods created during a webhook outage does not push
    a subset past its max while the webhook is filling it again."""
    groups: dict[str, list[Mapping[str, Any]]] = {s.name: [] for s in ws.subsets}
    groups[FAKE_SUBSET] = []
    missing = {s.name: _resolve_or_max(s, workload_replicas) for s in ws.subsets}
    for pod in pods:
        info = matched(pod)
        if info is not None and info.workload_spread == ws.name and info.subset in missing:
            missing[info.subset] -= 1
    listed = {ledger_key(p) for p in pods} | {pod_name(p) for p in pods}
    for entry in ledger:
        if entry.name in missing:
            missing[entry.name] -= sum(1 for key in entry.creating_pods if key not in listed)
    copy_metadata = str(ws.metadata.get("annotations", {}).get(IGNORE_PATCH_EXISTING_PODS_ANNOTATION, "")).lower() \
        != "true"
    for pod in pods:
        info = matched(pod)
        if info is not None and info.workload_spread == ws.name:
            groups[info.subset if info.subset in groups and info.subset != FAKE_SUBSET else FAKE_SUBSET].append(pod)
            continue
        winner = _adopt(ws, pod, nodes, missing)
        if winner is None:
            groups[FAKE_SUBSET].append(pod)
            if is_active(pod):
                plan.events.append(EventRecord("Warning", "PodWithoutSubset", f"Pod {pod_name(pod)} is in no "
                                               "subset (created while the webhook was unavailable, or on a node "
                                               "no subset selects); it is scaled in first", pod_name(pod)))
            continue
        missing[winner.name] -= 1
        groups[winner.name].append(pod)
        plan.adoptions.append(Adoption(pod_name(pod), winner.name, _adoption_patch(ws, winner, copy_metadata)))
        plan.events.append(EventRecord("Normal", "PodAdopted", f"Pod {pod_name(pod)} was counted into subset "
                                       f"{winner.name}", pod_name(pod)))
    return groups


def _resolve_or_max(subset: Subset, workload_replicas: int) -> int:
    limit = _resolve(subset, workload_replicas)
    return _MAX_INT32 if limit is None else limit


def _adoption_patch(ws: WorkloadSpread, subset: Subset, copy_metadata: bool) -> Obj:
    annotations: Obj = {MATCHED_ANNOTATION: Matched(ws.name, subset.name).to_annotation()}
    metadata: Obj = {"annotations": annotations}
    patch_metadata = (subset.patch or {}).get("metadata") or {}
    if copy_metadata and isinstance(patch_metadata, Mapping):
        if isinstance(patch_metadata.get("labels"), Mapping):
            metadata["labels"] = dict(patch_metadata["labels"])
        if isinstance(patch_metadata.get("annotations"), Mapping):
            annotations.update({k: v for k, v in patch_metadata["annotations"].items() if k != MATCHED_ANNOTATION})
    return {"metadata": metadata}


def _with_deletion_cost(adoption: Adoption, deletion_costs: dict[str, str]) -> Adoption:
    """The adoption patch also carrying the pod's new deletion cost, taken out of ``deletion_costs``: one
    PATCH per adopted pod instead of two, and no moment when a pod is in its subset but priced as if not."""
    cost = deletion_costs.pop(adoption.pod, None)
    if cost is None:
        return adoption
    metadata = dict(adoption.patch["metadata"])
    metadata["annotations"] = {**metadata["annotations"], DELETION_COST_ANNOTATION: cost}
    return Adoption(adoption.pod, adoption.subset, {**adoption.patch, "metadata": metadata})


def _adopt(
    ws: WorkloadSpread, pod: Mapping[str, Any], nodes: Mapping[str, Mapping[str, Any]], missing: Mapping[str, int]
) -> Subset | None:
    """The best subset for a pod that is already on a node; ties keep the earlier subset."""
    node = nodes.get(str(pod.get("spec", {}).get("nodeName") or ""))
    if node is None:
        return None
    best: Subset | None = None
    best_score = -1
    for subset in ws.subsets:
        score = subset_score(pod, node, subset, missing[subset.name])
        if score > best_score:
            best, best_score = subset, score
    return best


def subset_score(pod: Mapping[str, Any], node: Mapping[str, Any], subset: Subset, missing: int) -> int:
    """-1 when the pod's node cannot belong to the subset, else ``preferred*100 + patch*10 + quota``."""
    spec = pod.get("spec", {})
    tolerations = list(spec.get("tolerations") or ()) + list(subset.tolerations)
    if any(not _tolerated(taint, tolerations) for taint in node.get("spec", {}).get("taints") or ()):
        return -1
    if not node_matches_terms(node, required_terms_with(pod, subset)):
        return -1
    preferred = sum(
        int(term.get("weight", 0))
        for term in subset.preferred_node_selector
        if node_matches_term(node, term.get("preference") or {})
    )
    return preferred * 100 + (10 if _patch_already_applied(pod, subset) else 0) + (1 if missing > 0 else 0)


def required_terms_with(pod: Mapping[str, Any], subset: Subset) -> list[Mapping[str, Any]]:
    """The pod's required node-selector terms with the subset's ANDed into each (upstream 2.6.4)."""
    affinity = (pod.get("spec", {}).get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    terms = list(required.get("nodeSelectorTerms") or ())
    extra = subset.required_node_selector
    if extra is None:
        return terms
    if not terms:
        return [extra]
    return [
        {
            "matchExpressions": list(t.get("matchExpressions") or ()) + list(extra.get("matchExpressions") or ()),
            "matchFields": list(t.get("matchFields") or ()) + list(extra.get("matchFields") or ()),
        }
        for t in terms
    ]


def node_matches_terms(node: Mapping[str, Any], terms: Sequence[Mapping[str, Any]]) -> bool:
    """Terms are ORed; no terms means no restriction."""
    return not terms or any(node_matches_term(node, t) for t in terms)


def node_matches_term(node: Mapping[str, Any], term: Mapping[str, Any]) -> bool:
    """Requirements within a term are ANDed; an empty term matches nothing (as in the scheduler)."""
    expressions = term.get("matchExpressions") or ()
    fields = term.get("matchFields") or ()
    if not expressions and not fields:
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    name = {"metadata.name": node.get("metadata", {}).get("name")}
    return all(_requirement_holds(r, labels) for r in expressions) and all(_requirement_holds(r, name) for r in fields)


def _requirement_holds(req: Mapping[str, Any], values: Mapping[str, Any]) -> bool:
    key, operator, wanted = str(req.get("key")), req.get("operator"), req.get("values") or []
    present = key in values
    value = values.get(key)
    if operator == "In":
        return present and value in wanted
    if operator == "NotIn":
        return not present or value not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and len(wanted) == 1:
        try:
            have, limit = int(str(value)), int(str(wanted[0]))
        except ValueError:
            return False
        return have > limit if operator == "Gt" else have < limit
    return False


def _tolerated(taint: Mapping[str, Any], tolerations: Iterable[Mapping[str, Any]]) -> bool:
    return any(_tolerates(t, taint) for t in tolerations)


def _tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """core/v1 Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def _patch_already_applied(pod: Mapping[str, Any], subset: Subset) -> bool:
    """Upstream's podPatchScore: the subset patch would change nothing but annotations."""
    if not subset.patch:
        return False
    try:
        patched = strategic.apply_pod_patch(pod, subset.patch)
    except strategic.PatchError:
        return False
    return _without_annotations(patched) == _without_annotations(pod)


def _without_annotations(pod: Mapping[str, Any]) -> Obj:
    metadata = {k: v for k, v in (pod.get("metadata") or {}).items() if k != "annotations"}
    return {**pod, "metadata": metadata}


# --------------------------------------------------------------------------------------------------
# Deletion cost (upstream 3.5)


def _deletion_costs(
    ws: WorkloadSpread,
    groups: Mapping[str, Sequence[Mapping[str, Any]]],
    workload_replicas: int,
    reverse: bool,
    plan: ReconcilePlan,
) -> None:
    n = len(ws.subsets)
    if not reverse and all_percentages(ws):
        _proportional_costs(ws, groups, plan)
        return
    for i, subset in enumerate(ws.subsets):
        j = n - 1 - i if reverse else i
        active = [p for p in groups.get(subset.name, ()) if is_active(p)]
        limit = _resolve(subset, workload_replicas)
        extras = 0 if limit is None else max(0, len(active) - limit)
        for position, pod in enumerate(sorted(active, key=deletability_key)):
            cost = -COST_STEP * (j + 1) if position < extras else _cost_within_max(n, j)
            _set_cost(pod, cost, plan)
    for pod in groups.get(FAKE_SUBSET, ()):
        if is_active(pod):
            _set_cost(pod, -COST_STEP * (n + 1), plan)


def _cost_within_max(subsets: int, rank: int) -> int:
    """A pod within its subset's max: the earlier the subset (lower rank), the costlier to delete."""
    return COST_STEP * (subsets - rank)


def admission_deletion_cost(ws: WorkloadSpread, subset: Subset) -> int | None:
    """The deletion cost the reconciler will give a pod admitted into ``subset`` (within its max, newest
    pod version), or None where it depends on more than the subset (proportional percentages).

    Written by the webhook into the pod it admits, so that a burst of N pods does not cost N more pod
    PATCHes on the API server after it (upstream patches every new pod from its controller): the reconciler
    then finds the cost already right and only corrects pods whose situation changed since.
    """
    if not manages_deletion_cost(ws) or all_percentages(ws):
        return None
    names = [s.name for s in ws.subsets]
    if subset.name not in names:
        return None
    return _cost_within_max(len(names), names.index(subset.name))


def all_percentages(ws: WorkloadSpread) -> bool:
    return bool(ws.subsets) and all(isinstance(s.max_replicas, str) for s in ws.subsets)


def _proportional_costs(
    ws: WorkloadSpread, groups: Mapping[str, Sequence[Mapping[str, Any]]], plan: ReconcilePlan
) -> None:
    """Deletion costs that keep percentage subsets in proportion at *every* smaller replica count.

    Upstream prices pods against the current replica count only, and a ReplicaSet scaled from 16 to 8
    deletes all 8 pods at once with the costs of 16, before any reconciler sees the new count: with
    50/25/25 % that empties the last two subsets (upstream #877). Here each pod is priced by the smallest
    replica count at which its subset still needs it: the k-th pod kept in a subset of p % is needed from
    ``R = floor((k-1) * 100 / p) + 1`` replicas on. Pods needed only at higher counts are cheaper, ties go
    to the later subset first, so deleting the cheapest pods down to any count M leaves ``ceil(p * M)``
    pods in each subset (as far as the rounding of the percentages allows).
    """
    n = len(ws.subsets)
    costs: list[int] = []
    for i, subset in enumerate(ws.subsets):
        percent = int(str(subset.max_replicas).rstrip("%") or 0)
        active = sorted((p for p in groups.get(subset.name, ()) if is_active(p)), key=deletability_key,
                        reverse=True)  # least deletable first: the pods kept longest
        for k, pod in enumerate(active, start=1):
            needed_from = (k - 1) * 100 // percent + 1 if percent > 0 else _MAX_INT32 // (2 * n)
            cost = -(needed_from * n + i)
            costs.append(cost)
            _set_cost(pod, cost, plan)
    floor = min(costs, default=0) - 1
    for pod in groups.get(FAKE_SUBSET, ()):
        if is_active(pod):
            _set_cost(pod, min(floor, -COST_STEP * (n + 1)), plan)


def _set_cost(pod: Mapping[str, Any], cost: int, plan: ReconcilePlan) -> None:
    current = (pod.get("metadata", {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    if current != str(cost):
        plan.deletion_costs[pod_name(pod)] = str(cost)


_PHASE_RANK = {"Pending": 0, "": 0, "Unknown": 1, "Running": 2}


def deletability_key(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """Kubernetes' ``ActivePods.Less``: the first pods in this order are the ones a controller deletes first.

    Unassigned before assigned, Pending before Unknown before Running, not ready before ready, ready for a
    shorter time first, more restarts first, newer first. ``sorted`` is stable, so ties keep list order.
    """
    spec, status = pod.get("spec", {}), pod.get("status", {})
    ready_since = _ready_since(status)
    created = parse_time(pod.get("metadata", {}).get("creationTimestamp"))
    restarts = sum(int(c.get("restartCount", 0)) for c in status.get("containerStatuses") or ())
    return (
        1 if spec.get("nodeName") else 0,
        _PHASE_RANK.get(str(status.get("phase") or ""), 2),
        0 if ready_since is None else 1,
        -(ready_since.timestamp()) if ready_since is not None else 0.0,
        -restarts,
        -(created.timestamp()) if created is not None else float("-inf"),
    )


def _ready_since(status: Mapping[str, Any]) -> dt.datetime | None:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return parse_time(condition.get("lastTransitionTime")) or dt.datetime.min.replace(tzinfo=dt.UTC)
    return None


# --------------------------------------------------------------------------------------------------
# Status (upstream 3.6) and Adaptive conditions (upstream 3.7)


def _subset_statuses(
    ws: WorkloadSpread,
    old_statuses: Sequence[SubsetStatus],
    groups: Mapping[str, Sequence[Mapping[str, Any]]],
    workload_replicas: int,
    now: dt.datetime,
    plan: ReconcilePlan,
    *,
    overall: bool,
    expire_creations: bool,
) -> list[SubsetStatus]:
    old_by_name = {s.name: s for s in old_statuses}
    statuses = [
        # The webhook records creating/deleting entries in the versioned ledgers only, so their expiry is
        # reported from there; conditions and reschedules are reported from the overall pass.
        _subset_status(subset, old_by_name.get(subset.name), groups.get(subset.name, ()), workload_replicas, now,
                       plan, report=not overall, expire_creations=expire_creations)
        for subset in ws.subsets
    ]
    rcs = ws.schedule_strategy.reschedule_seconds
    if rcs is None:
        return statuses
    for index, (subset, status) in enumerate(zip(ws.subsets, statuses, strict=True)):
        old = old_by_name.get(subset.name)
        if index == len(ws.subsets) - 1:
            _set_condition(status, old, "True", "Sufficient", "", now)
            continue
        timed_out = _unschedulable_pods(groups.get(subset.name, ()), rcs, now, plan)
        _schedulable_condition(ws, subset, status, old, timed_out, now, plan, report=overall)
        if overall:
            plan.reschedule.extend(pod_name(p) for p in timed_out)
            for pod in timed_out:
                plan.events.append(EventRecord("Normal", "PodRescheduled", f"Pod {pod_name(pod)} stayed "
                                               f"unschedulable in subset {subset.name} for more than {rcs}s; it is "
                                               "deleted so its workload re-creates it in a later subset",
                                               pod_name(pod)))
    return statuses


def _subset_status(
    subset: Subset,
    old: SubsetStatus | None,
    pods: Sequence[Mapping[str, Any]],
    workload_replicas: int,
    now: dt.datetime,
    plan: ReconcilePlan,
    *,
    report: bool,
    expire_creations: bool,
) -> SubsetStatus:
    """``missingReplicas = max - active + recent deletes - recent creates``, clamped as upstream clamps it."""
    limit = _resolve(subset, workload_replicas)
    maximum = -1 if limit is None else limit
    missing = maximum
    creating = dict(old.creating_pods) if old else {}
    old_deleting = old.deleting_pods if old else {}
    deleting: dict[str, str] = {}
    active = 0
    for pod in pods:
        creating.pop(ledger_key(pod), None)
        creating.pop(pod_name(pod), None)
        if not is_active(pod):
            continue
        active += 1
        if missing > 0:
            missing -= 1
        name = pod_name(pod)
        if name in old_deleting:
            since = parse_time(old_deleting[name]) or now
            if since + DELETE_TIMEOUT <= now:
                if report:
                    plan.events.append(EventRecord("Warning", "DeletePodFailed", f"Pod {name} was expected to be "
                                                   "deleted but it wasn't", name))
                continue
            deleting[name] = old_deleting[name]
            if missing < maximum:
                missing += 1
            plan.requeue(since + DELETE_TIMEOUT - now)
    kept_creating: dict[str, str] = {}
    for key, stamp in creating.items():
        since = parse_time(stamp) or now
        overdue = since + CREATE_TIMEOUT <= now
        if overdue and expire_creations:
            if report:
                plan.expired_creations.append(key)
                plan.events.append(_expiry_event(key, subset.name))
            continue
        if overdue and report:
            plan.overdue_creations.append(key)
        kept_creating[key] = stamp
        if missing > 0:
            missing -= 1
        plan.requeue(since + CREATE_TIMEOUT - now)
    return SubsetStatus(subset.name, active, missing, kept_creating, deleting, [])


def _expiry_event(key: str, subset: str) -> EventRecord:
    seconds = int(CREATE_TIMEOUT.total_seconds())
    if key.startswith(RESERVED_PREFIX):  # its webhook process stopped before it used or returned the slot
        return EventRecord("Normal", "ReservedSlotExpired", f"Slot {key} reserved ahead in subset {subset} was "
                           f"neither used nor returned within {seconds}s; it is given back")
    return EventRecord("Warning", "CreatePodFailed", f"Pod {key} was expected to be created in subset {subset} "
                       f"but it wasn't seen within {seconds}s; its slot is given back")


def _unschedulable_pods(
    pods: Iterable[Mapping[str, Any]], rcs: int, now: dt.datetime, plan: ReconcilePlan
) -> list[Mapping[str, Any]]:
    timed_out = []
    for pod in pods:
        if not _is_unschedulable(pod):
            continue
        created = parse_time(pod.get("metadata", {}).get("creationTimestamp")) or now
        deadline = created + dt.timedelta(seconds=rcs)
        if deadline < now:
            timed_out.append(pod)
        else:
            plan.requeue(deadline - now)
    return timed_out


def _is_unschedulable(pod: Mapping[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp") or pod.get("spec", {}).get("nodeName"):
        return False
    status = pod.get("status", {})
    if status.get("phase") not in (None, "", "Pending"):
        return False
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or ()
    )


def _schedulable_condition(
    ws: WorkloadSpread,
    subset: Subset,
    status: SubsetStatus,
    old: SubsetStatus | None,
    timed_out: Sequence[Mapping[str, Any]],
    now: dt.datetime,
    plan: ReconcilePlan,
    *,
    report: bool,
) -> None:
    old_condition = old.condition(CONDITION_SCHEDULABLE) if old else None
    if timed_out:
        if report and (old_condition is None or old_condition.status != "False"):
            plan.events.append(EventRecord("Warning", "SubsetUnschedulable", f"Subset {subset.name} has pods that "
                                           "cannot be scheduled; new pods skip it for "
                                           f"{MAX_UNSCHEDULABLE_SECONDS}s"))
        _set_condition(status, old, "False", "PodUnschedulable", "", now)
        return
    if old_condition is None or old_condition.status != "False":
        _set_condition(status, old, "True", "Sufficient", "", now)
        return
    since = parse_time(old_condition.last_transition_time) or now
    if since + UNSCHEDULABLE_PERIOD < now:
        if report:
            plan.events.append(EventRecord("Normal", "RecoverSchedulable", f"Subset {subset.name} of "
                                           f"WorkloadSpread {ws.name} is recovered from unschedulable to "
                                           "schedulable"))
        _set_condition(status, old, "True", "Sufficient", "", now)
    else:
        status.conditions.append(SubsetCondition(**_condition_fields(old_condition)))
        plan.requeue(since + UNSCHEDULABLE_PERIOD - now)


def _condition_fields(c: SubsetCondition) -> dict[str, Any]:
    return {
        "type": c.type,
        "status": c.status,
        "reason": c.reason,
        "message": c.message,
        "last_transition_time": c.last_transition_time,
        "observed_generation": c.observed_generation,
    }


def _set_condition(
    status: SubsetStatus, old: SubsetStatus | None, value: str, reason: str, message: str, now: dt.datetime
) -> None:
    """Same status keeps the old transition time; a different status starts a new one (upstream 3.7)."""
    previous = old.condition(CONDITION_SCHEDULABLE) if old else None
    since = previous.last_transition_time if previous is not None and previous.status == value else None
    status.conditions.append(
        SubsetCondition(CONDITION_SCHEDULABLE, value, reason, message, since or format_time(now))
    )
