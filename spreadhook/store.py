"""Where WorkloadSpreads, their workloads and pods are read and the ledger is written.

``Store`` is the one small interface the ledger, the server and the reconciler use. ``KubeStore`` (in
``kubestore``) backs it with the API server: watch-fed caches for reads, the status subresource with a
``resourceVersion`` precondition for writes (the ledger's: JSON patches guarded by the counts they change).
``MemoryStore`` backs it in-process with the same compare-and-swap contract, for ``spreadhook demo``/``plan``
and fast tests: a second implementation of the interface, not a mock of the API server.
"""

from __future__ import annotations

import copy
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import jsonpatch

from spreadhook import statuspatch, strategic
from spreadhook.model import (
    Obj,
    TargetRef,
    WorkloadSpread,
    WorkloadSpreadStatus,
    api_group,
    parse,
    parse_status,
    status_to_dict,
)


def version_order(resource_version: str) -> int:
    """resourceVersions are opaque, but etcd's are integers; comparing them is what upstream does too (and
    what the ledger and the cache need to tell the newer of two copies). Unreadable ones sort first."""
    try:
        return int(resource_version)
    except ValueError:
        return -1


class StoreError(RuntimeError):
    """The store could not answer (API server unreachable, timeout, forbidden)."""


class Conflict(StoreError):
    """The object changed since it was read: re-read and decide again (HTTP 409)."""


class NotFound(StoreError):
    """The object does not exist (HTTP 404)."""


@dataclass(frozen=True, slots=True)
class WorkloadKey:
    """A workload as a WorkloadSpread's targetRef names it: group, kind and name; never the version."""

    namespace: str
    group: str
    kind: str
    name: str

    @classmethod
    def of_ref(cls, namespace: str, ref: TargetRef) -> WorkloadKey:
        return cls(namespace, ref.group, ref.kind, ref.name)

    @classmethod
    def of_owner(cls, namespace: str, owner: Mapping[str, Any]) -> WorkloadKey:
        return cls(namespace, api_group(str(owner.get("apiVersion", ""))), str(owner.get("kind", "")),
                   str(owner.get("name", "")))


class Store(Protocol):
    """What spreadhook needs from the cluster. Reads may come from a cache; ``fresh_workload_spread`` and
    ``write_status`` never do."""

    def workload_spread(self, namespace: str, name: str) -> WorkloadSpread | None:
        """The cached WorkloadSpread, or None."""

    def workload_spread_for(self, target: WorkloadKey) -> WorkloadSpread | None:
        """The WorkloadSpread whose targetRef names ``target`` (an index lookup, not a scan)."""

    def workload_spreads(self, namespace: str | None = None) -> list[WorkloadSpread]:
        """Every cached WorkloadSpread (of one namespace)."""

    def fresh_workload_spread(self, namespace: str, name: str) -> WorkloadSpread | None:
        """Read past every cache: used after a conflict, when the cache is known to be stale."""

    def workload_spread_after(
        self, namespace: str, name: str, resource_version: str, timeout: float
    ) -> WorkloadSpread | None:
        """The cached WorkloadSpread once it is newer than ``resource_version``, waiting up to ``timeout`` for
        the watch to bring it; None if it has not (or the WorkloadSpread is gone). After a conflict, the
        watch has usually delivered the write that won before a fresh read could even be answered."""

    def write_status(self, ws: WorkloadSpread, status: WorkloadSpreadStatus) -> WorkloadSpread:
        """Replace the status if ``ws.resource_version`` is still current, else raise ``Conflict``."""

    def write_ledger(self, ws: WorkloadSpread, status: WorkloadSpreadStatus, *, sole_writer: bool) -> WorkloadSpread:
        """Write a ledger decision made over ``ws.status``: when it changes only entries and counts, as the JSON
        patch ``statuspatch.ledger_patch`` gives, applied to the newest status whatever its resourceVersion
        (``Conflict`` if a count it was decided from moved, or a subset); else as ``write_status``.
        ``sole_writer``: no other webhook process is known to write this ledger."""

    def replace_managed_fields(self, ws: WorkloadSpread, managed_fields: list[Any]) -> None:
        """Replace ``metadata.managedFields`` if ``ws.resource_version`` is still current, else ``Conflict``."""

    def drop_creating_entries(self, ws: WorkloadSpread, entries: Mapping[str, Mapping[str, Sequence[str]]]
                              ) -> WorkloadSpread:
        """Remove the ``creatingPods`` keys ``entries`` names (pod version -> subset -> keys) from the newest
        status, whatever its resourceVersion, provided each subset is still where ``ws`` has it and still holds
        every key; else ``Conflict`` and nothing is removed. Under a burst the webhook's ledger writes land
        faster than the reconciler's read-and-write, so a preconditioned status write of the reconciler lost
        every race for 16 s, and the status grew to 3,000 entries (220 KB) that every ledger write carried."""

    def workload(self, namespace: str, api_version: str, kind: str, name: str) -> Obj | None:
        """A workload or intermediate owner (Deployment, ReplicaSet, CloneSet, ...), cached."""

    def pods(self, namespace: str) -> list[Obj]:
        """Every pod of a namespace, cached (for the reconciler)."""

    def fresh_pods(self, namespace: str) -> list[Obj]:
        """Every pod of a namespace, read from the API server past every cache: the list that may give back
        a slot whose pod never appeared, which a lagging cache must not do."""

    def pod(self, namespace: str, name: str) -> Obj:
        """One pod (for an eviction, whose review carries no pod); raises ``NotFound``."""

    def nodes(self) -> dict[str, Obj]:
        """Every node by name, cached (for adopting pods that were created without the webhook)."""

    def patch_pod(self, namespace: str, name: str, patch: Obj) -> None:
        """Strategic-merge-patch a pod's metadata (adoption, deletion cost)."""

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod so its workload re-creates it (Adaptive rescheduling)."""

    def record_event(self, ws: WorkloadSpread, event_type: str, reason: str, message: str) -> None:
        """Publish a Kubernetes Event about ``ws``; best effort, never raises."""

    def synced(self) -> bool:
        """True once the caches hold a full list, so answers are not made from a half-filled cache."""

    def subscribe(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(namespace)`` whenever a pod, workload or WorkloadSpread of a namespace changes."""

    def subscribe_workloads(self, callback: Callable[[Obj | None, Obj], None]) -> None:
        """Call ``callback(before, after)`` whenever a cached workload changes (``before`` is None for one not
        seen before), from the thread that saw the change: the callback must be quick and must not raise."""


class StatusPatching(ABC):
    """The status writes that go as JSON patches, derived once for both stores from the statuses (never
    written as pointers by hand): a store says only how it replaces a status with its ``resourceVersion`` as
    the precondition (``write_status``) and how it applies a JSON patch to its newest status
    (``patch_status``)."""

    @abstractmethod
    def write_status(self, ws: WorkloadSpread, status: WorkloadSpreadStatus) -> WorkloadSpread:
        """See ``Store.write_status``."""

    @abstractmethod
    def patch_status(self, ws: WorkloadSpread, operations: list[Obj]) -> WorkloadSpread:
        """Apply a JSON patch to the newest status, whatever its resourceVersion, as kube-apiserver does with
        a patch that carries none; a failed ``test`` or a path no longer there is a ``Conflict``."""

    def write_ledger(self, ws: WorkloadSpread, status: WorkloadSpreadStatus, *, sole_writer: bool) -> WorkloadSpread:
        operations = statuspatch.ledger_patch(ws.status, status, sole_writer=sole_writer)
        if operations is None:
            return self.write_status(ws, status)
        return self.patch_status(ws, operations)

    def drop_creating_entries(self, ws: WorkloadSpread, entries: Mapping[str, Mapping[str, Sequence[str]]]
                              ) -> WorkloadSpread:
        return self.patch_status(ws, statuspatch.drop_patch(ws.status, entries))


class MemoryStore(StatusPatching):
    """An in-process store with the API server's compare-and-swap contract on WorkloadSpread status.

    Like a watch cache, it hands out shared objects: callers read them and never mutate them (every write
    replaces an object instead of changing it), so a read costs no copy.
    """

    def __init__(self, write_latency: float = 0.0) -> None:
        """``write_latency`` (seconds) makes each status write take as long as a round trip to a real API
        server, so that the demo exercises group commit the way a cluster does (a write in memory is
        instantaneous, and nothing would ever queue behind it)."""
        self._write_latency = write_latency
        self._lock = threading.Lock()
        self._version = 0
        self._spreads: dict[tuple[str, str], WorkloadSpread] = {}
        self._workloads: dict[tuple[str, str, str, str], Obj] = {}
        self._pods: dict[tuple[str, str], Obj] = {}
        self._nodes: dict[str, Obj] = {}
        self.events: list[tuple[str, str, str, str]] = []
        self._subscribers: list[Callable[[str], None]] = []
        self._workload_subscribers: list[Callable[[Obj | None, Obj], None]] = []
        self.status_writes = 0
        self.conflicts = 0

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # -- objects put in by the embedding program (the demo, plan, tests) ----------------------------

    def apply_workload_spread(self, obj: Mapping[str, Any]) -> WorkloadSpread:
        """Create or replace a WorkloadSpread (spec and metadata), keeping its status as the API server does."""
        with self._lock:
            ws = copy.deepcopy(dict(obj))
            metadata = ws.setdefault("metadata", {})
            metadata.setdefault("namespace", "default")
            key = (metadata["namespace"], metadata["name"])
            previous = self._spreads.get(key)
            metadata.setdefault("uid", f"uid-{metadata['namespace']}-{metadata['name']}")
            metadata["generation"] = (previous.generation if previous else 0) + 1
            metadata["resourceVersion"] = self._next_version()
            stored = parse(ws)
            if previous is not None:
                stored.status = previous.status
            self._spreads[key] = stored
        self._notify(key[0])
        return stored

    def apply_workload(self, obj: Mapping[str, Any]) -> None:
        metadata = obj["metadata"]
        key = (metadata.get("namespace", "default"), api_group(obj["apiVersion"]), obj["kind"], metadata["name"])
        with self._lock:
            before = self._workloads.get(key)
            after = self._workloads[key] = copy.deepcopy(dict(obj))
        for callback in list(self._workload_subscribers):
            callback(before, after)
        self._notify(key[0])

    def put_pod(self, pod: Mapping[str, Any]) -> None:
        metadata = pod["metadata"]
        namespace = metadata.get("namespace", "default")
        with self._lock:
            self._pods[(namespace, metadata["name"])] = copy.deepcopy(dict(pod))
        self._notify(namespace)

    # -- Store -------------------------------------------------------------------------------------

    def workload_spread(self, namespace: str, name: str) -> WorkloadSpread | None:
        with self._lock:
            return self._spreads.get((namespace, name))

    fresh_workload_spread = workload_spread

    def workload_spread_after(
        self, namespace: str, name: str, resource_version: str, timeout: float
    ) -> WorkloadSpread | None:
        """This store has no lag to wait out: its copy is the current one."""
        current = self.workload_spread(namespace, name)
        return current if current is not None and current.resource_version != resource_version else None

    def workload_spread_for(self, target: WorkloadKey) -> WorkloadSpread | None:
        for ws in self.workload_spreads(target.namespace):
            ref = ws.target_ref
            if ref is not None and (ref.group, ref.kind, ref.name) == (target.group, target.kind, target.name):
                return ws
        return None

    def workload_spreads(self, namespace: str | None = None) -> list[WorkloadSpread]:
        with self._lock:
            return [ws for (ns, _), ws in self._spreads.items() if namespace is None or ns == namespace]

    def write_status(self, ws: WorkloadSpread, status: WorkloadSpreadStatus) -> WorkloadSpread:
        if self._write_latency:
            time.sleep(self._write_latency)
        with self._lock:
            return self._store_status_locked(self._current_locked(ws), status.clone())

    def _store_status_locked(self, current: WorkloadSpread, status: WorkloadSpreadStatus) -> WorkloadSpread:
        """Replace ``current``'s status under a new resourceVersion, as every status write does."""
        updated = replace(current, metadata={**current.metadata, "resourceVersion": self._next_version()},
                          status=status)
        self._spreads[(current.namespace, current.name)] = updated
        self.status_writes += 1
        return updated

    def patch_status(self, ws: WorkloadSpread, operations: list[Obj]) -> WorkloadSpread:
        if self._write_latency:
            time.sleep(self._write_latency)
        with self._lock:
            current = self._spreads.get((ws.namespace, ws.name))
            if current is None:
                raise NotFound(f"WorkloadSpread {ws.key} not found")
            document = status_to_dict(current.status)
            lists = [document.get("subsetStatuses") or [], *(document.get("versionedSubsetStatuses") or {}).values()]
            for subsets in lists:  # kube-apiserver keeps a map whose last key a patch removed, as {}
                for subset in subsets:
                    subset.setdefault("creatingPods", {})
                    subset.setdefault("deletingPods", {})
            try:
                patched = jsonpatch.apply_patch({"status": document}, operations)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
                self.conflicts += 1
                raise Conflict(f"WorkloadSpread {ws.key}: the status moved under the patch") from None
            return self._store_status_locked(current, parse_status(patched["status"]))

    def replace_managed_fields(self, ws: WorkloadSpread, managed_fields: list[Any]) -> None:
        with self._lock:
            current = self._current_locked(ws)
            metadata = {**current.metadata, "managedFields": copy.deepcopy(managed_fields),
                        "resourceVersion": self._next_version()}
            self._spreads[(ws.namespace, ws.name)] = replace(current, metadata=metadata)

    def _current_locked(self, ws: WorkloadSpread) -> WorkloadSpread:
        """The stored WorkloadSpread that a write preconditioned on ``ws``'s resourceVersion may replace."""
        current = self._spreads.get((ws.namespace, ws.name))
        if current is None:
            raise NotFound(f"WorkloadSpread {ws.key} not found")
        if current.resource_version != ws.resource_version:
            self.conflicts += 1
            raise Conflict(f"WorkloadSpread {ws.key} was modified: resourceVersion {ws.resource_version} is stale")
        return current

    def workload(self, namespace: str, api_version: str, kind: str, name: str) -> Obj | None:
        with self._lock:
            return self._workloads.get((namespace, api_group(api_version), kind, name))

    def pods(self, namespace: str) -> list[Obj]:
        with self._lock:
            return [p for (ns, _), p in self._pods.items() if ns == namespace]

    def fresh_pods(self, namespace: str) -> list[Obj]:
        return self.pods(namespace)

    def pod(self, namespace: str, name: str) -> Obj:
        with self._lock:
            found = self._pods.get((namespace, name))
            if found is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            return found

    def nodes(self) -> dict[str, Obj]:
        with self._lock:
            return dict(self._nodes)

    def put_node(self, node: Mapping[str, Any]) -> None:
        with self._lock:
            self._nodes[node["metadata"]["name"]] = copy.deepcopy(dict(node))

    def patch_pod(self, namespace: str, name: str, patch: Obj) -> None:
        with self._lock:
            pod = self._pods.get((namespace, name))
            if pod is None:
                raise NotFound(f"pod {namespace}/{name} not found")
            self._pods[(namespace, name)] = strategic.apply_pod_patch(pod, patch)
        self._notify(namespace)

    def delete_pod(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._pods.pop((namespace, name), None) is None:
                raise NotFound(f"pod {namespace}/{name} not found")
        self._notify(namespace)

    def record_event(self, ws: WorkloadSpread, event_type: str, reason: str, message: str) -> None:
        with self._lock:
            self.events.append((ws.key, event_type, reason, message))

    def synced(self) -> bool:
        return True

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._subscribers.append(callback)

    def subscribe_workloads(self, callback: Callable[[Obj | None, Obj], None]) -> None:
        self._workload_subscribers.append(callback)

    def _notify(self, namespace: str) -> None:
        for callback in list(self._subscribers):
            callback(namespace)
