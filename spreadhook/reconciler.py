"""The reconciler: makes each WorkloadSpread's status and its pods' deletion costs true to what exists.

Level-triggered: every sync starts from the pods, the workload and the WorkloadSpread as they are now, never
from remembered events, so a sync can be repeated, interrupted or run by a new leader at any time. The
decision itself is ``spread.reconcile`` (pure); this module only gathers its inputs and applies its outputs.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spreadhook import model, spread, workloads
from spreadhook.model import Obj, WorkloadSpread, WorkloadSpreadStatus
from spreadhook.store import Conflict, NotFound, Store, StoreError, WorkloadKey

log = logging.getLogger(__name__)

MAX_STATUS_ATTEMPTS = 20
SETTLED_ATTEMPTS = 3
FRESH_LIST_INTERVAL_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class SyncResult:
    status_written: bool
    adopted: int
    costs_patched: int
    rescheduled: int
    requeue_after: float | None


class Reconciler:
    """Syncs one WorkloadSpread at a time against a ``Store``."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], dt.datetime],
        custom_workloads: Iterable[workloads.CustomWorkload] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._custom = tuple(custom_workloads)
        self._kinds = workloads.known_kinds(self._custom)
        self._fresh_listed: dict[str, float] = {}
        """WorkloadSpread key -> when its pods were last listed past the cache (monotonic seconds)."""

    def governed_pods(self, ws: WorkloadSpread, *, fresh: bool = False) -> list[Obj]:
        """The pods of the WorkloadSpread's workload (through their owner chain) that its filter selects;
        from the cache, or with ``fresh`` from the API server."""
        ref = ws.target_ref
        if ref is None:
            return []
        target = WorkloadKey.of_ref(ws.namespace, ref)
        pods = []
        for pod in (self._store.fresh_pods if fresh else self._store.pods)(ws.namespace):
            chain = workloads.owner_chain(pod, self._lookup(ws.namespace), self._kinds)
            if any(WorkloadKey.of_owner(ws.namespace, {"apiVersion": a, "kind": k, "name": n}) == target
                   for a, k, n in chain) and workloads.selects(ws, pod):
                pods.append(pod)
        return pods

    def _lookup(self, namespace: str) -> workloads.OwnerLookup:
        return lambda api_version, kind, name: self._store.workload(namespace, api_version, kind, name)

    def plan(
        self, ws: WorkloadSpread, pods: list[Obj], *, workload_replicas: int | None = None,
        expire_creations: bool = True,
    ) -> spread.ReconcilePlan:
        """What a sync would do with these pods, without doing it."""
        ref = ws.target_ref
        workload = self._store.workload(ws.namespace, ref.api_version, ref.kind, ref.name) if ref else None
        return spread.reconcile(
            ws,
            pods,
            workload_replicas=workloads.replicas(ws, workload, self._custom) if workload_replicas is None
            else workload_replicas,
            nodes=self._store.nodes(),
            now=self._clock(),
            latest_version=workloads.latest_version(workload, self._replica_sets_of(ws, workload, pods)),
            expire_creations=expire_creations,
        )

    def _replica_sets_of(self, ws: WorkloadSpread, workload: Mapping[str, Any] | None, pods: list[Obj]) -> list[Obj]:
        if workload is None or workload.get("kind") != "Deployment":
            return []
        owned = []
        for pod in pods:
            ref = workloads.controller_of(pod)
            if ref is not None and ref.get("kind") == "ReplicaSet":
                rs = self._store.workload(ws.namespace, str(ref.get("apiVersion")), "ReplicaSet", str(ref.get("name")))
                if rs is not None and rs not in owned:
                    owned.append(rs)
        return owned

    def sync(self, namespace: str, name: str, *, workload_replicas: int | None = None) -> SyncResult | None:
        """One level-triggered pass; None when the WorkloadSpread is gone.

        The status write meets the webhook's ledger writes: on a 409 the planned status is rebased onto the
        newest ledger (``spread.rebase``) instead of re-counting every pod, so a long burst cannot starve
        the reconciler. A changed spec (generation) means a full re-plan.

        Adoptions take slots, so the status that counts them is written first, with the precondition of the
        very read they were planned on (``_write_adopting``), and the pods are patched only once it landed.
        Deletion costs come after the status, because they do not change what it says, and a status write
        held back behind hundreds of pod PATCHes is a ledger whose ``creatingPods`` keeps growing.
        """
        ws = self._store.fresh_workload_spread(namespace, name)
        if ws is None:
            return None
        ws = self._restate_managed_fields(ws)
        if ws is None:
            return None
        pods, plan = self._observe(ws, workload_replicas)
        written = False
        if plan.adoptions:
            ws, pods, plan, written = self._write_adopting(ws, pods, plan, workload_replicas)
            for adoption in plan.adoptions:
                self._patch_pod(ws, adoption.pod, adoption.patch)
        if not written and plan.status != ws.status:
            written = self._write_status(ws, plan, pods, workload_replicas)
        for pod, cost in plan.deletion_costs.items():
            self._patch_pod(ws, pod, {"metadata": {"annotations": {spread.DELETION_COST_ANNOTATION: cost}}})
        return self._finish(ws, plan, written)

    def _restate_managed_fields(self, ws: WorkloadSpread) -> WorkloadSpread | None:
        """Restate v1alpha1 managedFields entries in v1beta1 (``model.managed_fields_in_storage_version``: each
        one costs every later status write about five conversion-webhook calls); the WorkloadSpread as it is
        afterwards (None once deleted). It is an optimisation, not a duty: it waits until the webhook holds no
        slot in flight (the PATCH goes through the validating webhook and bumps the resourceVersion every
        ledger write is conditioned on, so in a burst it would slow the very writes it is meant to speed up),
        and any failure leaves it to a later sync."""
        restated = model.managed_fields_in_storage_version(ws.metadata.get("managedFields"))
        if restated is None or spread.ledger_in_flight(ws):
            return ws
        try:
            self._store.replace_managed_fields(ws, restated)
        except StoreError as exc:
            log.warning("managedFields of WorkloadSpread %s not restated yet: %s", ws.key, exc,
                        extra={"workloadSpread": ws.key})
            return ws
        log.info("restated the v1alpha1 managedFields of WorkloadSpread %s in v1beta1", ws.key,
                 extra={"workloadSpread": ws.key})
        return self._store.fresh_workload_spread(ws.namespace, ws.name)

    def _observe(self, ws: WorkloadSpread, workload_replicas: int | None) -> tuple[list[Obj], spread.ReconcilePlan]:
        """The governed pods and the plan made from them. A plan that gives back the slot of a pod never seen
        is made again from a fresh list first: the cache may not have delivered that pod yet (under a burst
        its watch lags by seconds), and a slot given back for a pod that exists lets one pod too many in.
        Expiries are rare, and the LIST is made at most once per ``FRESH_LIST_INTERVAL_SECONDS``: under a burst
        whose pods fail open, expiries come in every sync, and a LIST of thousands of pods per sync took the
        CPU the webhook in the same process needed, which made more pods fail open. Until the next LIST is
        due, the entries stay (their slots held) and the sync comes back when it is: the plan is made once,
        holding them, rather than made to expire them and then again to hold them (each plan is a pass over
        every pod, thousands under a burst)."""
        pods = self.governed_pods(ws)
        last = self._fresh_listed.get(ws.key)
        wait = 0.0 if last is None else last + FRESH_LIST_INTERVAL_SECONDS - time.monotonic()
        plan = self.plan(ws, pods, workload_replicas=workload_replicas, expire_creations=wait <= 0)
        if plan.overdue_creations:
            plan.requeue(dt.timedelta(seconds=wait))
            return pods, plan
        if not plan.expired_creations:
            return pods, plan
        self._fresh_listed[ws.key] = time.monotonic()
        pods = self.governed_pods(ws, fresh=True)
        return pods, self.plan(ws, pods, workload_replicas=workload_replicas)

    def _write_status(
        self, ws: WorkloadSpread, plan: spread.ReconcilePlan, pods: list[Obj], workload_replicas: int | None
    ) -> bool:
        """Write the planned status; on a conflict, rebase it onto the newest ledger, counting against the
        very pods the plan counted (a newer list would count pods the plan never saw)."""

        def rebased(fresh: WorkloadSpread) -> WorkloadSpreadStatus:
            if fresh.generation != ws.generation:
                raise Conflict(f"WorkloadSpread {ws.key} changed while it was reconciled")
            replicas = self._replicas(ws) if workload_replicas is None else workload_replicas
            return spread.rebase(ws, plan.status, ws.status, fresh.status, pods, replicas)

        def drop_counted(fresh: WorkloadSpread) -> WorkloadSpread:
            """A status write that lost to the ledger's still removes the entries of the pods it counted."""
            settled = spread.settled_entries(fresh.status, pods)
            return self._drop_settled(fresh, settled) if settled else fresh

        return self._write_until_landed(ws, plan.status, rebased, "status", settle=drop_counted)

    def settle(self, namespace: str, name: str) -> int:
        """Remove the ``creatingPods`` entries of the pods a sync would count now, from the cached
        WorkloadSpread, in one JSON patch that needs no precondition and moves no count; how many went.

        A full sync cannot keep up with a burst: it reads afresh, passes over every pod, and writes with the
        resourceVersion as its precondition, meeting the ledger's writes; under a 3,000-pod burst at C=64 a
        sync took 1-3 s and the next waited three times that (``controller.coalesce_delay``), and the
        entries of every pod admitted in between stayed in the status (up to 2,000 entries, 141 KB). Every
        status write and watch event carries them: on an idle kube-apiserver a status patch took 13 ms with no
        entries, 55 ms with 1,000 and 153 ms with 3,000, and a saturated one stretches that to seconds,
        during which the webhook's reserved slots run out.

        Only the pods a sync would count (``governed_pods``) settle an entry, not every pod of the namespace:
        a pod whose ReplicaSet the cache has not delivered yet exists but is not counted, and without its
        entry its slot would look free (the likely cause of a CI run in which a Deployment's first pods
        ended 5, 2, 1 in subsets of at most 4, 2, 2, while settling looked at every pod of the namespace).
        Walking the owner chains costs about 15 ms over 3,000 pods, so a round with no ``creatingPods``
        entry skips it."""
        ws = self._store.workload_spread(namespace, name)
        if ws is None or not any(entry.creating_pods for entries in ws.status.versioned_subset_statuses.values()
                                 for entry in entries):
            return 0
        settled = spread.settled_entries(ws.status, self.governed_pods(ws))
        if not settled or self._drop_settled(ws, settled) is ws:
            return 0
        return sum(len(keys) for subsets in settled.values() for keys in subsets.values())

    def _drop_settled(self, ws: WorkloadSpread, settled: spread.SettledEntries) -> WorkloadSpread:
        """Remove SETTLED from the newest status ``ws``; what ``ws`` becomes, or ``ws`` itself when the patch
        lost (an entry or a subset went meanwhile: the next settle or write removes the rest)."""
        try:
            return self._store.drop_creating_entries(ws, settled)
        except Conflict:
            return ws

    def _write_adopting(
        self, ws: WorkloadSpread, pods: list[Obj], plan: spread.ReconcilePlan, workload_replicas: int | None
    ) -> tuple[WorkloadSpread, list[Obj], spread.ReconcilePlan, bool]:
        """Write a status that adopts pods into subsets through compare-and-swap on the read it was planned
        from: a webhook reservation made since then changes the resourceVersion, and the plan is made again
        from scratch rather than rebased, since a rebase could only add that reservation on top of slots the
        adoption already took (this is how pods adopted after a webhook outage overfilled a subset while the
        restarted webhook refilled it). Returns what was finally planned and whether its status was written;
        a new plan without adoptions goes the ordinary way."""

        def replanned(fresh: WorkloadSpread) -> WorkloadSpreadStatus | None:
            nonlocal ws, pods, plan
            ws = fresh
            pods, plan = self._observe(fresh, workload_replicas)
            return plan.status if plan.adoptions else None

        written = self._write_until_landed(ws, plan.status, replanned, "the status adopting pods")
        return ws, pods, plan, written

    def _write_until_landed(
        self,
        ws: WorkloadSpread,
        status: WorkloadSpreadStatus,
        on_conflict: Callable[[WorkloadSpread], WorkloadSpreadStatus | None],
        what: str,
        settle: Callable[[WorkloadSpread], WorkloadSpread] | None = None,
    ) -> bool:
        """Write ``status`` with ``ws``'s resourceVersion as the precondition. On a 409 the WorkloadSpread is
        read afresh and ``on_conflict`` says what to write on that read instead, or None for nothing (False);
        short, growing pauses let the webhook's burst of ledger writes by. After the first 409, ``settle``
        may make a change that needs no precondition on the fresh read, and returns what it wrote; once it has,
        the write is given up after ``SETTLED_ATTEMPTS``: under a burst each attempt is a read and a write of a
        second or more that the ledger wins anyway, and the next sync, with the pods seen since, settles more."""
        attempt, attempts = 0, MAX_STATUS_ATTEMPTS
        while attempt < attempts:
            try:
                self._store.write_status(ws, status)
                return True
            except Conflict:
                fresh = self._store.fresh_workload_spread(ws.namespace, ws.name)
                if fresh is None:
                    raise NotFound(f"WorkloadSpread {ws.key} was deleted while it was reconciled") from None
                if settle is not None and attempt == 0:
                    settled = settle(fresh)
                    if settled.resource_version != fresh.resource_version:
                        attempts = SETTLED_ATTEMPTS
                    fresh = settled
                ws, instead = fresh, on_conflict(fresh)
                if instead is None:
                    return False
                status = instead
                time.sleep(min(0.05, 0.002 * 2**attempt))
                attempt += 1
        raise Conflict(f"WorkloadSpread {ws.key}: {what} kept conflicting")

    def _replicas(self, ws: WorkloadSpread) -> int:
        ref = ws.target_ref
        workload = self._store.workload(ws.namespace, ref.api_version, ref.kind, ref.name) if ref else None
        return workloads.replicas(ws, workload, self._custom)

    def _finish(self, ws: WorkloadSpread, plan: spread.ReconcilePlan, written: bool) -> SyncResult:
        rescheduled = 0
        for pod in plan.reschedule:
            try:
                self._store.delete_pod(ws.namespace, pod)
                rescheduled += 1
            except NotFound:
                pass
            except StoreError as exc:
                self._store.record_event(ws, "Warning", "DeletePodFailed",
                                         f"Failed to delete unschedulable Pod {pod}: {exc}")
        for event in plan.events:
            self._store.record_event(ws, event.type, event.reason, event.message)
        return SyncResult(written, len(plan.adoptions), len(plan.deletion_costs), rescheduled, plan.requeue_after)

    def _patch_pod(self, ws: WorkloadSpread, pod: str, patch: Obj) -> None:
        try:
            self._store.patch_pod(ws.namespace, pod, patch)
        except NotFound:
            pass  # gone since we listed it; the next sync sees that
        except StoreError as exc:
            self._store.record_event(ws, "Warning", "PatchPodDeletionCostFailed",
                                     f"Failed to patch Pod {pod}: {exc}")
            raise
