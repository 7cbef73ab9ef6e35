"""Strategic merge patch of a Pod: every expected value here was printed by the real Go code.

Sources: the worked examples and traps of ``/work/shared/reference/pod-smp.md`` (§4, §3) and, for the rest,
``k8s.io/apimachinery`` v0.37.2 ``strategicpatch.StrategicMergePatch(pod, patch, &corev1.Pod{})`` run on the same
inputs. ``raw`` is the merged map exactly as Go returns it (leftover directives and nulls included);
``apply_pod_patch`` is what a typed consumer then sees.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from spreadhook import strategic
from spreadhook.strategic import PatchError, apply_pod_patch, validate_pod_patch

O_JSON = (
    '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","labels":{"app":"web","tier":"fe"},'
    '"finalizers":["a.io/x","b.io/y"]},"spec":{"containers":[{"name":"app","image":"app:1","env":[{"name":"A",'
    '"value":"1"},{"name":"B","value":"2"}],"ports":[{"containerPort":80,"protocol":"TCP"}]},{"name":"sidecar",'
    '"image":"side:1"}],"tolerations":[{"key":"k1","operator":"Exists","effect":"NoSchedule"}],'
    '"volumes":[{"name":"data","emptyDir":{}}]}}'
)
APP = {
    "name": "app",
    "image": "app:1",
    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
    "ports": [{"containerPort": 80, "protocol": "TCP"}],
}
SIDECAR = {"name": "sidecar", "image": "side:1"}


def pod() -> dict[str, Any]:
    """The pod ``O`` of pod-smp.md §4, fresh for every use."""
    return json.loads(O_JSON)  # type: ignore[no-any-return]


def raw(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The merged map as Go returns it, before any typed decoding."""
    return strategic._Merge().merge_map(original, patch, "Pod")


def with_spec(**changes: Any) -> dict[str, Any]:
    expected = pod()
    expected["spec"].update(changes)
    return expected


def with_metadata(**changes: Any) -> dict[str, Any]:
    expected = pod()
    expected["metadata"].update(changes)
    return expected


def container_names(result: dict[str, Any]) -> list[str]:
    return [c["name"] for c in result["spec"]["containers"]]


def env_of(result: dict[str, Any], container: str = "app") -> list[dict[str, Any]]:
    return next(c for c in result["spec"]["containers"] if c["name"] == container)["env"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------------------
# §4 worked examples


def test_new_container_is_placed_before_existing_ones() -> None:
    result = apply_pod_patch(pod(), {"spec": {"containers": [{"name": "logger", "image": "log:1"}]}})
    assert result == with_spec(containers=[{"name": "logger", "image": "log:1"}, APP, SIDECAR])


def test_new_container_listed_after_an_existing_one_follows_it() -> None:
    patch = {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}, {"name": "logger", "image": "log:1"}]}}
    result = apply_pod_patch(pod(), patch)
    assert result == with_spec(
        containers=[APP, {"name": "sidecar", "image": "side:2"}, {"name": "logger", "image": "log:1"}]
    )


def test_env_merges_by_name_and_new_var_follows_its_patch_predecessor() -> None:
    patch = {
        "spec": {"containers": [{"name": "app", "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}]}]}
    }
    assert env_of(apply_pod_patch(pod(), patch)) == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "20"},
        {"name": "C", "value": "3"},
    ]


def test_env_patch_order_wins_and_server_only_var_keeps_its_slot() -> None:
    patch = {
        "spec": {"containers": [{"name": "app", "env": [{"name": "C", "value": "3"}, {"name": "A", "value": "10"}]}]}
    }
    assert env_of(apply_pod_patch(pod(), patch)) == [
        {"name": "C", "value": "3"},
        {"name": "A", "value": "10"},
        {"name": "B", "value": "2"},
    ]


def test_env_value_from_is_added_next_to_value_unless_value_is_nulled() -> None:
    value_from = {"fieldRef": {"fieldPath": "metadata.name"}}
    both = apply_pod_patch(
        pod(), {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "valueFrom": value_from}]}]}}
    )
    assert env_of(both)[0] == {"name": "A", "value": "1", "valueFrom": value_from}
    switched = {
        "spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": None, "valueFrom": value_from}]}]}
    }
    assert env_of(apply_pod_patch(pod(), switched))[0] == {"name": "A", "valueFrom": value_from}


def test_ports_merge_by_container_port_and_new_port_is_appended_after_its_predecessor() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443, "protocol": "TCP"}],
                }
            ]
        }
    }
    result = apply_pod_patch(pod(), patch)
    assert result["spec"]["containers"][0]["ports"] == [
        {"containerPort": 80, "name": "http", "protocol": "TCP"},
        {"containerPort": 443, "protocol": "TCP"},
    ]


def test_port_with_other_protocol_changes_the_existing_port_instead_of_adding_one() -> None:
    patch = {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80, "protocol": "UDP"}]}]}}
    assert apply_pod_patch(pod(), patch)["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "protocol": "UDP"}]


def test_port_key_of_another_json_type_is_a_new_port() -> None:
    patch = {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80.0}, {"containerPort": "80"}]}]}}
    ports = apply_pod_patch(pod(), patch)["spec"]["containers"][0]["ports"]
    assert [type(p["containerPort"]) for p in ports] == [float, str, int]


def test_tolerations_have_no_merge_key_and_are_replaced_wholesale() -> None:
    new = {"key": "k2", "operator": "Equal", "value": "v", "effect": "NoExecute"}
    assert apply_pod_patch(pod(), {"spec": {"tolerations": [new]}}) == with_spec(tolerations=[new])
    assert apply_pod_patch(pod(), {"spec": {"tolerations": []}}) == with_spec(tolerations=[])


def test_empty_patch_list_on_a_merge_list_changes_nothing() -> None:
    assert apply_pod_patch(pod(), {"spec": {"containers": []}}) == pod()


def test_patch_replace_item_makes_the_list_exactly_the_other_items() -> None:
    patch = {"spec": {"containers": [{"name": "only", "image": "only:1"}, {"$patch": "replace"}]}}
    assert apply_pod_patch(pod(), patch) == with_spec(containers=[{"name": "only", "image": "only:1"}])


def test_patch_replace_item_keeps_the_other_items_raw() -> None:
    patch = {
        "spec": {
            "containers": [
                {"$patch": "replace"},
                {"name": "x", "image": None, "env": [{"name": "E", "$patch": "delete"}]},
            ]
        }
    }
    assert raw(pod(), patch)["spec"]["containers"] == [
        {"name": "x", "image": None, "env": [{"name": "E", "$patch": "delete"}]}
    ]


def test_replace_item_that_has_a_name_is_dropped_itself() -> None:
    patch = {"spec": {"containers": [{"name": "b", "$patch": "replace", "image": "q"}]}}
    assert apply_pod_patch(pod(), patch)["spec"]["containers"] == []


def test_patch_delete_removes_an_env_var_and_the_last_one_leaves_an_empty_list() -> None:
    one = {"spec": {"containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]}}
    assert env_of(apply_pod_patch(pod(), one)) == [{"name": "B", "value": "2"}]
    both = {
        "spec": {
            "containers": [
                {"name": "app", "env": [{"name": "A", "$patch": "delete"}, {"name": "B", "$patch": "delete"}]}
            ]
        }
    }
    assert env_of(apply_pod_patch(pod(), both)) == []


def test_patch_delete_removes_a_container_by_name() -> None:
    patch = {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}
    assert container_names(apply_pod_patch(pod(), patch)) == ["app"]


def test_deletions_run_before_merges_wherever_they_appear_in_the_list() -> None:
    for items in (
        [{"name": "app", "$patch": "delete"}, {"name": "app", "image": "n"}],
        [{"name": "app", "image": "n"}, {"name": "app", "$patch": "delete"}],
    ):
        assert apply_pod_patch(pod(), {"spec": {"containers": items}})["spec"]["containers"] == [
            {"name": "app", "image": "n"},
            SIDECAR,
        ]


def test_delete_from_primitive_list_removes_a_finalizer() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.io/x"]}}
    assert apply_pod_patch(pod(), patch) == with_metadata(finalizers=["b.io/y"])


def test_finalizer_added_alongside_a_deletion_takes_the_deleted_ones_place() -> None:
    patch = {"metadata": {"finalizers": ["c.io/z"], "$deleteFromPrimitiveList/finalizers": ["a.io/x"]}}
    assert apply_pod_patch(pod(), patch)["metadata"]["finalizers"] == ["c.io/z", "b.io/y"]


def test_new_finalizer_is_prepended() -> None:
    patch = {"metadata": {"finalizers": ["c.io/z"]}}
    assert apply_pod_patch(pod(), patch)["metadata"]["finalizers"] == ["c.io/z", "a.io/x", "b.io/y"]


def test_same_finalizer_added_and_deleted_is_deleted_deterministically() -> None:
    """Go is random here (map order); deletions run last, the outcome Go gives most often."""
    patch = {"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["c"]}}
    assert apply_pod_patch(pod(), patch)["metadata"]["finalizers"] == ["a.io/x", "b.io/y"]


def test_set_element_order_reorders_containers() -> None:
    patch = {"spec": {"$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}]}}
    assert apply_pod_patch(pod(), patch) == with_spec(containers=[SIDECAR, APP])


def test_set_element_order_appends_a_new_container_at_the_end() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}, {"name": "logger"}],
            "containers": [{"name": "logger", "image": "log:1"}],
        }
    }
    assert apply_pod_patch(pod(), patch) == with_spec(containers=[APP, SIDECAR, {"name": "logger", "image": "log:1"}])


def test_set_element_order_partial_order_interleaves_unnamed_items() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "logger"}, {"name": "app"}],
            "containers": [{"name": "logger", "image": "log:1"}],
        }
    }
    assert container_names(apply_pod_patch(pod(), patch)) == ["logger", "app", "sidecar"]


def test_set_element_order_against_patch_order_is_an_error() -> None:
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "a"}, {"name": "sidecar", "image": "s"}],
        }
    }
    with pytest.raises(PatchError, match="doesn't match \\$setElementOrder list"):
        apply_pod_patch(pod(), patch)


def test_retain_keys_switches_a_volume_source() -> None:
    host_path = {"path": "/mnt/data", "type": "Directory"}
    patch = {"spec": {"volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": host_path}]}}
    assert apply_pod_patch(pod(), patch) == with_spec(volumes=[{"name": "data", "hostPath": host_path}])


def test_volume_source_without_retain_keys_keeps_both_sources() -> None:
    patch = {"spec": {"volumes": [{"name": "data", "hostPath": {"path": "/mnt"}}]}}
    assert apply_pod_patch(pod(), patch)["spec"]["volumes"] == [
        {"name": "data", "emptyDir": {}, "hostPath": {"path": "/mnt"}}
    ]


def test_retain_keys_must_list_the_merge_key() -> None:
    patch = {"spec": {"volumes": [{"name": "data", "$retainKeys": ["hostPath"], "hostPath": {"path": "/m"}}]}}
    with pytest.raises(PatchError, match="invalid patch format of retainKeys") as caught:
        apply_pod_patch(pod(), patch)
    assert caught.value.path == "spec.volumes[0].$retainKeys"


def test_retain_keys_works_in_any_map_not_only_tagged_lists() -> None:
    patch = {"spec": {"containers": [{"name": "app", "$retainKeys": ["name", "image"], "image": "app:2"}]}}
    assert apply_pod_patch(pod(), patch)["spec"]["containers"][0] == {"name": "app", "image": "app:2"}


def test_null_deletes_a_label_and_a_new_label_is_added() -> None:
    patch = {"metadata": {"labels": {"tier": None, "env": "prod"}}}
    assert apply_pod_patch(pod(), patch) == with_metadata(labels={"app": "web", "env": "prod"})


def test_null_labels_removes_the_key_and_patch_delete_leaves_an_empty_map() -> None:
    gone = apply_pod_patch(pod(), {"metadata": {"labels": None}})
    assert "labels" not in gone["metadata"]
    assert apply_pod_patch(pod(), {"metadata": {"labels": {"$patch": "delete"}}})["metadata"]["labels"] == {}


# --------------------------------------------------------------------------------------------------
# §4 traps and §3 details


def test_patch_replace_map_for_an_absent_key_adds_nothing() -> None:
    patch = {"spec": {"affinity": {"$patch": "replace", "nodeAffinity": {"x": 1}}}}
    assert apply_pod_patch(pod(), patch) == pod()
    added = apply_pod_patch(pod(), {"spec": {"affinity": {"nodeAffinity": {"x": 1}}}})
    assert added["spec"]["affinity"] == {"nodeAffinity": {"x": 1}}


def test_patch_replace_map_on_an_existing_key_replaces_it_raw() -> None:
    original = with_spec(affinity={"podAffinity": {"a": 1}})
    patch = {"spec": {"affinity": {"$patch": "replace", "nodeAffinity": {"b": None}}}}
    assert raw(original, patch)["spec"]["affinity"] == {"nodeAffinity": {"b": None}}
    assert apply_pod_patch(original, patch)["spec"]["affinity"] == {"nodeAffinity": {}}


def test_directive_map_patched_onto_a_list_removes_the_key() -> None:
    patch = {"spec": {"containers": [{"name": "app", "env": {"$patch": "delete"}}]}}
    assert "env" not in apply_pod_patch(pod(), patch)["spec"]["containers"][0]


def test_object_patched_onto_a_list_replaces_it() -> None:
    patch = {"spec": {"tolerations": {"key": "x"}}}
    assert apply_pod_patch(pod(), patch)["spec"]["tolerations"] == {"key": "x"}


def test_whole_document_patch_delete_gives_an_empty_object() -> None:
    assert raw(pod(), {"$patch": "delete"}) == {}


def test_container_resources_merge_key_by_key() -> None:
    original = with_spec(containers=[{**APP, "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}}}])
    patch = {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "1"}}}]}}
    assert apply_pod_patch(original, patch)["spec"]["containers"][0]["resources"] == {
        "limits": {"memory": "1Gi", "cpu": "1"},
        "requests": {"cpu": "1"},
    }


def test_quantities_are_strings_replaced_without_arithmetic() -> None:
    original = with_spec(containers=[{**APP, "resources": {"limits": {"cpu": "1"}}}])
    patch = {"spec": {"containers": [{"name": "app", "resources": {"limits": {"cpu": "1000m"}}}]}}
    assert apply_pod_patch(original, patch)["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "1000m"}


def test_owner_reference_merges_by_uid_and_is_prepended_in_raw_merge() -> None:
    original = with_metadata(ownerReferences=[{"uid": "u1", "name": "rs"}])
    patch = {"metadata": {"ownerReferences": [{"uid": "u2", "name": "other"}]}}
    assert [o["uid"] for o in raw(original, patch)["metadata"]["ownerReferences"]] == ["u2", "u1"]


def test_new_container_is_appended_raw_and_cleaned_only_after_the_merge() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": None,
                    "$setElementOrder/env": [{"name": "X"}],
                    "env": [{"name": "X", "value": None}],
                    "resources": {"$patch": "replace"},
                }
            ]
        }
    }
    assert raw(pod(), patch)["spec"]["containers"][0] == patch["spec"]["containers"][0]
    assert apply_pod_patch(pod(), patch)["spec"]["containers"][0] == {
        "name": "c",
        "env": [{"name": "X"}],
        "resources": {},
    }


def test_new_key_drops_nulls_and_directive_maps_but_keeps_null_list_elements() -> None:
    patch = {
        "spec": {
            "dnsConfig": {
                "nameservers": ["1.1.1.1", None],
                "options": [{"name": "a", "value": None}, {"$patch": "delete"}],
            }
        }
    }
    assert raw(pod(), patch)["spec"]["dnsConfig"] == {"nameservers": ["1.1.1.1", None], "options": [{"name": "a"}]}


def test_replaced_list_keeps_nulls_raw_but_an_added_one_drops_them() -> None:
    existing = raw(pod(), {"spec": {"tolerations": [{"key": "b", "value": None}]}})
    assert existing["spec"]["tolerations"] == [{"key": "b", "value": None}]
    without = pod()
    del without["spec"]["tolerations"]
    added = raw(without, {"spec": {"tolerations": [{"key": "b", "value": None}, {"$patch": "delete"}]}})
    assert added["spec"]["tolerations"] == [{"key": "b"}]


def test_unknown_new_key_is_accepted_and_unknown_dollar_key_is_dropped_after_merge() -> None:
    assert raw(pod(), {"spec": {"foo": {"b": 1}}})["spec"]["foo"] == {"b": 1}
    assert raw(pod(), {"spec": {"$foo": 1}})["spec"]["$foo"] == 1
    assert "$foo" not in apply_pod_patch(pod(), {"spec": {"$foo": 1}})["spec"]


def test_interleave_keeps_server_only_items_in_front_of_their_original_successor() -> None:
    original = with_metadata(finalizers=["a", "b", "c"])
    assert apply_pod_patch(original, {"metadata": {"finalizers": ["c", "a"]}})["metadata"]["finalizers"] == [
        "b",
        "c",
        "a",
    ]
    live = with_spec(containers=[{"name": "B"}, {"name": "C"}, {"name": "A"}])
    patch = {"spec": {"containers": [{"name": "A", "image": "1"}, {"name": "B", "image": "1"}, {"name": "D"}]}}
    assert container_names(apply_pod_patch(live, patch)) == ["C", "A", "B", "D"]


def test_set_element_order_interleaves_by_original_position() -> None:
    live = with_spec(containers=[{"name": n} for n in "CBDAE"])
    patch = {"spec": {"$setElementOrder/containers": [{"name": "A"}, {"name": "B"}]}}
    assert container_names(apply_pod_patch(live, patch)) == list("CDABE")


def test_set_element_order_reads_the_reference_order_after_deletions() -> None:
    live = with_spec(containers=[{"name": "a"}, {"name": "b"}, {"name": "c"}])
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "d"}, {"name": "c"}],
            "containers": [{"name": "b", "$patch": "delete"}, {"name": "d"}],
        }
    }
    assert container_names(apply_pod_patch(live, patch)) == ["a", "d", "c"]


def test_set_element_order_on_a_primitive_list_without_strategy() -> None:
    original = with_spec(containers=[{"name": "app", "command": ["x", "y", "z"]}])
    patch = {"spec": {"containers": [{"name": "app", "$setElementOrder/command": ["z", "x"]}]}}
    assert apply_pod_patch(original, patch)["spec"]["containers"][0]["command"] == ["y", "z", "x"]


def test_set_element_order_on_finalizers_names_new_items() -> None:
    original = with_metadata(finalizers=["a", "b", "c"])
    patch = {"metadata": {"$setElementOrder/finalizers": ["b", "d", "a"], "finalizers": ["d"]}}
    assert apply_pod_patch(original, patch)["metadata"]["finalizers"] == ["b", "d", "a", "c"]


def test_delete_from_primitive_list_works_on_command_and_ignores_absent_lists() -> None:
    original = with_spec(containers=[{"name": "app", "command": ["a", "b", "a"]}])
    patch = {
        "spec": {
            "containers": [
                {"name": "app", "$deleteFromPrimitiveList/command": ["a"], "$deleteFromPrimitiveList/args": ["x"]}
            ]
        }
    }
    assert apply_pod_patch(original, patch)["spec"]["containers"][0] == {"name": "app", "command": ["b"]}


def test_delete_from_primitive_list_null_deletes_the_list() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": None}}
    assert "finalizers" not in apply_pod_patch(pod(), patch)["metadata"]


def test_delete_from_primitive_list_of_another_type_is_ignored() -> None:
    assert apply_pod_patch(pod(), {"metadata": {"$deleteFromPrimitiveList/finalizers": "a.io/x"}}) == pod()


def test_duplicate_finalizers_in_the_original_are_collapsed_even_by_an_empty_patch() -> None:
    original = with_metadata(finalizers=["a", "b", "a"])
    assert apply_pod_patch(original, {"metadata": {"finalizers": []}})["metadata"]["finalizers"] == ["a", "b"]


def test_finalizers_absent_from_the_pod_are_taken_as_sent_duplicates_included() -> None:
    original = pod()
    del original["metadata"]["finalizers"]
    assert apply_pod_patch(original, {"metadata": {"finalizers": ["a", "a"]}})["metadata"]["finalizers"] == ["a", "a"]


def test_second_patch_item_with_the_same_new_key_merges_into_the_first() -> None:
    patch = {"spec": {"containers": [{"name": "n", "image": "1"}, {"name": "n", "args": ["x"]}]}}
    result = apply_pod_patch(pod(), patch)
    assert result["spec"]["containers"][0] == {"name": "n", "image": "1", "args": ["x"]}


def test_init_and_ephemeral_containers_merge_by_name() -> None:
    original = with_spec(
        initContainers=[{"name": "init", "image": "i:1"}], ephemeralContainers=[{"name": "debug", "image": "d:1"}]
    )
    patch = {
        "spec": {
            "initContainers": [{"name": "init", "image": "i:2"}],
            "ephemeralContainers": [{"name": "debug", "env": [{"name": "X", "value": "1"}]}],
        }
    }
    result = apply_pod_patch(original, patch)
    assert result["spec"]["initContainers"] == [{"name": "init", "image": "i:2"}]
    assert result["spec"]["ephemeralContainers"] == [
        {"name": "debug", "image": "d:1", "env": [{"name": "X", "value": "1"}]}
    ]


def test_volumes_merge_by_name_and_volume_mounts_by_mount_path() -> None:
    original = with_spec(containers=[{**APP, "volumeMounts": [{"name": "data", "mountPath": "/data"}]}])
    patch = {
        "spec": {
            "volumes": [{"name": "cfg", "configMap": {"name": "cm"}}],
            "containers": [
                {
                    "name": "app",
                    "volumeMounts": [
                        {"mountPath": "/data", "readOnly": True},
                        {"name": "cfg", "mountPath": "/etc/cfg"},
                    ],
                }
            ],
        }
    }
    result = apply_pod_patch(original, patch)
    assert result["spec"]["volumes"] == [{"name": "cfg", "configMap": {"name": "cm"}}, {"name": "data", "emptyDir": {}}]
    assert result["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data", "readOnly": True},
        {"name": "cfg", "mountPath": "/etc/cfg"},
    ]


def test_image_pull_secrets_merge_by_name() -> None:
    original = with_spec(imagePullSecrets=[{"name": "a"}])
    patch = {"spec": {"imagePullSecrets": [{"name": "b"}, {"name": "a"}]}}
    assert apply_pod_patch(original, patch)["spec"]["imagePullSecrets"] == [{"name": "b"}, {"name": "a"}]


def test_args_and_command_are_replaced_not_merged() -> None:
    original = with_spec(containers=[{**APP, "args": ["--a"], "command": ["run"]}])
    patch = {"spec": {"containers": [{"name": "app", "args": ["--b"], "command": []}]}}
    result = apply_pod_patch(original, patch)["spec"]["containers"][0]
    assert (result["args"], result["command"]) == (["--b"], [])


def test_affinity_merges_as_a_struct_but_its_term_lists_are_replaced() -> None:
    term = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
    original = with_spec(
        affinity={
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}},
            "podAntiAffinity": {"x": 1},
        }
    )
    new_term = {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}
    patch = {
        "spec": {
            "affinity": {
                "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [new_term]}}
            }
        }
    }
    assert apply_pod_patch(original, patch)["spec"]["affinity"] == {
        "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [new_term]}},
        "podAntiAffinity": {"x": 1},
    }


def test_annotations_merge_key_by_key() -> None:
    original = with_metadata(annotations={"a": "1", "b": "2"})
    patch = {"metadata": {"annotations": {"b": None, "c": "3"}}}
    assert apply_pod_patch(original, patch)["metadata"]["annotations"] == {"a": "1", "c": "3"}


def test_topology_constraints_with_the_same_key_merge_into_one() -> None:
    original = with_spec(topologySpreadConstraints=[{"topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}])
    patch = {"spec": {"topologySpreadConstraints": [{"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}}
    assert apply_pod_patch(original, patch)["spec"]["topologySpreadConstraints"] == [
        {"topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ]


def test_pod_nulls_are_kept_and_patch_nulls_are_not() -> None:
    original = with_metadata(creationTimestamp=None)
    result = apply_pod_patch(original, {"metadata": {"labels": {"x": "1"}}, "spec": {"nodeSelector": {"z": None}}})
    assert result["metadata"]["creationTimestamp"] is None
    assert result["spec"]["nodeSelector"] == {}


def test_case_insensitive_field_lookup_like_go() -> None:
    original = with_spec(securityContext={"runAsUser": 1})
    assert raw(original, {"spec": {"securityContext": {"RunAsUser": 2}}})["spec"]["securityContext"] == {
        "runAsUser": 1,
        "RunAsUser": 2,
    }
    patch = {"spec": {"Containers": [{"name": "x"}]}}  # a new key: never looked up, just added
    assert raw(pod(), patch)["spec"]["Containers"] == [{"name": "x"}]


def test_inputs_are_never_mutated_and_untouched_subtrees_are_shared() -> None:
    original, patch = (
        pod(),
        {
            "spec": {"containers": [{"name": "app", "env": [{"name": "Z", "value": None}]}]},
            "metadata": {"labels": {"tier": None}},
        },
    )
    before_pod, before_patch = copy.deepcopy(original), copy.deepcopy(patch)
    result = apply_pod_patch(original, patch)
    assert (original, patch) == (before_pod, before_patch)
    assert result["spec"]["tolerations"] is original["spec"]["tolerations"]
    assert result["spec"]["containers"][0]["env"][-1] is not patch["spec"]["containers"][0]["env"][0]


def test_go_stable_sort_matches_go_when_the_comparator_is_inconsistent() -> None:
    """Items missing from the order make Go's comparator answer "less" both ways; the result then depends
    on Go's insertion sort + SymMerge, reproduced here (values printed by Go's sort.SliceStable)."""
    positions = [3, -1, 0, -1, 2, 1] * 5

    def less(i: int, j: int) -> bool:
        return positions[i] < positions[j] if positions[i] >= 0 and positions[j] >= 0 else True

    out = strategic._go_stable_sort(list(range(30)), less)
    assert sorted(out) == list(range(30))
    assert strategic._go_stable_sort([0, 1, 2], lambda i, j: [1, 0, 2][i] < [1, 0, 2][j]) == [1, 0, 2]


def test_go_formatting_of_values_in_messages() -> None:
    assert strategic._gov({"b": [1, 2.5, None], "a": True}) == "map[a:true b:[1 2.5 <nil>]]"
    assert [strategic._gofloat(v) for v in (80.0, 1e6, 1234567.0, 0.0001, 1e-5, -2.5)] == [
        "80",
        "1e+06",
        "1.234567e+06",
        "0.0001",
        "1e-05",
        "-2.5",
    ]


# --------------------------------------------------------------------------------------------------
# Errors the API server returns (§3.9)


@pytest.mark.parametrize(
    ("patch", "message", "path"),
    [
        (
            {"spec": {"containers": [{"image": "x"}]}},
            "map: map[image:x] does not contain declared merge key: name",
            "spec.containers[0]",
        ),
        (
            {"spec": {"containers": [{"$patch": "merge"}]}},
            "merging lists cannot yet be specified in the patch",
            "spec.containers[0]",
        ),
        (
            {"spec": {"containers": [{"$patch": "bogus", "name": "a"}]}},
            "unknown patch type: bogus in map: map[$patch:bogus name:a]",
            "spec.containers[0]",
        ),
        (
            {"spec": {"containers": [{"$patch": "delete"}]}},
            "does not contain declared merge key: name",
            "spec.containers[0]",
        ),
        (
            {"spec": {"affinity": {"$patch": "merge"}}, "metadata": {"labels": {"$patch": "merge"}}},
            "unknown patch type: merge in map",
            None,
        ),
        ({"metadata": {"$deleteFromPrimitiveList": ["a"]}}, "invalid patch format of primitive list", None),
        ({"metadata": {"$setElementOrderfinalizers": ["a"]}}, "invalid patch format of setElementOrder list", None),
        (
            {"metadata": {"$setElementOrder/finalizers": None}},
            "expected a []interface {}, but received a %!s(<nil>)",
            "metadata.$setElementOrder/finalizers",
        ),
        ({"spec": {"$retainKeys": "containers"}}, "invalid patch format of retainKeys", "spec.$retainKeys"),
        (
            {"spec": {"$setElementOrder/foo": []}},
            'unable to find api field in struct PodSpec for the json field "foo"',
            None,
        ),
        ({"spec": {"$setElementOrder/tolerations": [{"key": "k1"}]}}, "hash of unhashable type", None),
        ({"spec": {"containers": [{"name": "app"}, "x"]}}, "list element types are not identical", "spec.containers"),
        ({"metadata": {"finalizers": [{"a": 1}]}}, "list element types are not identical", None),
        ({"spec": {"restartPolicy": "Never", "nodeSelector": {"zone": {"a": 1}}}}, None, None),
        ({"$patch": "merge"}, "unknown patch type: merge in map: map[$patch:merge]", ""),
    ],
)
def test_patches_the_api_server_refuses(patch: dict[str, Any], message: str | None, path: str | None) -> None:
    if message is None:  # a nested object where the field is a plain string map: replaced, not merged
        assert apply_pod_patch(pod(), patch)["spec"]["nodeSelector"] == {"zone": {"a": 1}}
        return
    with pytest.raises(PatchError) as caught:
        apply_pod_patch(pod(), patch)
    assert message in caught.value.message
    if path is not None:
        assert caught.value.path == path
        assert str(caught.value) == (f"{path}: {caught.value.message}" if path else caught.value.message)


@pytest.mark.parametrize(
    ("items", "message"),
    [([["a"]], "lists of lists are not supported"), ([None, {"name": "a"}], "nil pointer dereference")],
)
def test_first_element_of_a_merged_list_must_be_a_scalar_or_map(items: list[Any], message: str) -> None:
    with pytest.raises(PatchError, match=message) as caught:
        apply_pod_patch(with_spec(containers=[]), {"spec": {"containers": items}})
    assert caught.value.path == "spec.containers"


def test_object_inside_a_label_value_object_is_refused() -> None:
    original = with_metadata(labels={"a": {"b": "c"}})
    with pytest.raises(PatchError, match="data type is not struct, instead is: map"):
        apply_pod_patch(original, {"metadata": {"labels": {"a": {"b": "d"}}}})


def test_list_patched_onto_a_non_list_struct_field_is_refused() -> None:
    original = with_spec(containers=[{"name": "app", "resources": []}])
    with pytest.raises(PatchError, match="expected slice or array type, but got: struct"):
        apply_pod_patch(original, {"spec": {"containers": [{"name": "app", "resources": [1]}]}})


def test_set_element_order_on_an_empty_list_is_refused() -> None:
    with pytest.raises(PatchError, match="no elements in any of the given slices"):
        apply_pod_patch(with_metadata(finalizers=[]), {"metadata": {"$setElementOrder/finalizers": ["a"]}})


def test_original_item_without_merge_key_fails_only_when_its_list_is_merged() -> None:
    original = with_spec(containers=[{"image": "nameless"}])
    assert apply_pod_patch(original, {"metadata": {"labels": {"x": "1"}}})["spec"]["containers"] == [
        {"image": "nameless"}
    ]
    with pytest.raises(PatchError, match="map: map\\[image:nameless\\] does not contain declared merge key: name"):
        apply_pod_patch(original, {"spec": {"containers": [{"name": "a"}]}})


def test_objects_as_merge_key_values_raise_instead_of_panicking() -> None:
    original = with_spec(containers=[{"name": {"x": 1}}])
    with pytest.raises(PatchError, match="comparing uncomparable type"):
        apply_pod_patch(original, {"spec": {"containers": [{"name": {"x": 1}}]}})


def test_non_object_documents_are_refused() -> None:
    with pytest.raises(PatchError, match="invalid JSON document"):
        apply_pod_patch(pod(), ["not", "a", "map"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# spreadhook's identity rule


@pytest.mark.parametrize(
    "patch",
    [
        {"metadata": {"name": "other"}},
        {"metadata": {"namespace": "other"}},
        {"metadata": {"ownerReferences": [{"uid": "u9", "name": "x"}]}},
        {"metadata": None},
        {"metadata": {"$patch": "replace", "labels": {}}},
        {"metadata": {"$retainKeys": ["labels"], "labels": {}}},
        {"$patch": "replace", "metadata": {"name": "web"}, "spec": {}},
        {"metadata": {"Name": "other"}},
    ],
)
def test_patches_that_change_the_pod_identity_are_refused(patch: dict[str, Any]) -> None:
    original = with_metadata(namespace="ns", ownerReferences=[{"uid": "u1", "name": "rs"}])
    with pytest.raises(PatchError, match="metadata"):
        apply_pod_patch(original, patch)
    assert validate_pod_patch(patch)


def test_patch_restating_the_same_name_applies_but_is_refused_statically() -> None:
    patch = {"metadata": {"name": "web"}}
    assert apply_pod_patch(pod(), patch) == pod()
    assert validate_pod_patch(patch) == ["metadata.name: spreadhook refuses patches that change metadata.name"]


# --------------------------------------------------------------------------------------------------
# validate_pod_patch


def test_valid_subset_patch_has_no_errors() -> None:
    patch = {
        "metadata": {
            "labels": {"zone": "a", "old": None},
            "annotations": {"x": "y"},
            "$deleteFromPrimitiveList/finalizers": ["f"],
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [{"name": "Z", "value": "1"}, {"name": "Y", "$patch": "delete"}],
                    "resources": {"limits": {"cpu": "2"}},
                }
            ],
            "$setElementOrder/containers": [{"name": "app"}],
            "volumes": [{"name": "v", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/x"}}],
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "priorityClassName": "high",
        },
    }
    assert validate_pod_patch(patch) == []


def test_non_object_patch_is_reported() -> None:
    assert validate_pod_patch(["x"]) == ["patch: must be a JSON object (a strategic merge patch of a Pod), not a list"]
    assert validate_pod_patch(None) == ["patch: must be a JSON object (a strategic merge patch of a Pod), not null"]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"spec": {"affinity": {"$patch": "merge"}}}, 'spec.affinity.$patch: must be "replace" or "delete"'),
        ({"spec": {"containers": [{"name": "a", "$patch": "merge"}]}}, 'spec.containers[0].$patch: must be "delete"'),
        ({"spec": {"containers": [{"image": "x"}]}}, 'spec.containers[0]: missing merge key "name"'),
        ({"spec": {"containers": [{"$patch": "delete"}]}}, 'spec.containers[0]: missing merge key "name"'),
        ({"spec": {"containers": ["app"]}}, 'spec.containers[0]: must be an object with "name"'),
        ({"spec": {"tolerations": [{"$patch": "delete", "key": "k"}]}}, "spec.tolerations[0].$patch: has no effect"),
        ({"spec": {"$setElementOrder/tolerations": [{"key": "k"}]}}, "has no merge key, so its order cannot be set"),
        ({"spec": {"$setElementOrder/containers": [{"image": "x"}]}}, "does not contain declared merge key: name"),
        (
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "a"}, {"name": "b"}],
                }
            },
            "doesn't match $setElementOrder list",
        ),
        ({"spec": {"$setElementOrder/nodeName": []}}, "'nodeName' is not a list field here"),
        ({"spec": {"$setElementOrder": []}}, "must be written $setElementOrder/<list field>"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, "must be a list, not a string"),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}}, "must list plain values"),
        ({"spec": {"volumes": [{"name": "v", "$retainKeys": ["hostPath"], "hostPath": {}}]}}, "missing name"),
        ({"spec": {"$retainKeys": "x"}}, "spec.$retainKeys: must be a list of field names"),
        ({"spec": {"$patchh": "delete"}}, "spec.$patchh: unknown directive"),
        ({"$patch": "delete"}, "$patch: not allowed at the top level"),
    ],
)
def test_malformed_directives_are_reported_with_their_path(patch: dict[str, Any], expected: str) -> None:
    errors = validate_pod_patch(patch)
    assert any(expected in error for error in errors), errors


def test_all_problems_are_reported_at_once() -> None:
    patch = {"metadata": {"name": "x", "namespace": "y"}, "spec": {"containers": [{"image": "i"}]}}
    assert len(validate_pod_patch(patch)) == 3
