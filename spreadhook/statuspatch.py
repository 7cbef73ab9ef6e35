"""JSON patches of a WorkloadSpread status that change only its ledger: entries and slot counts.

A status write with a ``resourceVersion`` precondition fails whenever anything at all was written since the
read. Under a burst that made the webhook's ledger writes lose to the reconciler's: each removal of the
entries of pods that had appeared cost the ledger's write in flight a 409, a re-read and a second write, and
in a traced 3,000-pod burst at C=64 the writes that met one took 2.6 s instead of 0.3-1.2 s, long enough for
the slots reserved ahead to run out. What a ledger decision depends on is narrower than the whole object: the
slot counts (``missingReplicas``) of the pod version's subsets, and the subsets being where they were. A
patch that ``test``\\ s exactly those, and then adds and removes its own entries and sets the counts, is
applied by kube-apiserver to its newest object (retrying its own storage conflicts) and fails with 422 only
when one of those changed, which the callers read as a conflict.

The operations are derived from the two statuses, the one read and the one decided, never from anybody's
intent; anything else that differs (a new pod version's ledger, a subset's replicas or conditions, an
emptied ``deletingPods``) gets ``None``, and the caller writes with the ``resourceVersion`` precondition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from spreadhook.model import Obj, SubsetStatus, WorkloadSpreadStatus

ENTRY_FIELDS = (("creatingPods", "creating_pods"), ("deletingPods", "deleting_pods"))


def pointer(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901): ``~`` and ``/`` escaped."""
    return token.replace("~", "~0").replace("/", "~1")


def ledger_patch(before: WorkloadSpreadStatus, after: WorkloadSpreadStatus, *, sole_writer: bool) -> list[Obj] | None:
    """The operations that turn ``before`` into ``after``, each subset list they touch guarded by ``test``\\ s
    of every subset's name and ``missingReplicas`` as ``before`` has them (so that a pod is placed exactly as
    a write over ``before`` would place it), or None when the two differ in more than entries and counts.

    A subset's first ``creatingPods`` entries are an ``add`` of the whole map, since the field may be absent,
    and such an ``add`` replaces a map another webhook process created meanwhile; its count ``test`` misses
    that when the same process also recorded a deletion in the subset (a slot taken, a slot given back). So
    they are patched only by the ``sole_writer`` (the reconciler adds no entries, and this process's own
    writes are serialized by its group commit); anybody else gets None."""
    if before.observed_generation != after.observed_generation:
        return None
    lists_before, lists_after = _subset_lists(before), _subset_lists(after)
    if lists_before.keys() != lists_after.keys():
        return None
    operations: list[Obj] = []
    for at, old_list in lists_before.items():
        new_list = lists_after[at]
        if [s.name for s in old_list] != [s.name for s in new_list]:
            return None
        changes: list[Obj] = []
        for index, (old, new) in enumerate(zip(old_list, new_list, strict=True)):
            entry_changes = _entry_changes(f"{at}/{index}", old, new, sole_writer)
            if entry_changes is None:
                return None
            changes += entry_changes
        if changes:
            for index, old in enumerate(old_list):
                operations += [{"op": "test", "path": f"{at}/{index}/name", "value": old.name},
                               {"op": "test", "path": f"{at}/{index}/missingReplicas", "value": old.missing_replicas}]
            operations += changes
    return operations


def drop_patch(status: WorkloadSpreadStatus, entries: Mapping[str, Mapping[str, Sequence[str]]]) -> list[Obj]:
    """Remove the ``creatingPods`` keys ``entries`` names (pod version -> subset -> keys), each subset guarded
    by a ``test`` of its name where ``status`` has it, and nothing else: the counts may have moved since (the
    pods hold these slots whatever they are), so they are neither tested nor set."""
    operations: list[Obj] = []
    for version, subsets in entries.items():
        names = [s.name for s in status.versioned_subset_statuses.get(version) or []]
        for name, keys in subsets.items():
            at = f"/status/versionedSubsetStatuses/{pointer(version)}/{names.index(name)}"
            operations.append({"op": "test", "path": f"{at}/name", "value": name})
            operations += [{"op": "remove", "path": f"{at}/creatingPods/{pointer(key)}"} for key in keys]
    return operations


def _subset_lists(status: WorkloadSpreadStatus) -> dict[str, list[SubsetStatus]]:
    lists = {f"/status/versionedSubsetStatuses/{pointer(version)}": subsets
             for version, subsets in status.versioned_subset_statuses.items()}
    if status.subset_statuses:
        lists["/status/subsetStatuses"] = status.subset_statuses
    return lists


def _entry_changes(at: str, old: SubsetStatus, new: SubsetStatus, sole_writer: bool) -> list[Obj] | None:
    """The operations on one subset's count and entries, or None when something else changed (or an entry
    changed its timestamp, which no ledger decision does)."""
    if old.replicas != new.replicas or old.conditions != new.conditions:
        return None
    changes: list[Obj] = []
    if old.missing_replicas != new.missing_replicas:
        changes.append({"op": "replace", "path": f"{at}/missingReplicas", "value": new.missing_replicas})
    for wire, attribute in ENTRY_FIELDS:
        held: dict[str, str] = getattr(old, attribute)
        wanted: dict[str, str] = getattr(new, attribute)
        if any(held[key] != stamp for key, stamp in wanted.items() if key in held):
            return None
        added = {key: stamp for key, stamp in wanted.items() if key not in held}
        removed = [key for key in held if key not in wanted]
        if added and not held:
            # No key to add beside: the whole map (see ``ledger_patch``). A subset's first deletingPods entry
            # may leave a full subset's count as it was, so it always goes with the resourceVersion precondition.
            if wire != "creatingPods" or not sole_writer:
                return None
            changes.append({"op": "add", "path": f"{at}/{wire}", "value": added})
            continue
        if removed and not wanted:
            return None  # emptied: kube-apiserver keeps ``{}``, this store may drop the field; keep them alike
        changes += [{"op": "remove", "path": f"{at}/{wire}/{pointer(key)}"} for key in removed]
        changes += [{"op": "add", "path": f"{at}/{wire}/{pointer(key)}", "value": stamp}
                    for key, stamp in added.items()]
    return changes
