"""The real gunicorn server over verified TLS: every endpoint, bad input, concurrency, certificate rotation."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from typing import Any

import jsonpatch
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spreadhook import certs, spread
from tests.server.conftest import Server
from tests.server.reviews import decoded_patch, pod, review


def post(server: Server, path: str, body: Any, session: requests.Session | None = None) -> requests.Response:
    return (session or server.session()).post(f"{server.url}{path}", json=body, timeout=30)


def ledger(server: Server) -> dict[str, Any]:
    reply = server.session().get(f"{server.url}/workloadspreads/default/load-agent", timeout=10)
    reply.raise_for_status()
    return reply.json()


def versioned(server: Server) -> list[dict[str, Any]]:
    return ledger(server).get("status", {}).get("versionedSubsetStatuses", {}).get("versionIgnored", [])


def test_pod_create_gets_the_first_subset_patch_and_a_ledger_entry(server: Server) -> None:
    reply = post(server, "/mutate-pods", review("CREATE", pod("agent-0")))
    assert reply.status_code == 200
    response = reply.json()["response"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(pod("agent-0"), decoded_patch(response))
    assert patched["metadata"]["annotations"]["k8s.aliyun.com/eip-common-bandwidth-package-id"] == "cbwp-spreadhook0001"
    assert spread.matched(patched) == spread.Matched("load-agent", "bandwidthPackage-1")
    assert versioned(server)[0]["creatingPods"].keys() == {"agent-0"}


def test_pod_delete_gives_the_slot_back(server: Server) -> None:
    matched = spread.Matched("load-agent", "bandwidthPackage-1").to_annotation()
    annotated = pod("agent-9", annotations={spread.MATCHED_ANNOTATION: matched})
    reply = post(server, "/mutate-pods", review("DELETE", old=annotated, name="agent-9"))
    assert reply.json()["response"] == {"uid": reply.json()["response"]["uid"], "allowed": True}
    entry = versioned(server)
    assert entry == [] or entry[0].get("deletingPods", {}) == {}  # no ledger yet: nothing to give back
    post(server, "/mutate-pods", review("CREATE", pod("agent-0")))
    post(server, "/mutate-pods", review("DELETE", old=annotated, name="agent-9"))
    first = versioned(server)[0]
    assert first["deletingPods"].keys() == {"agent-9"} and first["missingReplicas"] == 300


def test_dry_run_gets_the_same_patch_and_leaves_the_ledger_untouched(server: Server) -> None:
    dry = post(server, "/mutate-pods", review("CREATE", pod("agent-0"), dry_run=True)).json()["response"]
    assert versioned(server) == []
    real = post(server, "/mutate-pods", review("CREATE", pod("agent-0"))).json()["response"]
    assert decoded_patch(dry) == decoded_patch(real)


def test_pod_of_an_unknown_workload_is_admitted_without_patch(server: Server) -> None:
    response = post(server, "/mutate-pods", review("CREATE", pod("x", owner="other"))).json()["response"]
    assert response["allowed"] is True and "patch" not in response


def test_malformed_pod_is_admitted_unchanged_with_a_warning(server: Server) -> None:
    broken = pod("x")
    broken["metadata"]["labels"] = "not-a-map"
    response = post(server, "/mutate-pods", review("CREATE", broken)).json()["response"]
    assert response["allowed"] is True and "patch" not in response
    assert "metadata.labels must be an object" in response["warnings"][0]


def test_invalid_workloadspread_is_refused_with_field_paths(server: Server) -> None:
    ws = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "WorkloadSpread",
          "metadata": {"name": "bad", "namespace": "default"},
          "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                   "subsets": [{"name": "a", "maxReplicas": "50"}, {"name": "a"}]}}
    body = review("CREATE", ws, resource="workloadspreads", name="bad")
    response = post(server, "/validate-workloadspreads", body).json()["response"]
    assert response["allowed"] is False and response["status"]["code"] == 422
    assert "spec.subsets[0].maxReplicas" in response["status"]["message"]
    assert "spec.subsets[1].name: duplicated subset name a" in response["status"]["message"]


def test_second_workloadspread_for_the_same_workload_is_refused(server: Server) -> None:
    from spreadhook.demo import default_workload_spread

    other = default_workload_spread()
    other["metadata"]["name"] = "second"
    response = post(server, "/validate-workloadspreads",
                    review("CREATE", other, resource="workloadspreads", name="second")).json()["response"]
    assert response["allowed"] is False
    assert "in conflict with other WorkloadSpread load-agent" in response["status"]["message"]


def test_conversion_review_converts_between_versions(server: Server) -> None:
    from spreadhook.demo import default_workload_spread

    obj = default_workload_spread()
    obj["spec"]["subsets"][0]["requiredNodeSelectorTerm"] = {"matchExpressions": [
        {"key": "a", "operator": "Exists"}]}
    body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "c1", "desiredAPIVersion": "apps.kruise.io/v1beta1", "objects": [obj]}}
    response = post(server, "/convert-workloadspreads", body).json()["response"]
    assert response["result"]["status"] == "Success" and response["uid"] == "c1"
    deadline = time.monotonic() + 20  # the dedicated conversion process starts beside gunicorn
    while True:
        try:
            separate = server.session().post(f"{server.conversion_url}/convert-workloadspreads", json=body,
                                             timeout=5).json()["response"]
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert separate == response
    converted = response["convertedObjects"][0]
    assert converted["apiVersion"] == "apps.kruise.io/v1beta1"
    assert "requiredNodeSelector" in converted["spec"]["subsets"][0]


def test_health_readiness_and_metrics(server: Server) -> None:
    session = server.session()
    assert session.get(f"{server.url}/healthz").status_code == 200
    assert session.get(f"{server.url}/readyz").status_code == 200
    post(server, "/mutate-pods", review("CREATE", pod("agent-0")))
    metrics = session.get(f"{server.url}/metrics").text
    assert 'spreadhook_admission_duration_seconds_bucket{endpoint="pods",le="0.002",operation="CREATE"}' in metrics
    assert 'spreadhook_admissions_total{endpoint="pods",operation="CREATE",outcome="mutated",' \
           'subset="bandwidthPackage-1"} 1.0' in metrics
    assert "spreadhook_serving_certificate_expiry_timestamp_seconds" in metrics
    assert "spreadhook_ledger_commit_batch_size_bucket" in metrics


def test_bad_requests_get_400_with_a_reason(server: Server) -> None:
    session = server.session()
    for body, reason in [(b"not json", "not JSON"), (b"[]", "JSON object"),
                         (b'{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}', "expected apiVersion"),
                         (b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}',
                          "request.uid")]:
        reply = session.post(f"{server.url}/mutate-pods", data=body, timeout=10)
        assert reply.status_code == 400 and reason in reply.text


def test_body_over_3_mib_is_refused_with_413(server: Server) -> None:
    reply = server.session().post(f"{server.url}/mutate-pods", data=b"x" * (3 * 1024 * 1024 + 1), timeout=30)
    assert reply.status_code == 413


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20)


def hostile_bodies() -> st.SearchStrategy[bytes]:
    valid = json.dumps(review("CREATE", pod("agent-h"))).encode()
    return st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.integers(min_value=0, max_value=len(valid)).map(lambda n: valid[:n]),
        json_values.map(lambda v: json.dumps(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
             "request": {"uid": "u", "operation": "CREATE", "resource": {"resource": "pods"}, "object": v}}).encode()),
        st.fixed_dictionaries({"metadata": json_values, "spec": json_values, "status": json_values}).map(
            lambda o: json.dumps(review("CREATE", o)).encode()),
        st.integers(min_value=1, max_value=200_000).map(
            lambda n: json.dumps(review("CREATE", pod("x" * n))).encode()),  # huge strings
    )


def test_hostile_bodies_never_get_a_5xx_nor_kill_a_worker(server: Server) -> None:
    session = server.session()
    paths = ["/mutate-pods", "/validate-workloadspreads", "/convert-workloadspreads"]

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=hostile_bodies(), path=st.sampled_from(paths))
    def check(body: bytes, path: str) -> None:
        reply = session.post(f"{server.url}{path}", data=body, timeout=10)
        assert reply.status_code < 500, (path, body[:200], reply.status_code, reply.text[:300])

    check()
    assert server.alive()
    assert session.get(f"{server.url}/healthz").status_code == 200


def test_64_concurrent_clients_never_exceed_any_subset_max(server: Server) -> None:
    sessions = threading.local()

    def create(i: int) -> str | None:
        if not hasattr(sessions, "s"):
            sessions.s = server.session()
        reply = post(server, "/mutate-pods", review("CREATE", pod(f"agent-{i:05d}")), sessions.s)
        assert reply.status_code == 200, reply.text
        response = reply.json()["response"]
        assert response["allowed"] is True
        patched = jsonpatch.apply_patch(pod(f"agent-{i:05d}"), decoded_patch(response))
        info = spread.matched(patched)
        return info.subset if info else None

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        subsets = list(pool.map(create, range(3000)))
    counts = {name: subsets.count(name) for name in set(subsets)}
    assert counts == {f"bandwidthPackage-{i}": 300 for i in range(1, 11)}
    final = {s["name"]: s for s in versioned(server)}
    for i in range(1, 11):
        entry = final[f"bandwidthPackage-{i}"]
        assert entry["missingReplicas"] == 0 and len(entry["creatingPods"]) == 300


def test_certificate_rotation_under_load_drops_no_request(server: Server) -> None:
    old = certs.read_bundle(server.cert_dir)
    assert old is not None
    rotated = certs.new_bundle()
    trust = server.cert_dir / "trust.pem"
    trust.write_bytes(old.ca_bundle_pem() + rotated.ca_bundle_pem())  # the overlap: clients trust both CAs
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            session = requests.Session()  # a new connection each time, so new handshakes see the new cert
            session.trust_env = False
            session.verify = str(trust)
            try:
                reply = session.post(f"{server.url}/mutate-pods", json=review("CREATE", pod("x", owner="o")),
                                     timeout=10)
                if reply.status_code != 200:
                    failures.append(str(reply.status_code))
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1)
    certs.write_bundle(server.cert_dir, rotated)
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    fresh = requests.Session()
    fresh.trust_env = False
    fresh.verify = str(server.cert_dir / "ca.crt")  # the new CA alone
    assert fresh.get(f"{server.url}/healthz", timeout=10).status_code == 200
