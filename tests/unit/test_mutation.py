"""A subset applied to a pod, and the JSON patch that produces it."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
from hypothesis import given
from hypothesis import strategies as st

from spreadhook import mutation, spread
from tests.unit.factories import pod, ws

IDC_TERM = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["idc"]}]}
SUBSET = {
    "name": "idc",
    "requiredNodeSelector": IDC_TERM,
    "preferredNodeSelector": [{"weight": 5, "preference": {"matchExpressions": [
        {"key": "zone", "operator": "In", "values": ["a"]}]}}],
    "tolerations": [{"key": "vk", "operator": "Exists", "effect": "NoSchedule"}],
    "patch": {"metadata": {"labels": {"sidecar": "false"}},
              "spec": {"containers": [{"name": "main", "env": [{"name": "MODE", "value": "IDC"}]}]}},
}


def mutated(p: dict[str, Any], subset: dict[str, Any] | None = None) -> dict[str, Any]:
    w = ws([subset or SUBSET, {"name": "rest"}])
    return mutation.inject(p, w, w.subsets[0])


def test_subset_term_becomes_the_only_required_term_when_the_pod_has_none() -> None:
    affinity = mutated(pod())["spec"]["affinity"]["nodeAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [IDC_TERM]}


def test_subset_requirements_are_anded_into_every_existing_term() -> None:
    p = pod()
    p["spec"]["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "os", "operator": "In", "values": ["linux"]}]},
                              {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
    terms = mutated(p)["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert terms[0]["matchExpressions"] == [{"key": "os", "operator": "In", "values": ["linux"]},
                                            IDC_TERM["matchExpressions"][0]]
    assert terms[1]["matchExpressions"] == IDC_TERM["matchExpressions"]
    assert terms[1]["matchFields"] == [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]


def test_preferred_terms_and_tolerations_are_appended() -> None:
    p = pod()
    p["spec"]["tolerations"] = [{"key": "other", "operator": "Exists"}]
    spec = mutated(p)["spec"]
    assert spec["tolerations"] == [{"key": "other", "operator": "Exists"}, SUBSET["tolerations"][0]]
    assert spec["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == \
        SUBSET["preferredNodeSelector"]


def test_patch_is_applied_and_the_matched_annotation_is_written_last() -> None:
    subset = {**SUBSET, "patch": {"metadata": {"annotations": {spread.MATCHED_ANNOTATION: "forged"}}}}
    out = mutated(pod(), subset)
    assert spread.matched(out) == spread.Matched("ws", "idc")


def test_patch_merges_env_into_the_named_container() -> None:
    out = mutated(pod())
    assert out["spec"]["containers"][0]["env"] == [{"name": "MODE", "value": "IDC"}]
    assert out["metadata"]["labels"]["sidecar"] == "false"


def test_priority_is_cleared_when_the_patch_changes_the_priority_class() -> None:
    p = pod()
    p["spec"]["priorityClassName"] = "low"
    p["spec"]["priority"] = 0
    out = mutated(p, {"name": "idc", "patch": {"spec": {"priorityClassName": "high"}}})
    assert out["spec"]["priorityClassName"] == "high" and "priority" not in out["spec"]
    kept = mutated(p, {"name": "idc", "patch": {"metadata": {"labels": {"a": "b"}}}})
    assert kept["spec"]["priority"] == 0


def test_mutating_twice_stacks_nothing() -> None:
    once = mutated(pod())
    assert mutated(once) == once


def test_the_callers_pod_is_never_modified() -> None:
    p = pod()
    before = copy.deepcopy(p)
    mutated(p)
    assert p == before


def test_json_patch_turns_the_pod_into_the_mutated_pod() -> None:
    p = pod()
    p["spec"]["tolerations"] = [{"key": "other", "operator": "Exists"}]
    w = ws([SUBSET, {"name": "rest"}])
    out, patch = mutation.mutate(p, w, w.subsets[0], "uid-1")
    assert jsonpatch.apply_patch(p, patch) == out
    assert {"op": "add", "path": "/spec/tolerations/1", "value": SUBSET["tolerations"][0]} in patch


json_trees = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text("ab/~", max_size=3),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text("ab/~", max_size=3), children,
                                                                      max_size=4),
    max_leaves=15)


@given(json_trees, json_trees)
def test_json_patch_diff_is_exact_for_any_two_documents(a: Any, b: Any) -> None:
    assert jsonpatch.apply_patch({"root": a}, mutation.json_patch({"root": a}, {"root": b})) == {"root": b}


def test_validate_patches_against_template_reports_broken_pods() -> None:
    w = ws([{"name": "a", "patch": {"spec": {"containers": [{"name": "extra"}]}}}, {"name": "b"}])
    template = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "main", "image": "i"}]}}
    errors = [str(e) for e in mutation.validate_patches_against_template(w, template)]
    assert errors == ["spec.subsets[0].patch: spec.containers[0].image: Required value"]
