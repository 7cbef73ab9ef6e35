"""The WorkloadSpread model: lossless parsing of both versions, conversion, and upstream's validation rules."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from spreadhook import model
from tests.unit.factories import ws, ws_dict

ALPHA_FULL: dict[str, Any] = {
    "apiVersion": model.V1ALPHA1,
    "kind": "WorkloadSpread",
    "metadata": {"name": "ws", "namespace": "default", "generation": 3},
    "spec": {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "targetFilter": {"selector": {"matchLabels": {"role": "worker"}},
                         "replicasPathList": ["spec.replicas"]},
        "subsets": [
            {
                "name": "idc",
                "requiredNodeSelectorTerm": {"matchExpressions": [{"key": "pool", "operator": "In",
                                                                   "values": ["idc"]}]},
                "preferredNodeSelectorTerms": [{"weight": 10, "preference": {"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]}]}}],
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "maxReplicas": 8,
                "patch": {"metadata": {"labels": {"sidecar": "false"}}},
            },
            {"name": "cloud", "patch": {"metadata": {"labels": {"sidecar": "true"}}}},
        ],
        "scheduleStrategy": {"type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": 10,
                                                              "disableSimulationSchedule": False}},
    },
    "status": {
        "observedGeneration": 3,
        "subsetStatuses": [
            {"name": "idc", "replicas": 8, "missingReplicas": 0,
             "creatingPods": {"web-abc": "2026-01-01T00:00:00Z"},
             "deletingPods": {"web-def": "2026-01-01T00:00:01Z"},
             "conditions": [{"type": "Schedulable", "status": "False", "reason": "PodUnschedulable",
                             "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            {"name": "cloud", "replicas": 2, "missingReplicas": -1},
        ],
        "versionedSubsetStatuses": {"5d8f": [{"name": "idc", "replicas": 8, "missingReplicas": 0}]},
    },
}


def test_v1alpha1_round_trips_losslessly() -> None:
    assert model.to_dict(model.parse(ALPHA_FULL)) == ALPHA_FULL


def test_conversion_renames_the_selector_fields_both_ways() -> None:
    beta = model.convert(ALPHA_FULL, model.V1BETA1)
    subset = beta["spec"]["subsets"][0]
    assert "requiredNodeSelector" in subset and "requiredNodeSelectorTerm" not in subset
    assert "preferredNodeSelector" in subset and "preferredNodeSelectorTerms" not in subset
    assert model.convert(beta, model.V1ALPHA1) == ALPHA_FULL


KUBECTL_ALPHA_ENTRY: dict[str, Any] = {
    "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": model.V1ALPHA1,
    "time": "2026-12-01T12:00:00Z", "fieldsType": "FieldsV1",
    "fieldsV1": {"f:spec": {"f:subsets": {"k:{\"name\":\"idc\"}": {
        ".": {}, "f:name": {}, "f:maxReplicas": {},
        "f:requiredNodeSelectorTerm": {"f:matchExpressions": {}}, "f:preferredNodeSelectorTerms": {}}}}},
}
STATUS_ENTRY: dict[str, Any] = {"manager": "spreadhook", "operation": "Update", "apiVersion": model.V1BETA1,
                                "subresource": "status", "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}


def test_v1alpha1_managed_fields_are_restated_in_v1beta1_with_the_selector_fields_renamed() -> None:
    restated = model.managed_fields_in_storage_version([KUBECTL_ALPHA_ENTRY, STATUS_ENTRY])
    assert restated is not None
    kubectl, status = restated
    assert {k: v for k, v in kubectl.items() if k != "fieldsV1"} == {
        **{k: v for k, v in KUBECTL_ALPHA_ENTRY.items() if k != "fieldsV1"}, "apiVersion": model.V1BETA1}
    assert kubectl["fieldsV1"]["f:spec"]["f:subsets"]['k:{"name":"idc"}'] == {
        ".": {}, "f:name": {}, "f:maxReplicas": {},
        "f:requiredNodeSelector": {"f:matchExpressions": {}}, "f:preferredNodeSelector": {}}
    assert status == STATUS_ENTRY
    assert KUBECTL_ALPHA_ENTRY["apiVersion"] == model.V1ALPHA1, "the input is left as it was"


def test_managed_fields_without_a_v1alpha1_entry_need_no_restatement() -> None:
    assert model.managed_fields_in_storage_version([STATUS_ENTRY]) is None
    assert model.managed_fields_in_storage_version(None) is None
    assert model.managed_fields_in_storage_version("garbage") is None


def test_conversion_to_v1beta1_fills_the_required_condition_reason_and_message() -> None:
    alpha = copy.deepcopy(ALPHA_FULL)
    alpha["status"]["subsetStatuses"][0]["conditions"][0].pop("reason")
    condition = model.convert(alpha, model.V1BETA1)["status"]["subsetStatuses"][0]["conditions"][0]
    assert condition["reason"] == "Unknown"
    assert condition["message"] == ""


def test_conversion_to_v1alpha1_drops_condition_observed_generation() -> None:
    beta = model.convert(ALPHA_FULL, model.V1BETA1)
    beta["status"]["subsetStatuses"][0]["conditions"][0]["observedGeneration"] = 3
    back = model.convert(beta, model.V1ALPHA1)
    assert "observedGeneration" not in back["status"]["subsetStatuses"][0]["conditions"][0]


def test_v1beta1_round_trips_losslessly() -> None:
    beta = model.convert(ALPHA_FULL, model.V1BETA1)
    assert model.to_dict(model.parse(beta)) == beta


def test_parse_refuses_a_non_object() -> None:
    with pytest.raises(model.ModelError):
        model.parse(["not", "an", "object"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "workload", "expected"),
    [(5, 100, 5), ("50%", 10, 5), ("25%", 10, 3), ("34%", 3, 2), ("0%", 10, 0), (None, 10, None)],
)
def test_max_replicas_resolves_percentages_rounding_up(value: Any, workload: int, expected: int | None) -> None:
    assert model.resolve_max_replicas(value, workload) == expected


def test_max_replicas_string_without_percent_is_refused_at_resolution() -> None:
    with pytest.raises(ValueError, match="percentage"):
        model.resolve_max_replicas("50", 10)


def errors_of(obj: dict[str, Any]) -> list[str]:
    return [str(e) for e in model.validate(model.parse(obj))]


def one_subset(**fields: Any) -> dict[str, Any]:
    return ws_dict([{"name": "a", **fields}])


def test_rule_1_target_ref_is_required() -> None:
    obj = one_subset()
    del obj["spec"]["targetRef"]
    assert errors_of(obj) == ["spec.targetRef: no targetRef defined in WorkloadSpread"]


def test_rule_2_target_ref_fields_must_not_be_empty() -> None:
    obj = one_subset()
    obj["spec"]["targetRef"]["name"] = ""
    assert errors_of(obj)[0].startswith("spec.targetRef: empty TargetReference is not valid")


@pytest.mark.parametrize(("api", "kind"), [("apps/v1", "CloneSet"), ("apps.kruise.io/v1alpha1", "Deployment"),
                                           ("apps/v1", "Job"), ("batch/v1", "StatefulSet")])
def test_rule_3_builtin_kinds_need_their_api_group(api: str, kind: str) -> None:
    obj = one_subset()
    obj["spec"]["targetRef"] = {"apiVersion": api, "kind": kind, "name": "x"}
    assert f"TargetReference is not valid for {kind}" in errors_of(obj)[0]


def test_rule_3_advanced_statefulset_group_is_accepted() -> None:
    obj = one_subset()
    obj["spec"]["targetRef"] = {"apiVersion": "apps.kruise.io/v1beta1", "kind": "StatefulSet", "name": "x"}
    assert errors_of(obj) == []


def test_rule_4_custom_kinds_need_the_whitelist() -> None:
    obj = one_subset()
    obj["spec"]["targetRef"] = {"apiVersion": "game.kruise.io/v1alpha1", "kind": "GameServerSet", "name": "x"}
    assert "is not permitted" in errors_of(obj)[0]
    parsed = model.parse(obj)
    assert model.validate(parsed, custom_kinds=[("game.kruise.io", "GameServerSet")]) == []


def test_rule_5_at_least_one_subset() -> None:
    assert errors_of(ws_dict([])) == ["spec.subsets: subsets number must >= 1: give at least one subset"]


def test_rule_6_subset_name_not_empty() -> None:
    assert errors_of(ws_dict([{"name": ""}])) == ["spec.subsets[0].name: must not be empty"]


def test_rule_7_subset_names_unique() -> None:
    assert errors_of(ws_dict([{"name": "a"}, {"name": "a"}])) == ["spec.subsets[1].name: duplicated subset name a"]


def test_rule_8_required_node_selector_is_validated_like_core() -> None:
    term = {"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["x"]}]}
    assert errors_of(one_subset(requiredNodeSelector=term)) == [
        "spec.subsets[0].requiredNodeSelector.matchExpressions[0].values: may not be specified when operator is "
        "Exists"]


def test_rule_8_in_operator_needs_values_and_match_fields_only_metadata_name() -> None:
    term = {"matchExpressions": [{"key": "zone", "operator": "In"}],
            "matchFields": [{"key": "spec.x", "operator": "In", "values": ["a"]}]}
    errors = errors_of(one_subset(requiredNodeSelector=term))
    assert errors[0] == "spec.subsets[0].requiredNodeSelector.matchExpressions[0].values: must be specified when " \
                        "operator is In"
    assert errors[1].endswith("matchFields supports only the key metadata.name")


def test_rule_9_preferred_weight_is_1_to_100() -> None:
    terms = [{"weight": 101, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]
    assert errors_of(one_subset(preferredNodeSelector=terms)) == [
        "spec.subsets[0].preferredNodeSelector[0].weight: 101 must be an integer in the range 1-100"]


def test_rule_10_tolerations_are_validated_like_core() -> None:
    tolerations = [{"key": "a", "operator": "Exists", "value": "b"},
                   {"operator": "Equal", "value": "x"},
                   {"key": "c", "effect": "NoSchedule", "tolerationSeconds": 5}]
    errors = errors_of(one_subset(tolerations=tolerations))
    assert errors == [
        "spec.subsets[0].tolerations[0].operator: value must be empty when operator is Exists",
        "spec.subsets[0].tolerations[1].operator: must be Exists when key is empty (to match all taints)",
        "spec.subsets[0].tolerations[2].effect: must be NoExecute when tolerationSeconds is set",
    ]


def test_rule_12_max_replicas_types_must_match() -> None:
    errors = errors_of(ws_dict([{"name": "a", "maxReplicas": 1}, {"name": "b", "maxReplicas": "50%"}]))
    assert errors == ["spec.subsets[1].maxReplicas: the maxReplicas type of all subsets must be the same (all "
                      "integers or all percentages)"]


def test_rule_13_statefulset_needs_integer_max() -> None:
    obj = ws_dict([{"name": "a", "maxReplicas": "50%"}, {"name": "b"}], kind="StatefulSet")
    assert "the maxReplicas type must be Int for StatefulSet" in errors_of(obj)[0]


@pytest.mark.parametrize("value", ["0.2%", "50.2%", "-1%", -100, "50"])
def test_rule_14_max_replicas_must_parse_and_be_non_negative(value: Any) -> None:
    errors = errors_of(ws_dict([{"name": "a", "maxReplicas": value}, {"name": "b"}]))
    assert errors and errors[0].startswith("spec.subsets[0].maxReplicas: maxReplicas is not valid for subset")


def test_rule_14_string_without_percent_is_an_error_unlike_upstream() -> None:
    errors = errors_of(ws_dict([{"name": "a", "maxReplicas": "50"}, {"name": "b"}]))
    assert "whole-number percentage like '50%'" in errors[0]


def test_rule_15_percentages_may_not_exceed_100() -> None:
    errors = errors_of(ws_dict([{"name": "a", "maxReplicas": "40%"}, {"name": "b", "maxReplicas": "70%"}]))
    assert errors == ["spec.subsets[1].maxReplicas: the sum of all subset's maxReplicas exceeds 100%, which is "
                      "not permitted"]


def test_rule_16_percentages_must_sum_to_100_unless_the_last_is_unlimited() -> None:
    short = ws_dict([{"name": "a", "maxReplicas": "40%"}, {"name": "b", "maxReplicas": "50%"}])
    assert errors_of(short)[0].startswith("spec.subsets[0].maxReplicas: maxReplicas sum of all subsets must equal")
    assert errors_of(ws_dict([{"name": "a", "maxReplicas": "40%"}, {"name": "b"}])) == []
    exact = ws_dict([{"name": "a", "maxReplicas": "50%"}, {"name": "b", "maxReplicas": "25%"},
                     {"name": "c", "maxReplicas": "25%"}])
    assert errors_of(exact) == []


def test_rule_17_strategy_type_is_an_enum() -> None:
    obj = ws_dict([{"name": "a"}], strategy={"type": "Sometimes"})
    assert errors_of(obj) == ["spec.scheduleStrategy.type: 'Sometimes' is not supported: use Fixed or Adaptive"]


def test_rule_18_adaptive_settings_need_adaptive_type() -> None:
    obj = ws_dict([{"name": "a"}], strategy={"type": "Fixed", "adaptive": {"rescheduleCriticalSeconds": 10}})
    assert "must be Adaptive when using adaptive" in errors_of(obj)[0]


def test_rule_19_adaptive_needs_an_unlimited_last_subset() -> None:
    obj = ws_dict([{"name": "a", "maxReplicas": 1}, {"name": "b", "maxReplicas": 2}],
                  strategy={"type": "Adaptive", "adaptive": {}})
    assert errors_of(obj) == ["spec.scheduleStrategy.adaptive: the last subset's maxReplicas must be not "
                              "specified, so that rescheduled pods always have somewhere to go"]


@pytest.mark.parametrize(("subsets", "allowed"), [(2, 295), (3, 147), (4, 98), (5, 73)])
def test_rule_20_reschedule_seconds_bounded_by_subset_count(subsets: int, allowed: int) -> None:
    names = [{"name": f"s{i}"} for i in range(subsets)]
    ok = ws_dict(names, strategy={"type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": allowed}})
    too_long = ws_dict(names, strategy={"type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": allowed + 1}})
    assert errors_of(ok) == []
    assert errors_of(too_long) == [
        "spec.scheduleStrategy.adaptive.rescheduleCriticalSeconds: rescheduleCriticalSeconds < 0 or "
        f"rescheduleCriticalSeconds > {allowed} is not permitted"]


def test_rule_21_target_filter_selector_must_convert() -> None:
    obj = one_subset()
    obj["spec"]["targetFilter"] = {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}
    assert errors_of(obj) == ["spec.targetFilter.selector.matchExpressions[0].values: for 'in', 'notin' "
                              "operators, values set can't be empty"]


def test_rule_22_one_workload_spread_per_workload() -> None:
    first, second = ws([{"name": "a"}], name="first"), ws([{"name": "a"}], name="second")
    assert [str(e) for e in model.validate_unique_target(second, [first])] == [
        "spec.targetRef: ws.spec.targetRef is in conflict with other WorkloadSpread first"]
    assert model.validate_unique_target(first, [first]) == []


def test_rule_23_target_ref_is_immutable_but_its_version_may_change() -> None:
    old = ws([{"name": "a"}])
    moved = model.parse({**ws_dict([{"name": "a"}]), "spec": {
        "targetRef": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "other"},
        "subsets": [{"name": "a"}]}})
    reversioned = model.parse({**ws_dict([{"name": "a"}]), "spec": {
        "targetRef": {"apiVersion": "apps.kruise.io/v1beta1", "kind": "CloneSet", "name": "app"},
        "subsets": [{"name": "a"}]}})
    assert [str(e) for e in model.validate_update(old, moved)] == [
        "spec.targetRef: change TargetReference is not permitted"]
    assert model.validate_update(old, reversioned) == []


def test_all_errors_are_reported_at_once() -> None:
    obj = ws_dict([{"name": ""}, {"name": "b", "maxReplicas": "x%"}], strategy={"type": "Nope"})
    assert len(errors_of(obj)) == 3
