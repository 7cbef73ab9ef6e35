"""deploy/: every manifest parses, and the properties users and the other modules rely on are pinned.

Offline only: PyYAML for every file, `kubectl kustomize` for the overlays when kubectl is on PATH, and the
webhook matchConditions evaluated with cel-python when it is installed. Validation against a real API server
(schemas, CEL type-checking by kube-apiserver) is the e2e suite's job.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import build

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NS = "spreadhook-system"
SVC = "spreadhook-webhook"
_BUILT_KUBECTL = build.bin_dir() / "kubectl"
KUBECTL = str(_BUILT_KUBECTL) if os.access(_BUILT_KUBECTL, os.X_OK) else shutil.which("kubectl")
"""The kubectl built with the control plane (scripts/test builds it first), else one on PATH."""

Obj = dict[str, Any]


def _yaml_files() -> list[Path]:
    """Every YAML file once (deploy/<name>.yaml are symlinks into deploy/base/)."""
    seen: dict[Path, Path] = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        seen.setdefault(path.resolve(), path)
    return list(seen.values())


def _docs(path: Path) -> list[Obj]:
    with path.open(encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def _all_docs() -> Iterator[tuple[Path, Obj]]:
    for path in _yaml_files():
        for doc in _docs(path):
            yield path, doc


def _one(path: str, kind: str, name: str | None = None) -> Obj:
    found = [d for d in _docs(DEPLOY / path) if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{path}: expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _webhooks() -> dict[str, Obj]:
    hooks: dict[str, Obj] = {}
    for doc in _docs(DEPLOY / "webhooks.yaml"):
        for hook in doc["webhooks"]:
            hooks[hook["name"]] = {**hook, "_kind": doc["kind"], "_config": doc["metadata"]["name"]}
    return hooks


# ---------------------------------------------------------------------------------------------------------
# Every file


def test_contract_paths_exist() -> None:
    for name in ("namespace", "crd", "rbac", "deployment", "service", "pdb", "webhooks", "flowcontrol",
                 "kustomization"):
        assert (DEPLOY / f"{name}.yaml").is_file(), name
    assert (DEPLOY / "strict" / "kustomization.yaml").is_file()
    assert (DEPLOY / "testing" / "cloneset-crd.yaml").is_file()


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses_into_kubernetes_objects(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), path
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), path


def test_no_duplicate_objects_in_the_base() -> None:
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
            for path, d in _all_docs() if path.resolve().parent == (DEPLOY / "base").resolve()
            and d["kind"] != "Kustomization"]
    assert len(keys) == len(set(keys))


def test_namespaced_objects_live_in_spreadhook_system() -> None:
    for path, doc in _all_docs():
        if path.resolve().parent != (DEPLOY / "base").resolve():
            continue
        if doc["kind"] in {"ServiceAccount", "Role", "RoleBinding", "Service", "Deployment",
                           "PodDisruptionBudget"}:
            assert doc["metadata"]["namespace"] == NS, (path, doc["kind"])


# ---------------------------------------------------------------------------------------------------------
# Webhooks


def test_webhook_names_paths_and_rules() -> None:
    hooks = _webhooks()
    assert set(hooks) == {"mpod.spreadhook.io", "vpod.spreadhook.io", "vworkloadspread.spreadhook.io"}
    mpod, vpod, vws = hooks["mpod.spreadhook.io"], hooks["vpod.spreadhook.io"], hooks["vworkloadspread.spreadhook.io"]
    assert (mpod["_kind"], mpod["_config"]) == ("MutatingWebhookConfiguration", "spreadhook")
    assert (vpod["_kind"], vpod["_config"]) == ("ValidatingWebhookConfiguration", "spreadhook")
    assert vws["_kind"] == "ValidatingWebhookConfiguration"
    for hook, path in ((mpod, "/mutate-pods"), (vpod, "/mutate-pods"), (vws, "/validate-workloadspreads")):
        svc = hook["clientConfig"]["service"]
        assert (svc["namespace"], svc["name"], svc["path"], svc.get("port", 443)) == (NS, SVC, path, 443)
        assert "caBundle" not in hook["clientConfig"]  # injected at run time
    rules = lambda h: {(tuple(r["operations"]), tuple(r["resources"])) for r in h["rules"]}  # noqa: E731
    assert rules(mpod) == {(("CREATE",), ("pods",))}
    assert rules(vpod) == {(("DELETE",), ("pods",)), (("CREATE",), ("pods/eviction",))}
    assert rules(vws) == {(("CREATE", "UPDATE"), ("workloadspreads",))}
    assert vws["rules"][0]["apiGroups"] == ["apps.kruise.io"]
    assert sorted(vws["rules"][0]["apiVersions"]) == ["v1alpha1", "v1beta1"]


def test_webhook_policies() -> None:
    hooks = _webhooks()
    for hook in hooks.values():
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert 1 <= hook["timeoutSeconds"] <= 30
        expr = hook["namespaceSelector"]["matchExpressions"]
        assert {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", NS]} in expr
    # Fail open by default on the pod path (upstream's most-reported outage), side effects only off dry-run.
    for name in ("mpod.spreadhook.io", "vpod.spreadhook.io"):
        assert hooks[name]["failurePolicy"] == "Ignore"
        assert hooks[name]["sideEffects"] == "NoneOnDryRun"
    assert hooks["mpod.spreadhook.io"]["reinvocationPolicy"] == "Never"
    assert hooks["mpod.spreadhook.io"]["timeoutSeconds"] <= 10
    assert hooks["vworkloadspread.spreadhook.io"]["sideEffects"] == "None"
    assert hooks["vworkloadspread.spreadhook.io"]["failurePolicy"] == "Fail"


def test_webhook_choices_are_explained_in_comments() -> None:
    text = (DEPLOY / "webhooks.yaml").read_text()
    for word in ("timeoutSeconds", "failurePolicy", "reinvocationPolicy", "sideEffects", "matchConditions",
                 "deploy/strict"):
        assert re.search(rf"#.*{re.escape(word)}", text), word


def test_match_conditions_shape() -> None:
    for hook in _webhooks().values():
        conds = hook.get("matchConditions", [])
        assert len(conds) <= 64
        assert len({c["name"] for c in conds}) == len(conds)
    hooks = _webhooks()
    assert {c["name"] for c in hooks["mpod.spreadhook.io"]["matchConditions"]} == {
        "controller-owned", "not-mirror-pod"}
    for cond in hooks["vpod.spreadhook.io"]["matchConditions"]:
        # an Eviction is not a Pod: every DELETE-side condition must let evictions through first
        assert cond["expression"].startswith("request.subResource == 'eviction' ||"), cond["name"]
        assert "object.metadata" not in cond["expression"].replace("oldObject.metadata", "")


# Requests as kube-apiserver builds them for matchConditions: `object` and `oldObject` per operation.
def _pod(owner: bool = True, mirror: bool = False, matched: bool = True) -> Obj:
    meta: Obj = {"name": "p", "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "1"},
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "2", "controller": True},
        ]
    annotations = {}
    if mirror:
        annotations["kubernetes.io/config.mirror"] = "abc"
    if matched:
        annotations["apps.kruise.io/matched-workloadspread"] = '{"name":"ws","subset":"a"}'
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": {"containers": []}}


def _request(operation: str, sub: str = "", obj: Obj | None = None, old: Obj | None = None) -> Obj:
    return {"request": {"operation": operation, "subResource": sub, "namespace": "default"},
            "object": obj, "oldObject": old}


CEL_CASES = [
    # (webhook, request, expected call)
    ("mpod.spreadhook.io", _request("CREATE", obj=_pod()), True),
    ("mpod.spreadhook.io", _request("CREATE", obj=_pod(matched=False)), True),
    ("mpod.spreadhook.io", _request("CREATE", obj=_pod(owner=False)), False),
    ("mpod.spreadhook.io", _request("CREATE", obj=_pod(mirror=True)), False),
    ("mpod.spreadhook.io", _request("CREATE", obj={"metadata": {"generateName": "rs-"}}), False),
    ("vpod.spreadhook.io", _request("DELETE", old=_pod()), True),
    ("vpod.spreadhook.io", _request("DELETE", old=_pod(owner=False)), False),
    ("vpod.spreadhook.io", _request("DELETE", old=_pod(mirror=True)), False),
    ("vpod.spreadhook.io", _request("DELETE", old=_pod(matched=False)), False),
    ("vpod.spreadhook.io", _request("DELETE", old={"metadata": {"name": "bare"}}), False),
    ("vpod.spreadhook.io", _request("CREATE", sub="eviction", obj={
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p", "namespace": "default"}}), True),
]


@pytest.mark.parametrize(("hook_name", "activation", "expected"), CEL_CASES)
def test_match_conditions_evaluate(hook_name: str, activation: Obj, expected: bool) -> None:
    """Evaluated with cel-python (a stand-in for kube-apiserver's cel-go): no expression may error, and
    all must be true exactly for the requests that need the webhook."""
    celpy = pytest.importorskip("celpy")
    env = celpy.Environment()
    results = []
    for cond in _webhooks()[hook_name]["matchConditions"]:
        program = env.program(env.compile(cond["expression"]))
        act = {k: celpy.json_to_cel(v) for k, v in activation.items()}
        value = program.evaluate(act)
        assert isinstance(value, celpy.celtypes.BoolType), (cond["name"], value)
        results.append(bool(value))
    assert all(results) is expected


# ---------------------------------------------------------------------------------------------------------
# Kustomize: default fail-open, strict fail-closed


def _kustomize(path: Path) -> list[Obj]:
    assert KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", str(path)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _policies(docs: list[Obj]) -> dict[str, str]:
    return {h["name"]: h["failurePolicy"] for d in docs if d["kind"].endswith("WebhookConfiguration")
            for h in d["webhooks"]}


def test_kustomization_lists_every_base_manifest() -> None:
    base = _docs(DEPLOY / "base" / "kustomization.yaml")[0]
    files = {p.name for p in (DEPLOY / "base").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(base["resources"]) == files
    for name in files:  # deploy/<name>.yaml point at the same files
        assert (DEPLOY / name).resolve() == (DEPLOY / "base" / name).resolve()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
def test_default_build_fails_open() -> None:
    docs = _kustomize(DEPLOY)
    assert {d["kind"] for d in docs} >= {"Namespace", "CustomResourceDefinition", "Deployment", "Service",
                                         "PodDisruptionBudget", "MutatingWebhookConfiguration"}
    assert _policies(docs) == {"mpod.spreadhook.io": "Ignore", "vpod.spreadhook.io": "Ignore",
                               "vworkloadspread.spreadhook.io": "Fail"}
    assert not any(d["kind"] in {"CloneSet", "WorkloadSpread"} for d in docs)  # no examples, no test CRDs


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not on PATH")
def test_strict_build_fails_pod_creation_closed_and_changes_nothing_else() -> None:
    default, strict = _kustomize(DEPLOY), _kustomize(DEPLOY / "strict")
    # Deletes and evictions stay open even in strict mode: a release is bookkeeping the reconciler redoes,
    # and blocking evictions would stop node drains whenever spreadhook is down.
    assert _policies(strict) == {"mpod.spreadhook.io": "Fail", "vpod.spreadhook.io": "Ignore",
                                 "vworkloadspread.spreadhook.io": "Fail"}
    for doc in strict:
        for hook in doc.get("webhooks", []):
            hook["failurePolicy"] = _policies(default)[hook["name"]]
    assert strict == default


# ---------------------------------------------------------------------------------------------------------
# CRD


def test_crd_versions_and_conversion() -> None:
    crd = _one("crd.yaml", "CustomResourceDefinition", "workloadspreads.apps.kruise.io")
    spec = crd["spec"]
    assert spec["group"] == "apps.kruise.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "WorkloadSpread" and spec["names"]["shortNames"] == ["ws"]
    versions = {v["name"]: v for v in spec["versions"]}
    assert set(versions) == {"v1alpha1", "v1beta1"}
    assert [v["name"] for v in spec["versions"] if v["storage"]] == ["v1beta1"]
    assert all(v["served"] for v in versions.values())
    assert all(v["subresources"] == {"status": {}} for v in versions.values())
    conv = spec["conversion"]
    assert conv["strategy"] == "Webhook"
    assert conv["webhook"]["conversionReviewVersions"] == ["v1"]
    assert conv["webhook"]["clientConfig"]["service"] == {
        "namespace": NS, "name": SVC, "path": "/convert-workloadspreads", "port": 444}  # its own listener


def _schema(version: str) -> Obj:
    crd = _one("crd.yaml", "CustomResourceDefinition")
    v = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    schema: Obj = v["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize(("version", "required", "preferred"), [
    ("v1alpha1", "requiredNodeSelectorTerm", "preferredNodeSelectorTerms"),
    ("v1beta1", "requiredNodeSelector", "preferredNodeSelector"),
])
def test_crd_subset_schema(version: str, required: str, preferred: str) -> None:
    spec = _schema(version)["properties"]["spec"]
    assert sorted(spec["required"]) == ["subsets", "targetRef"]
    assert sorted(spec["properties"]["targetRef"]["required"]) == ["apiVersion", "kind", "name"]
    assert set(spec["properties"]) == {"targetRef", "targetFilter", "subsets", "scheduleStrategy"}
    subset = spec["properties"]["subsets"]["items"]
    assert set(subset["properties"]) == {"name", required, preferred, "tolerations", "maxReplicas", "patch"}
    assert subset["required"] == ["name"]
    assert subset["properties"]["patch"]["x-kubernetes-preserve-unknown-fields"] is True
    assert subset["properties"]["maxReplicas"]["x-kubernetes-int-or-string"] is True
    assert spec["properties"]["scheduleStrategy"]["properties"]["type"]["enum"] == ["Adaptive", "Fixed", ""]
    adaptive = spec["properties"]["scheduleStrategy"]["properties"]["adaptive"]["properties"]
    assert set(adaptive) == {"disableSimulationSchedule", "rescheduleCriticalSeconds"}


def test_crd_status_conditions_per_version() -> None:
    def cond(version: str) -> Obj:
        status = _schema(version)["properties"]["status"]["properties"]
        assert set(status) == {"observedGeneration", "subsetStatuses", "versionedSubsetStatuses"}
        item = status["subsetStatuses"]["items"]
        assert sorted(item["required"]) == ["missingReplicas", "name", "replicas"]
        assert set(item["properties"]) == {"name", "replicas", "missingReplicas", "creatingPods", "deletingPods",
                                           "conditions"}
        assert status["versionedSubsetStatuses"]["additionalProperties"]["items"] == item
        c: Obj = item["properties"]["conditions"]
        return c

    alpha, beta = cond("v1alpha1"), cond("v1beta1")
    assert sorted(alpha["items"]["required"]) == ["status", "type"]
    # metav1.Condition, a list map keyed by type
    assert sorted(beta["items"]["required"]) == ["lastTransitionTime", "message", "reason", "status", "type"]
    assert beta["x-kubernetes-list-type"] == "map" and beta["x-kubernetes-list-map-keys"] == ["type"]


def _structural(node: Any, path: str = "") -> Iterator[str]:
    """Yield paths violating the structural-schema rules kube-apiserver enforces (a type everywhere, unless
    int-or-string or preserve-unknown-fields)."""
    if not isinstance(node, dict):
        return
    if "type" not in node and not node.get("x-kubernetes-int-or-string") \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        yield path or "/"
    for key, child in (node.get("properties") or {}).items():
        yield from _structural(child, f"{path}/{key}")
    if isinstance(node.get("items"), dict):
        yield from _structural(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _structural(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("version", ["v1alpha1", "v1beta1"])
def test_crd_schema_is_structural(version: str) -> None:
    assert list(_structural(_schema(version))) == []


def test_crd_printer_columns() -> None:
    crd = _one("crd.yaml", "CustomResourceDefinition")
    for v in crd["spec"]["versions"]:
        cols = {c["name"]: c for c in v["additionalPrinterColumns"]}
        assert cols["WorkloadName"]["jsonPath"] == ".spec.targetRef.name"
        assert cols["WorkloadKind"]["jsonPath"] == ".spec.targetRef.kind"
        assert cols["Adaptive"]["type"] == "boolean"
        assert cols["Age"]["type"] == "date"
        assert cols["Replicas0"]["jsonPath"] == ".status.subsetStatuses[0].replicas"
        assert cols["Missing0"]["jsonPath"] == ".status.subsetStatuses[0].missingReplicas"
        assert list(cols)[-1] == "Age"


def test_cloneset_test_crd() -> None:
    crd = _one("testing/cloneset-crd.yaml", "CustomResourceDefinition", "clonesets.apps.kruise.io")
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    tmpl = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["template"]
    assert tmpl["x-kubernetes-preserve-unknown-fields"] is True
    assert list(_structural(version["schema"]["openAPIV3Schema"])) == []


# ---------------------------------------------------------------------------------------------------------
# RBAC, Deployment, Service, PDB


def _rules(kind: str) -> list[Obj]:
    rules: list[Obj] = _one("rbac.yaml", kind)["rules"]
    return rules


def _allowed(rules: list[Obj], group: str, resource: str) -> set[str]:
    return {verb for r in rules if group in r["apiGroups"] and resource in r["resources"] for verb in r["verbs"]}


def test_rbac_least_privilege() -> None:
    cluster = _rules("ClusterRole")
    for rule in cluster + _rules("Role"):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
    assert _allowed(cluster, "", "pods") == {"get", "list", "watch", "patch", "delete"}
    assert _allowed(cluster, "", "pods/eviction") == set()
    assert _allowed(cluster, "apps.kruise.io", "workloadspreads") == {"get", "list", "watch"}
    assert _allowed(cluster, "apps.kruise.io", "workloadspreads/status") == {"get", "update", "patch"}
    for group, res in (("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
                       ("batch", "jobs"), ("apps.kruise.io", "clonesets"), ("apps.kruise.io", "statefulsets")):
        assert _allowed(cluster, group, res) == {"get", "list", "watch"}, res
    assert _allowed(cluster, "", "events") == {"create", "patch"}
    assert _allowed(cluster, "events.k8s.io", "events") == {"create", "patch"}
    assert _allowed(cluster, "", "secrets") == set()  # secrets only through the namespaced Role
    for rule in cluster:
        if rule["apiGroups"] in (["admissionregistration.k8s.io"], ["apiextensions.k8s.io"]):
            assert set(rule["verbs"]) == {"get", "patch"}
            assert rule["resourceNames"] in (["spreadhook"], ["workloadspreads.apps.kruise.io"])
    role = _one("rbac.yaml", "Role")
    assert role["metadata"]["namespace"] == NS
    assert _allowed(role["rules"], "coordination.k8s.io", "leases") == {"get", "create", "update"}
    assert _allowed(role["rules"], "", "configmaps") == {"get", "list", "watch"}
    secret_rules = [r for r in role["rules"] if "secrets" in r["resources"]]
    for rule in secret_rules:
        if rule["verbs"] != ["create"]:
            assert rule["resourceNames"] == ["spreadhook-webhook-tls"]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        subject = _one("rbac.yaml", kind)["subjects"][0]
        assert subject == {"kind": "ServiceAccount", "name": SVC, "namespace": NS}


def test_flow_schema_puts_the_deployments_service_account_in_a_priority_level_that_lends_no_seats() -> None:
    """deploy/flowcontrol.yaml explains why; the live classification is tested in tests/integration."""
    level = _one("flowcontrol.yaml", "PriorityLevelConfiguration")
    schema = _one("flowcontrol.yaml", "FlowSchema")
    pod_spec = _one("deployment.yaml", "Deployment")["spec"]["template"]["spec"]
    assert schema["spec"]["priorityLevelConfiguration"]["name"] == level["metadata"]["name"]
    assert level["spec"]["type"] == "Limited" and level["spec"]["limited"]["lendablePercent"] == 0
    assert 900 < schema["spec"]["matchingPrecedence"] < 9000, "after the system schemas, before service-accounts"
    [rule] = schema["spec"]["rules"]
    assert rule["subjects"] == [{"kind": "ServiceAccount", "serviceAccount": {
        "name": pod_spec["serviceAccountName"], "namespace": NS}}]
    assert rule["resourceRules"][0]["verbs"] == ["*"] and rule["resourceRules"][0]["clusterScope"] is True


def test_deployment_hardening_and_contract() -> None:
    dep = _one("deployment.yaml", "Deployment", SVC)
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod["serviceAccountName"] == SVC
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["affinity"]["podAntiAffinity"]
    (container,) = pod["containers"]
    assert container["command"] == ["spreadhook", "run", "--cert-dir", "/tls", "--store", "kube", "--port", "9443",
                                    "--conversion-port", "9444"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"https": 9443, "conversion": 9444}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["scheme"], get["port"]) == (path, "HTTPS", "https")
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/tls"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/tls"]["name"]]["secret"]["secretName"] == "spreadhook-webhook-tls"
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]  # writable scratch with a read-only root
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_service_and_pdb_select_the_deployment_pods() -> None:
    labels = _one("deployment.yaml", "Deployment")["spec"]["template"]["metadata"]["labels"]
    svc = _one("service.yaml", "Service", SVC)
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
                                    {"name": "conversion", "port": 444, "targetPort": "conversion", "protocol": "TCP"}]
    pdb = _one("pdb.yaml", "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ns = _one("namespace.yaml", "Namespace")
    assert ns["metadata"]["name"] == NS


# ---------------------------------------------------------------------------------------------------------
# Examples: the five scenarios of DESIGN.md, on the simulated nodes of docs/test-cluster-nodes.md

NODES = {
    "idc-1": {"spreadhook.io/pool": "idc", "spreadhook.io/cpu-vendor": "intel"},
    "idc-2": {"spreadhook.io/pool": "idc", "spreadhook.io/cpu-vendor": "intel"},
    "ecs-intel-1": {"spreadhook.io/pool": "ecs", "alibabacloud.com/nodepool-id": "np-intel",
                    "spreadhook.io/cpu-vendor": "intel"},
    "ecs-amd-1": {"spreadhook.io/pool": "ecs", "alibabacloud.com/nodepool-id": "np-amd",
                  "spreadhook.io/cpu-vendor": "amd"},
    "ecs-arm-1": {"spreadhook.io/pool": "ecs", "alibabacloud.com/nodepool-id": "np-arm",
                  "spreadhook.io/cpu-vendor": "arm"},
    "vk-acs": {"type": "acs-virtual-kubelet", "spreadhook.io/pool": "serverless"},
    "vk-eci": {"type": "virtual-kubelet", "spreadhook.io/pool": "serverless"},
}
TAINTED = {"vk-acs", "vk-eci"}  # virtual-kubelet.io/provider=alibabacloud:NoSchedule


def _matches(term: Obj | None, labels: dict[str, str]) -> bool:
    for req in (term or {}).get("matchExpressions", []):
        value = labels.get(req["key"])
        op = req["operator"]
        if (op == "In" and value not in req["values"]) or (op == "NotIn" and value in req["values"]) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _nodes_for(subset: Obj, alpha: bool) -> set[str]:
    term = subset.get("requiredNodeSelectorTerm" if alpha else "requiredNodeSelector")
    tolerates = any(t.get("key") == "virtual-kubelet.io/provider" and t.get("effect") in (None, "NoSchedule")
                    for t in subset.get("tolerations", []))
    return {n for n, labels in NODES.items() if _matches(term, labels) and (tolerates or n not in TAINTED)}


def _example(name: str) -> tuple[Obj, Obj]:
    docs = _docs(DEPLOY / "examples" / name)
    assert len(docs) == 2
    workload = next(d for d in docs if d["kind"] != "WorkloadSpread")
    ws = next(d for d in docs if d["kind"] == "WorkloadSpread")
    assert "namespace" not in workload["metadata"] and "namespace" not in ws["metadata"]
    ref = ws["spec"]["targetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == (
        workload["apiVersion"], workload["kind"], workload["metadata"]["name"])
    tmpl = workload["spec"]["template"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= tmpl["metadata"]["labels"].items()
    for c in tmpl["spec"]["containers"]:
        assert c["image"] == "registry.k8s.io/pause:3.10"
    alpha = ws["apiVersion"].endswith("v1alpha1")
    other = ("requiredNodeSelector", "preferredNodeSelector") if alpha else (
        "requiredNodeSelectorTerm", "preferredNodeSelectorTerms")
    for subset in ws["spec"]["subsets"]:
        assert not set(other) & set(subset), f"{name}: {subset['name']} uses the other version's field names"
        assert _nodes_for(subset, alpha), f"{name}: subset {subset['name']} selects no simulated node"
    return workload, ws


def test_examples_are_exactly_the_five_scenarios() -> None:
    assert sorted(p.name for p in (DEPLOY / "examples").glob("*.yaml")) == sorted([
        "bandwidth-packages.yaml", "sidecar-on-cloud.yaml", "idc-then-serverless.yaml", "zones-percent.yaml",
        "eci-by-label.yaml"])


def test_example_bandwidth_packages() -> None:
    workload, ws = _example("bandwidth-packages.yaml")
    assert (workload["apiVersion"], workload["kind"], workload["metadata"]["name"]) == (
        "apps.kruise.io/v1alpha1", "CloneSet", "load-agent")
    assert workload["spec"]["replicas"] == 0
    assert ws["apiVersion"] == "apps.kruise.io/v1alpha1"
    subsets = ws["spec"]["subsets"]
    assert [s["name"] for s in subsets] == [f"bandwidthPackage-{i}" for i in range(1, 11)] + ["no-eip"]
    ids = []
    for s in subsets[:10]:
        assert s["maxReplicas"] == 300
        ids.append(s["patch"]["metadata"]["annotations"]["k8s.aliyun.com/eip-common-bandwidth-package-id"])
    assert len(set(ids)) == 10
    assert "maxReplicas" not in subsets[-1]
    assert "k8s.aliyun.com/eip-common-bandwidth-package-id" not in (
        subsets[-1].get("patch", {}).get("metadata", {}).get("annotations", {}))
    assert sum(s["maxReplicas"] for s in subsets[:10]) == 3000


def test_example_sidecar_on_cloud() -> None:
    workload, ws = _example("sidecar-on-cloud.yaml")
    assert workload["kind"] == "Deployment" and workload["spec"]["replicas"] == 8
    assert ws["apiVersion"] == "apps.kruise.io/v1alpha1"
    local, acs = ws["spec"]["subsets"]
    assert (local["name"], local["maxReplicas"]) == ("local", 8)
    assert local["patch"]["metadata"]["labels"] == {"needs-acceleration-sidecar": "false"}
    assert _nodes_for(local, True) == {"idc-1", "idc-2"}
    assert acs["name"] == "aliyun-acs" and "maxReplicas" not in acs
    assert acs["patch"]["metadata"]["labels"] == {"needs-acceleration-sidecar": "true"}
    assert _nodes_for(acs, True) == {"vk-acs"}


def test_example_idc_then_serverless() -> None:
    workload, ws = _example("idc-then-serverless.yaml")
    assert ws["apiVersion"] == "apps.kruise.io/v1beta1"
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"] in ("1", 1)
    assert ws["spec"]["scheduleStrategy"] == {"type": "Adaptive", "adaptive": {"rescheduleCriticalSeconds": 10}}
    idc, serverless = ws["spec"]["subsets"]
    assert idc["name"] == "idc" and "maxReplicas" not in idc
    exprs = {e["key"]: e for e in idc["requiredNodeSelector"]["matchExpressions"]}
    assert exprs["spreadhook.io/pool"] == {"key": "spreadhook.io/pool", "operator": "In", "values": ["idc"]}
    assert exprs["type"]["operator"] == "NotIn"
    assert set(exprs["type"]["values"]) == {"acs-virtual-kubelet", "virtual-kubelet"}
    assert _nodes_for(idc, False) == {"idc-1", "idc-2"}
    assert serverless["name"] == "acs-serverless" and "maxReplicas" not in serverless
    assert _nodes_for(serverless, False) == {"vk-acs"}
    (patched,) = serverless["patch"]["spec"]["containers"]
    assert patched["name"] == container["name"]
    assert {"name": "APP_RUNTIME_MODE", "value": "SERVERLESS"} in patched["env"]


def test_example_zones_percent() -> None:
    workload, ws = _example("zones-percent.yaml")
    assert workload["kind"] == "Deployment"
    assert ws["apiVersion"] == "apps.kruise.io/v1alpha1"
    subsets = ws["spec"]["subsets"]
    assert [(s["name"], s["maxReplicas"]) for s in subsets] == [("intel", "50%"), ("amd", "25%"), ("arm", "25%")]
    assert [_nodes_for(s, True) for s in subsets] == [{"ecs-intel-1"}, {"ecs-amd-1"}, {"ecs-arm-1"}]
    resources = [s["patch"]["spec"]["containers"][0]["resources"] for s in subsets]
    assert len({repr(r) for r in resources}) == 3
    names = {c["name"] for c in workload["spec"]["template"]["spec"]["containers"]}
    assert all(s["patch"]["spec"]["containers"][0]["name"] in names for s in subsets)


def test_example_eci_by_label() -> None:
    workload, ws = _example("eci-by-label.yaml")
    assert workload["kind"] == "Deployment"
    assert ws["apiVersion"] == "apps.kruise.io/v1beta1"
    local, eci = ws["spec"]["subsets"]
    assert isinstance(local.get("maxReplicas"), int)
    assert _nodes_for(local, False) and not (_nodes_for(local, False) & TAINTED)
    assert _nodes_for(eci, False) == {"vk-eci"}
    assert eci["patch"]["metadata"]["labels"] == {"alibabacloud.com/eci": "true"}
    assert eci["patch"]["metadata"]["annotations"] == {"k8s.aliyun.com/eci-use-specs": "ecs.gn6i-c4g1.xlarge"}
