"""The shared decision: subset choice and ledger (webhook side), status, adoption, deletion cost and
Adaptive rescheduling (reconciler side), pinned to upstream's behaviour."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from spreadhook import model, mutation, spread
from spreadhook.model import WorkloadSpread, WorkloadSpreadStatus
from tests.unit.factories import T0, node, pod, ws

BANDWIDTH = [{"name": "a", "maxReplicas": 2}, {"name": "b", "maxReplicas": 1}, {"name": "c"}]


def admit(w: WorkloadSpread, status: WorkloadSpreadStatus, p: dict[str, Any], *, replicas: int = 10,
          now: dt.datetime = T0) -> spread.Admission:
    uids = (f"uid-{i}" for i in itertools.count())
    return spread.admit(w, status, p, workload_replicas=replicas, now=now, new_uid=lambda: next(uids))


def chosen(w: WorkloadSpread, count: int, **kwargs: Any) -> list[str | None]:
    status = w.status.clone()
    names = []
    for i in range(count):
        decision = admit(w, status, pod(f"app-{i}"), **kwargs)
        names.append(decision.subset.name if decision.subset else None)
    return names


def test_subsets_fill_in_spec_order_up_to_their_integer_max() -> None:
    assert chosen(ws(BANDWIDTH), 5) == ["a", "a", "b", "c", "c"]


def test_percent_max_is_resolved_against_workload_replicas_rounding_up() -> None:
    w = ws([{"name": "a", "maxReplicas": "50%"}, {"name": "b", "maxReplicas": "25%"},
            {"name": "c", "maxReplicas": "25%"}])
    assert chosen(w, 5, replicas=5) == ["a", "a", "a", "b", "b"]


def test_no_subset_with_room_admits_the_pod_unchanged() -> None:
    w = ws([{"name": "a", "maxReplicas": 1}, {"name": "b", "maxReplicas": 1}])
    assert chosen(w, 3) == ["a", "b", None]


def test_unlimited_subset_takes_pods_without_a_ledger_entry() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    for i in range(3):
        admit(w, status, pod(f"app-{i}"))
    decision = admit(w, status, pod("app-3"))
    assert decision.subset is not None and decision.subset.name == "c"
    assert not decision.changed
    assert status.versioned_subset_statuses[model.VERSION_IGNORED][2].creating_pods == {}


def test_admission_records_creating_pod_and_decrements_missing_replicas() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    decision = admit(w, status, pod("app-0"))
    entry = status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert decision.changed
    assert entry.creating_pods == {"app-0": "2026-01-01T12:00:00Z"}
    assert entry.missing_replicas == 1


def test_readmitting_a_pod_already_in_the_ledger_changes_nothing() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    admit(w, status, pod("app-0"))
    again = admit(w, status, pod("app-0"))
    assert again.subset is not None and again.subset.name == "a" and not again.changed
    assert status.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas == 1


def test_nameless_pod_is_keyed_by_a_generated_uid() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    decision = admit(w, status, pod(generate_name=True))
    assert decision.generated_uid == "uid-0"
    assert "uid-0" in status.versioned_subset_statuses[model.VERSION_IGNORED][0].creating_pods


def test_single_unlimited_subset_never_touches_the_ledger() -> None:
    w = ws([{"name": "only"}])
    status = w.status.clone()
    decision = admit(w, status, pod())
    assert decision.subset is not None and not decision.changed and status.versioned_subset_statuses == {}


def test_unschedulable_subset_is_skipped() -> None:
    w = ws(BANDWIDTH, status={"versionedSubsetStatuses": {"versionIgnored": [
        {"name": "a", "replicas": 0, "missingReplicas": 2,
         "conditions": [{"type": "Schedulable", "status": "False", "reason": "PodUnschedulable",
                         "lastTransitionTime": "2026-01-01T00:00:00Z", "message": ""}]},
        {"name": "b", "replicas": 0, "missingReplicas": 1}, {"name": "c", "replicas": 0, "missingReplicas": -1}]}})
    assert chosen(w, 2) == ["b", "c"]


def test_deployment_pods_use_a_ledger_per_pod_template_hash() -> None:
    w = ws([{"name": "a", "maxReplicas": 1}, {"name": "b"}], kind="Deployment")
    status = w.status.clone()
    old = admit(w, status, pod("old", owner_kind="ReplicaSet", labels={"pod-template-hash": "v1"}))
    new = admit(w, status, pod("new", owner_kind="ReplicaSet", labels={"pod-template-hash": "v2"}))
    assert old.subset and new.subset and old.subset.name == new.subset.name == "a"
    assert set(status.versioned_subset_statuses) == {"v1", "v2"}


def test_statefulset_pods_go_by_ordinal_ranges_without_a_ledger() -> None:
    w = ws([{"name": "a", "maxReplicas": 2}, {"name": "b", "maxReplicas": 3}, {"name": "c"}], kind="StatefulSet")
    status = w.status.clone()
    names = [admit(w, status, pod(f"db-{i}", owner_kind="StatefulSet")).subset for i in range(7)]
    assert [s.name if s else None for s in names] == ["a", "a", "b", "b", "b", "c", "c"]
    assert status.versioned_subset_statuses == {}


def test_release_records_deleting_pod_and_gives_the_slot_back() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    admit(w, status, pod("app-0"))
    running = pod("app-1", annotations={spread.MATCHED_ANNOTATION: '{"name":"ws","subset":"a"}'})
    admit(w, status, pod("app-1"))
    status.versioned_subset_statuses[model.VERSION_IGNORED][0].creating_pods.pop("app-1")
    released = spread.release(w, status, running, now=T0)
    entry = status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert released == spread.Release("a", True)
    assert entry.deleting_pods == {"app-1": "2026-01-01T12:00:00Z"} and entry.missing_replicas == 1


def test_release_of_a_pod_still_in_creating_pods_gives_nothing_back() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    admit(w, status, pod("app-0"))
    annotated = pod("app-0", annotations={spread.MATCHED_ANNOTATION: '{"name":"ws","subset":"a"}'})
    assert spread.release(w, status, annotated, now=T0) == spread.Release("a", False)


def test_matched_annotation_keys_are_case_insensitive() -> None:
    p = pod(annotations={spread.MATCHED_ANNOTATION: '{"Name":"ws","Subset":"b"}'})
    assert spread.matched(p) == spread.Matched("ws", "b")


# -- reconcile ---------------------------------------------------------------------------------------


def in_subset(name: str, subset: str, **kwargs: Any) -> dict[str, Any]:
    annotations = {spread.MATCHED_ANNOTATION: spread.Matched("ws", subset).to_annotation(),
                   **kwargs.pop("annotations", {})}
    return pod(name, annotations=annotations, **kwargs)


def reconcile(w: WorkloadSpread, pods: list[dict[str, Any]], *, replicas: int = 10, now: dt.datetime = T0,
              nodes: dict[str, Any] | None = None, latest: str | None = None) -> spread.ReconcilePlan:
    return spread.reconcile(w, pods, workload_replicas=replicas, nodes=nodes or {}, now=now, latest_version=latest)


def test_status_counts_active_pods_per_subset() -> None:
    w = ws(BANDWIDTH)
    pods = [in_subset("p0", "a"), in_subset("p1", "a"), in_subset("p2", "c"),
            in_subset("done", "b", phase="Succeeded")]
    plan = reconcile(w, pods)
    assert [(s.name, s.replicas, s.missing_replicas) for s in plan.status.subset_statuses] == [
        ("a", 2, 0), ("b", 0, 1), ("c", 1, -1)]
    assert plan.status.versioned_subset_statuses[model.VERSION_IGNORED] == plan.status.subset_statuses


def recent(seconds: int) -> str:
    return model.format_time(T0 - dt.timedelta(seconds=seconds))


def test_creating_entries_hold_a_slot_until_seen_or_30s_old() -> None:
    w = ws(BANDWIDTH, status={"versionedSubsetStatuses": {"versionIgnored": [
        {"name": "a", "replicas": 0, "missingReplicas": 0,
         "creatingPods": {"young": recent(10), "old": recent(31), "seen": recent(5)}},
        {"name": "b", "replicas": 0, "missingReplicas": 1}, {"name": "c", "replicas": 0, "missingReplicas": -1}]}})
    plan = reconcile(w, [in_subset("seen", "a")])
    entry = plan.status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert entry.creating_pods == {"young": recent(10)}
    assert entry.missing_replicas == 0  # 2 - seen - young
    assert plan.requeue_after == 20
    assert [e.reason for e in plan.events] == ["CreatePodFailed"]


def test_deleting_entries_return_a_slot_until_gone_or_15s_old() -> None:
    w = ws(BANDWIDTH, status={"versionedSubsetStatuses": {"versionIgnored": [
        {"name": "a", "replicas": 2, "missingReplicas": 1,
         "deletingPods": {"leaving": recent(5), "stuck": recent(16), "gone": recent(1)}},
        {"name": "b", "replicas": 0, "missingReplicas": 1}, {"name": "c", "replicas": 0, "missingReplicas": -1}]}})
    plan = reconcile(w, [in_subset("leaving", "a"), in_subset("stuck", "a")])
    entry = plan.status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert entry.deleting_pods == {"leaving": recent(5)}
    assert entry.missing_replicas == 1
    assert plan.requeue_after == 10
    assert [e.reason for e in plan.events] == ["DeletePodFailed"]


def test_versions_without_pods_are_kept_only_while_they_hold_entries() -> None:
    w = ws(BANDWIDTH, kind="Deployment", status={"versionedSubsetStatuses": {
        "gone": [{"name": "a", "replicas": 0, "missingReplicas": 2}],
        "pending": [{"name": "a", "replicas": 0, "missingReplicas": 1, "creatingPods": {"x": recent(1)}}]}})
    plan = reconcile(w, [])
    assert set(plan.status.versioned_subset_statuses) == {"pending"}


def test_deletion_cost_orders_subsets_in_reverse() -> None:
    w = ws(BANDWIDTH)
    pods = [in_subset("a0", "a"), in_subset("a1", "a"), in_subset("b0", "b"), in_subset("c0", "c")]
    assert reconcile(w, pods).deletion_costs == {"a0": "300", "a1": "300", "b0": "200", "c0": "100"}


def test_deletion_cost_makes_pods_over_max_cheapest_and_upstream_example_holds() -> None:
    w = ws([{"name": "a", "maxReplicas": 3}, {"name": "b"}])
    pods = [in_subset(f"a{i}", "a", created=T0 + dt.timedelta(seconds=i)) for i in range(4)]
    costs = reconcile(w, pods).deletion_costs
    assert sorted(costs.values()) == ["-100", "200", "200", "200"]
    assert costs["a3"] == "-100"  # the newest pod is the most deletable


def test_deletion_cost_prefers_unready_pods_as_extras() -> None:
    w = ws([{"name": "a", "maxReplicas": 1}, {"name": "b"}])
    pods = [in_subset("ready", "a"), in_subset("unready", "a", ready=False)]
    assert reconcile(w, pods).deletion_costs == {"unready": "-100", "ready": "200"}


def test_deletion_cost_is_reversed_for_old_versions_during_a_rollout() -> None:
    w = ws(BANDWIDTH, kind="Deployment")
    rs = {"owner_kind": "ReplicaSet"}
    pods = [in_subset("old-a", "a", labels={"pod-template-hash": "v1"}, **rs),
            in_subset("old-c", "c", labels={"pod-template-hash": "v1"}, **rs),
            in_subset("new-a", "a", labels={"pod-template-hash": "v2"}, **rs),
            in_subset("new-c", "c", labels={"pod-template-hash": "v2"}, **rs)]
    costs = reconcile(w, pods, latest="v2").deletion_costs
    assert costs == {"old-a": "100", "old-c": "300", "new-a": "300", "new-c": "100"}


def test_pods_in_no_subset_are_deleted_first() -> None:
    w = ws(BANDWIDTH)
    assert reconcile(w, [pod("stray")]).deletion_costs == {"stray": "-400"}


def test_unchanged_deletion_cost_is_not_rewritten() -> None:
    w = ws(BANDWIDTH)
    p = in_subset("c0", "c", annotations={spread.DELETION_COST_ANNOTATION: "100"})
    assert reconcile(w, [p]).deletion_costs == {}


def test_statefulset_and_job_pods_get_no_deletion_cost() -> None:
    for kind in ("StatefulSet", "Job"):
        assert reconcile(ws(BANDWIDTH, kind=kind), [in_subset("x", "a", owner_kind=kind)]).deletion_costs == {}


def test_adoption_scores_node_match_then_patch_then_quota() -> None:
    subsets = [
        {"name": "idc", "maxReplicas": 1,
         "requiredNodeSelector": {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["idc"]}]}},
        {"name": "cloud", "patch": {"metadata": {"labels": {"sidecar": "true"}}}},
        {"name": "any"},
    ]
    w = ws(subsets)
    nodes = {"n-idc": node("n-idc", {"pool": "idc"}), "n-cloud": node("n-cloud", {"pool": "cloud"})}
    pods = [pod("on-idc", node="n-idc"), pod("on-cloud", node="n-cloud", labels={"sidecar": "true"}),
            pod("unbound")]
    plan = reconcile(w, pods, nodes=nodes)
    assert [(a.pod, a.subset) for a in plan.adoptions] == [("on-idc", "idc"), ("on-cloud", "cloud")]
    assert plan.adoptions[1].patch == {"metadata": {
        "annotations": {spread.MATCHED_ANNOTATION: '{"name":"ws","subset":"cloud"}',
                        spread.DELETION_COST_ANNOTATION: "200"},
        "labels": {"sidecar": "true"}}}
    assert [s.replicas for s in plan.status.subset_statuses] == [1, 1, 0]


def test_an_adopted_pod_gets_its_deletion_cost_in_the_adoption_patch_not_in_a_second_one() -> None:
    w = ws([{"name": "idc", "requiredNodeSelector": {"matchExpressions": [
        {"key": "pool", "operator": "In", "values": ["idc"]}]}}, {"name": "any"}])
    nodes = {"n-idc": node("n-idc", {"pool": "idc"}), "n-other": node("n-other", {"pool": "other"})}
    plan = reconcile(w, [pod("on-idc", node="n-idc"), pod("elsewhere", node="n-other"), in_subset("old", "any")],
                     nodes=nodes)
    costs = {a.pod: a.patch["metadata"]["annotations"][spread.DELETION_COST_ANNOTATION] for a in plan.adoptions}
    assert costs == {"on-idc": "200", "elsewhere": "100"}
    assert plan.deletion_costs == {"old": "100"}


def test_adoption_requires_the_node_taints_to_be_tolerated() -> None:
    w = ws([{"name": "vk", "tolerations": [{"key": "vk", "operator": "Exists"}]}, {"name": "plain"}])
    tainted = {"n": node("n", taints=[{"key": "vk", "value": "x", "effect": "NoSchedule"}])}
    assert reconcile(w, [pod("p", node="n")], nodes=tainted).adoptions[0].subset == "vk"


def adaptive_ws(status: dict[str, Any] | None = None) -> WorkloadSpread:
    return ws([{"name": "idc", "maxReplicas": 5}, {"name": "serverless"}],
              strategy={"type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": 10}}, status=status)


def unschedulable(name: str, age: int) -> dict[str, Any]:
    p = in_subset(name, "idc", phase="Pending", created=T0 - dt.timedelta(seconds=age), ready=False)
    p["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]
    return p


def test_adaptive_reschedules_pods_unschedulable_longer_than_the_critical_seconds() -> None:
    plan = reconcile(adaptive_ws(), [unschedulable("stuck", 11), unschedulable("fresh", 5)])
    assert plan.reschedule == ["stuck"]
    idc = plan.status.subset_statuses[0]
    assert idc.condition("Schedulable") == model.SubsetCondition("Schedulable", "False", "PodUnschedulable", "",
                                                                  "2026-01-01T12:00:00Z")
    assert plan.status.subset_statuses[1].condition("Schedulable").status == "True"  # type: ignore[union-attr]
    assert plan.requeue_after == 5


def test_unschedulable_subset_recovers_after_300_seconds() -> None:
    old = {"subsetStatuses": [{"name": "idc", "replicas": 0, "missingReplicas": 5, "conditions": [
        {"type": "Schedulable", "status": "False", "reason": "PodUnschedulable", "message": "",
         "lastTransitionTime": recent(299)}]}, {"name": "serverless", "replicas": 0, "missingReplicas": -1}]}
    still = reconcile(adaptive_ws(old), [])
    assert still.status.subset_statuses[0].is_unschedulable() and still.requeue_after == 1
    later = reconcile(adaptive_ws(old), [], now=T0 + dt.timedelta(seconds=2))
    assert not later.status.subset_statuses[0].is_unschedulable()
    assert "RecoverSchedulable" in [e.reason for e in later.events]


def test_fixed_strategy_removes_schedulable_conditions() -> None:
    w = ws(BANDWIDTH, status={"subsetStatuses": [{"name": "a", "replicas": 0, "missingReplicas": 2, "conditions": [
        {"type": "Schedulable", "status": "False", "reason": "PodUnschedulable", "message": "",
         "lastTransitionTime": recent(1)}]}]})
    assert reconcile(w, []).status.subset_statuses[0].conditions == []


# -- rebase: the reconciler's plan carried onto ledger entries written after its read ----------------


def test_rebase_replays_new_creating_entries_onto_the_plan() -> None:
    w = ws(BANDWIDTH)
    base = w.status.clone()
    plan = reconcile(w, [in_subset("p0", "a")])
    newest = base.clone()
    admit(w, newest, pod("late"))  # admitted after the reconciler's read, pod not created yet
    rebased = spread.rebase(w, plan.status, base, newest, [in_subset("p0", "a")], 10)
    entry = rebased.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert entry.creating_pods.keys() == {"late"} and entry.missing_replicas == 0


def test_rebase_skips_creating_entries_of_pods_already_counted() -> None:
    w = ws(BANDWIDTH)
    base = w.status.clone()
    pods = [in_subset("p0", "a"), in_subset("late", "a")]
    plan = reconcile(w, pods)
    newest = base.clone()
    admit(w, newest, pod("late"))
    rebased = spread.rebase(w, plan.status, base, newest, pods, 10)
    assert rebased.versioned_subset_statuses[model.VERSION_IGNORED][0].creating_pods == {}


def test_rebase_gives_slots_back_for_new_deleting_entries_of_active_pods() -> None:
    w = ws(BANDWIDTH)
    pods = [in_subset("p0", "a"), in_subset("p1", "a")]
    base = reconcile(w, pods).status
    plan = reconcile(model.parse({**model.to_dict(w), "status": model.status_to_dict(base)}), pods)
    newest = base.clone()
    spread.release(w, newest, pods[0], now=T0)
    rebased = spread.rebase(w, plan.status, base, newest, pods, 10)
    entry = rebased.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert entry.deleting_pods.keys() == {"p0"} and entry.missing_replicas == 1


def scale_in(pods: list[dict[str, Any]], costs: dict[str, str], keep: int) -> list[str]:
    """What a ReplicaSet does: delete the cheapest pods at once, keep ``keep``."""
    ranked = sorted(pods, key=lambda p: int(costs[spread.pod_name(p)]))
    return [spread.matched(p).subset for p in ranked[len(pods) - keep:]]  # type: ignore[union-attr]


def test_percentage_costs_keep_proportions_at_every_smaller_replica_count() -> None:
    w = ws([{"name": "intel", "maxReplicas": "50%"}, {"name": "amd", "maxReplicas": "25%"},
            {"name": "arm", "maxReplicas": "25%"}], kind="Deployment")
    pods = [in_subset(f"i{k}", "intel") for k in range(8)] + [in_subset(f"a{k}", "amd") for k in range(4)] + \
        [in_subset(f"r{k}", "arm") for k in range(4)]
    costs = reconcile(w, pods, replicas=16).deletion_costs
    for keep, expected in [(8, (4, 2, 2)), (4, (2, 1, 1)), (12, (6, 3, 3))]:
        kept = scale_in(pods, costs, keep)
        assert (kept.count("intel"), kept.count("amd"), kept.count("arm")) == expected, keep


def test_percentage_costs_price_pods_in_no_subset_below_every_other() -> None:
    w = ws([{"name": "a", "maxReplicas": "50%"}, {"name": "b", "maxReplicas": "50%"}])
    costs = reconcile(w, [in_subset("a0", "a"), in_subset("b0", "b"), pod("stray")], replicas=2).deletion_costs
    assert int(costs["stray"]) < min(int(costs["a0"]), int(costs["b0"]))


def test_adoption_counts_slots_the_webhook_reserved_for_pods_not_listed_yet() -> None:
    w = ws([{"name": "ecs", "maxReplicas": 2}, {"name": "any"}], status={"versionedSubsetStatuses": {
        "versionIgnored": [{"name": "ecs", "replicas": 1, "missingReplicas": 0,
                            "creatingPods": {"in-flight": recent(1)}},
                           {"name": "any", "replicas": 0, "missingReplicas": -1}]}})
    nodes = {"n": node("n")}
    plan = reconcile(w, [in_subset("placed", "ecs", node="n"), pod("stray", node="n")], nodes=nodes)
    assert [(a.pod, a.subset) for a in plan.adoptions] == [("stray", "any")]


def test_pods_admitted_with_the_webhooks_deletion_cost_need_no_reconciler_patch() -> None:
    w = ws(BANDWIDTH)
    status = w.status.clone()
    admitted = []
    for i in range(5):
        choice = admit(w, status, pod(f"p{i}"))
        assert choice.subset is not None
        admitted.append(mutation.inject(pod(f"p{i}"), w, choice.subset))
    costs = [p["metadata"]["annotations"][spread.DELETION_COST_ANNOTATION] for p in admitted]
    assert costs == ["300", "300", "200", "100", "100"]
    assert reconcile(w, admitted).deletion_costs == {}


def test_webhook_leaves_deletion_cost_to_the_reconciler_where_it_is_not_the_subsets_alone() -> None:
    percentages = ws([{"name": "a", "maxReplicas": "50%"}, {"name": "b", "maxReplicas": "50%"}])
    assert spread.admission_deletion_cost(percentages, percentages.subsets[0]) is None
    for kind in ("StatefulSet", "Job"):
        w = ws(BANDWIDTH, kind=kind)
        assert spread.admission_deletion_cost(w, w.subsets[0]) is None


# -- slots reserved ahead ---------------------------------------------------------------------------------

WIDE = [{"name": "a", "maxReplicas": 3}, {"name": "b", "maxReplicas": 2}, {"name": "c"}]


def reserved_spread(count: int) -> tuple[WorkloadSpread, list[tuple[str, str]]]:
    """A WorkloadSpread whose status holds ``count`` slots reserved ahead, and the slots."""
    w = ws(WIDE)
    status = w.status.clone()
    uids = (f"u{i}" for i in itertools.count())
    taken = spread.reserve_ahead(w, status, model.VERSION_IGNORED, count, now=T0, new_uid=lambda: next(uids))
    return ws(WIDE, status=model.status_to_dict(status)), taken


def test_slots_are_reserved_in_subset_order_and_never_in_a_subset_without_a_max() -> None:
    w, taken = reserved_spread(10)
    assert taken == [("a", "reserved-u0"), ("a", "reserved-u1"), ("a", "reserved-u2"),
                     ("b", "reserved-u3"), ("b", "reserved-u4")]
    entries = w.status.versioned_subset_statuses[model.VERSION_IGNORED]
    assert [e.missing_replicas for e in entries] == [0, 0, -1]
    assert chosen(w, 1) == ["c"], "reserved room is taken room for every other decision"


def test_a_pod_carrying_a_reserved_key_is_counted_once_when_the_reconciler_sees_it() -> None:
    w, _ = reserved_spread(2)
    taker = pod("app-7", annotations={spread.MATCHED_ANNOTATION: spread.Matched("ws", "a", "reserved-u0")
                                      .to_annotation()})
    plan = reconcile(w, [taker])
    entry = plan.status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert (entry.replicas, entry.missing_replicas, set(entry.creating_pods)) == (1, 1, {"reserved-u1"})
    assert spread.recorded_subset(w.status.versioned_subset_statuses[model.VERSION_IGNORED], taker) == "a"


def test_a_reserved_slot_nobody_took_expires_with_an_event_that_says_so() -> None:
    w, _ = reserved_spread(1)
    plan = reconcile(w, [], now=T0 + dt.timedelta(seconds=31))
    assert plan.expired_creations == ["reserved-u0"]
    assert [(e.type, e.reason) for e in plan.events] == [("Normal", "ReservedSlotExpired")]


def test_giving_back_unused_slots_returns_their_room_but_never_more_than_the_count_allows() -> None:
    w, _ = reserved_spread(3)
    status = w.status.clone()
    assert spread.give_back(w, status, model.VERSION_IGNORED, ["reserved-u1", "reserved-u2", "not-mine"])
    entry = status.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert (entry.missing_replicas, set(entry.creating_pods)) == (2, {"reserved-u0"})
    crowded = w.status.clone()
    crowded.versioned_subset_statuses[model.VERSION_IGNORED][0].replicas = 3  # adopted past the max meanwhile
    spread.give_back(w, crowded, model.VERSION_IGNORED, ["reserved-u1"])
    assert crowded.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas == 0


def test_a_reserved_slot_is_taken_only_where_admit_would_put_the_pod() -> None:
    w, _ = reserved_spread(5)
    assert spread.may_take_reserved(w, w.status, model.VERSION_IGNORED, "a")
    freed = w.status.clone()
    freed.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas = 1  # a pod of a left
    assert not spread.may_take_reserved(w, freed, model.VERSION_IGNORED, "b"), "a's free room comes first"
    assert spread.may_take_reserved(w, freed, model.VERSION_IGNORED, "a")
    assert spread.without_max_next(w, w.status, model.VERSION_IGNORED) is not None
    assert spread.without_max_next(w, freed, model.VERSION_IGNORED) is None


def test_reserved_room_that_may_come_back_holds_pods_from_later_subsets_until_it_is_stale() -> None:
    w, _ = reserved_spread(5)
    since = T0 - dt.timedelta(seconds=7)
    assert spread.reserved_before(w, w.status, model.VERSION_IGNORED, "c", settled=set(), since=since)
    assert not spread.reserved_before(w, w.status, model.VERSION_IGNORED, "a", settled=set(), since=since)
    mine = {f"reserved-u{i}" for i in range(5)}
    assert not spread.reserved_before(w, w.status, model.VERSION_IGNORED, "c", settled=mine, since=since)
    later = T0 + dt.timedelta(seconds=1)
    assert not spread.reserved_before(w, w.status, model.VERSION_IGNORED, "c", settled=set(), since=later)


def test_another_processes_recent_entry_is_told_apart_from_ours() -> None:
    w, _ = reserved_spread(2)
    ours = {"reserved-u0", "reserved-u1"}
    assert not spread.written_by_others(w.status, ours, T0 - dt.timedelta(seconds=10))
    assert spread.written_by_others(w.status, {"reserved-u0"}, T0 - dt.timedelta(seconds=10))
    assert not spread.written_by_others(w.status, {"reserved-u0"}, T0 + dt.timedelta(seconds=1)), "too old"


def test_rebase_drops_reserved_slots_given_back_after_the_plan_was_read_and_returns_their_room() -> None:
    w, _ = reserved_spread(3)
    base = w.status.clone()
    plan = reconcile(w, [])  # planned while the three slots were still held
    assert plan.status.versioned_subset_statuses[model.VERSION_IGNORED][0].missing_replicas == 0
    newest = base.clone()
    spread.give_back(w, newest, model.VERSION_IGNORED, ["reserved-u1", "reserved-u2"])
    rebased = spread.rebase(w, plan.status, base, newest, [], 10)
    entry = rebased.versioned_subset_statuses[model.VERSION_IGNORED][0]
    assert (set(entry.creating_pods), entry.missing_replicas) == ({"reserved-u0"}, 2)
