"""The fault suite: a CloneSet burst through spreadhook on the real control plane, with something breaking
mid-burst. What must hold after every fault, counted on the pods themselves:

* no subset holds more pods than its ``maxReplicas`` (the ledger's one promise);
* once the reconciler has run, the WorkloadSpread status says what the pods say, and every pod has a
  deletion cost (so a later scale-in still runs in reverse subset order);
* no unhandled exception (``Traceback``) in any spreadhook log, and no spreadhook process outlives the test.

Each test names its fault; the bursts are 600-1,000 pods from 32 clients, playing the CloneSet controller.
The apiserver-restart test brings up a private control plane (restarting the session's would disturb every
other test); ``SPREADHOOK_FUZZ_REQUESTS`` sets how many hostile requests the garbage test sends (default
10,000).
"""

from __future__ import annotations

import json
import os
import random
import socket
import ssl
import string
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from kubernetes import client

from harness import controlplane as cpmod
from harness.bandwidth import apply_scenario
from harness.controlplane import ControlPlane
from harness.pytest_plugin import force_delete_pods
from spreadhook import certs
from tests.e2e.conftest import Spreadhook, SpreadhookFactory, install, restart_apiserver
from tests.e2e.scenario import Burst, assert_spread_holds

pytestmark = [pytest.mark.controlplane, pytest.mark.timeout(900)]

CLIENTS = 32


# ------------------------------------------------------------------------------------------------ (1) SIGKILL


def test_sigkilling_one_of_two_webhook_replicas_every_few_hundred_admissions_never_overfills_a_subset(
    controlplane: ControlPlane, k8s_client: client.ApiClient, namespace: str,
    spreadhook: SpreadhookFactory,
) -> None:
    sh = spreadhook(replicas=2, proxy=True)
    cloneset = apply_scenario(controlplane, namespace, replicas=1000)
    sh.wait_mutating(k8s_client, namespace, cloneset)
    burst = Burst(k8s_client, namespace, cloneset, 1000, CLIENTS).start()
    kills = 0
    for mark in (200, 400, 600, 800):
        burst.wait_for(mark)
        for replica in sh.replicas:  # the previous victim is back before the next kill: one always serves
            replica.wait_ready()
        victim = sh.replicas[kills % 2]
        victim.kill()
        kills += 1
        victim.start(wait=False)  # restarted at once; the proxy routes around it until it listens
    burst.join()
    for replica in sh.replicas:
        replica.wait_ready()

    assert kills == 4
    assert burst.failures == [], burst.failures[:5]  # failurePolicy Ignore: a cut connection admits unspread
    assert burst.created == 1000
    counts = assert_spread_holds(k8s_client, namespace, burst.created)
    print(f"pods per subset after 4 SIGKILLs: {counts}")
    sh.assert_clean_shutdown()


# ------------------------------------------------------------------------------------------------ (2) leader


def test_killing_the_reconciler_leader_mid_burst_moves_the_lease_and_the_status_still_converges(
    controlplane: ControlPlane, k8s_client: client.ApiClient, namespace: str,
    spreadhook: SpreadhookFactory,
) -> None:
    sh = spreadhook(replicas=2, proxy=True)
    first_leader = sh.wait_leader()
    cloneset = apply_scenario(controlplane, namespace, replicas=800)
    sh.wait_mutating(k8s_client, namespace, cloneset)
    burst = Burst(k8s_client, namespace, cloneset, 800, CLIENTS).start()
    burst.wait_for(300)
    first_leader.kill()
    # The survivor takes the Lease once it expires (15 s without renewal); only then does the killed process
    # come back, since a fresh process could otherwise win the expired Lease itself.
    successor = sh.wait_leader(other_than=first_leader, timeout=45)
    first_leader.start()  # back as a follower: the Lease belongs to the successor while it keeps renewing
    burst.join()
    time.sleep(5)  # a few renewal periods, in which the restarted process must not take the Lease

    assert successor is not first_leader
    assert burst.failures == [], burst.failures[:5]
    assert_spread_holds(k8s_client, namespace, burst.created)
    assert sh.leader() is successor, "leadership flapped back although the successor kept renewing"
    sh.assert_clean_shutdown()


# ------------------------------------------------------------------------------------------------ (3) certs


def _served_certificate(port: int) -> bytes:
    """The leaf the webhook presents to a new connection right now (no verification: we compare bytes)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5)) as sock:
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_rotating_ca_and_serving_certificate_on_disk_mid_burst_fails_no_pod_creation_under_failure_policy_fail(
    controlplane: ControlPlane, k8s_client: client.ApiClient, namespace: str,
    spreadhook: SpreadhookFactory,
) -> None:
    """Fail makes any TLS error visible as a refused pod: the rotation must cost zero creations."""
    sh = spreadhook(replicas=1, failure_policy="Fail")
    webhook = sh.replicas[0]
    old = certs.read_bundle(sh.cert_dir)
    assert old is not None
    fresh = certs.new_bundle(extra_sans=("127.0.0.1",))
    rotated = certs.CertBundle(ca=fresh.ca, serving=fresh.serving, previous_ca_pems=(old.ca.cert_pem,))
    cloneset = apply_scenario(controlplane, namespace, replicas=1000)
    sh.wait_mutating(k8s_client, namespace, cloneset)
    old_leaf = _served_certificate(webhook.port)

    burst = Burst(k8s_client, namespace, cloneset, 1000, CLIENTS).start()
    burst.wait_for(200)
    sh.register(rotated.ca_bundle_pem())  # trust old + new before anything serves the new leaf
    burst.wait_for(400)
    certs.write_bundle(sh.cert_dir, rotated)
    deadline = time.monotonic() + 15
    while _served_certificate(webhook.port) == old_leaf:
        assert time.monotonic() < deadline, "the webhook still serves the old certificate 15 s after rotation"
        time.sleep(0.2)
    burst.wait_for(700)
    sh.register(fresh.ca.cert_pem)  # the overlap is over: the old CA is no longer trusted
    burst.join()

    assert burst.failures == [], burst.failures[:5]
    assert burst.created == 1000
    counts = assert_spread_holds(k8s_client, namespace, burst.created)
    assert counts.get("", 0) == 0, "with failurePolicy Fail every pod went through the webhook"
    sh.assert_clean_shutdown()


# ------------------------------------------------------------------------------------------------ (4) apiserver


@pytest.fixture
def private_controlplane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane of this test's own: its API server is restarted, which must not hit other tests."""
    directory = tmp_path / "cp"
    directory.mkdir()
    watchdog = cpmod.start_watchdog(directory, os.getpid(), remove_dir=False)
    try:
        yield cpmod.up(directory)
    finally:
        cpmod.down(directory)
        watchdog.terminate()
        watchdog.wait(10)


def test_restarting_the_api_server_mid_burst_lets_webhook_and_reconciler_reconnect(
    private_controlplane: ControlPlane, tmp_path: Path,
) -> None:
    cp = private_controlplane
    api = cp.api_client(pool_maxsize=CLIENTS + 8)
    namespace = "burst"
    cp.kubectl("create", "namespace", namespace)
    cp.wait_for_service_account(namespace)
    sh = install(cp, tmp_path / "spreadhook")
    try:
        cloneset = apply_scenario(cp, namespace, replicas=800)
        sh.wait_mutating(api, namespace, cloneset)
        burst = Burst(api, namespace, cloneset, 800, CLIENTS, retries=5000).start()
        burst.wait_for(300)
        mutated_before = _mutated(sh)
        down_for = restart_apiserver(cp)
        burst.join(timeout=300)
        # After the restart the webhook is called again and answers (its store's watches re-listed) ...
        sh.wait_mutating(api, namespace, cloneset, timeout=60)
        assert _mutated(sh) > mutated_before, "no pod admitted into a subset after the restart"
        # ... and the reconciler, whose watches broke, sees every pod again: status and costs converge.
        assert burst.created == 800, (burst.created, len(burst.failures), burst.failures[-3:])
        assert_spread_holds(api, namespace, burst.created, timeout=180)
        print(f"kube-apiserver was down {down_for:.1f}s; {len(burst.failures)} create attempts failed meanwhile")
        sh.assert_clean_shutdown()
    finally:
        sh.stop()
        force_delete_pods(api, namespace)
        api.close()


def _mutated(sh: Spreadhook) -> float:
    total = 0.0
    for line in sh.metrics(sh.replicas[0]).splitlines():
        if line.startswith("spreadhook_admissions_total{") and 'outcome="mutated"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ------------------------------------------------------------------------------------------------ (5) garbage


ENDPOINTS = ("/mutate-pods", "/validate-workloadspreads", "/convert-workloadspreads")
GETS = ("/healthz", "/readyz", "/metrics", "/workloadspreads/{ns}/load-agent", "/workloadspreads/../../etc",
        "/workloadspreads/%00/%ff", "/nope", "/mutate-pods/../metrics")


def _junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: wrong types where objects are expected, odd strings, big and nested values."""
    choice = rng.randrange(12 if depth < 4 else 7)
    if choice == 0:
        return None
    if choice == 1:
        return rng.choice([True, False])
    if choice == 2:
        return rng.choice([0, -1, 2**63, -(2**64), 1e308, 3.5])
    if choice == 3:
        return "".join(rng.choice(string.printable + "\u0000\u202e\ud7ff\U0001f4a5") for _ in range(rng.randrange(40)))
    if choice == 4:
        return rng.choice(["", "CREATE", "DELETE", "v1", "apps.kruise.io/v1beta1", "load-agent", "../../x"])
    if choice == 5:
        return "x" * rng.choice([1, 300, 70000])
    if choice == 6:
        return []
    if choice in (7, 8):
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["metadata", "spec", "status", "name", "namespace", "ownerReferences", "annotations", "labels",
            "containers", "subsets", "maxReplicas", "patch", "targetRef", "uid", "kind", "apiVersion", "controller"]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(5))}


def _hostile_pod(rng: random.Random, namespace: str) -> dict[str, Any]:
    """A pod that looks like the burst's but is broken somewhere, owned by the burst's CloneSet or by junk."""
    pod: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"fuzz-{rng.randrange(10**9)}", "namespace": namespace,
                     "labels": {"app": "load-agent"},
                     "ownerReferences": [{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
                                          "name": rng.choice(["load-agent", "nope", ""]), "uid": "u",
                                          "controller": True}]},
        "spec": {"containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10"}]},
    }
    where = rng.choice([pod, pod["metadata"], pod["spec"], pod["metadata"]["ownerReferences"][0],
                        pod["spec"]["containers"][0]])
    for _ in range(rng.randrange(1, 4)):
        where[rng.choice([*list(where), "annotations", "affinity", "tolerations", "nodeSelector"])] = _junk(rng)
    return pod


def _hostile_request(rng: random.Random, namespace: str) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers) for one hostile request. Reviews that could reach the ledger are dry-run
    or aimed at a namespace without a WorkloadSpread, so the garbage cannot take a real pod's slot."""
    kind = rng.randrange(10)
    headers = {"Content-Type": rng.choice(["application/json", "text/plain", "application/x-www-form-urlencoded"])}
    if kind == 0:
        return rng.choice(["GET", "PUT", "DELETE", "PATCH"]), rng.choice(ENDPOINTS), b"{}", headers
    if kind == 1:
        return "GET", rng.choice(GETS).format(ns=namespace), b"", headers
    path = rng.choice(ENDPOINTS) + rng.choice(["", "?timeout=5s", "?timeout=0s", "?timeout=-1s", "?timeout=abc",
                                               "?timeout=999999999999999999999s", "?timeout=5s&timeout=1s"])
    if kind == 2:
        return "POST", path, rng.randbytes(rng.randrange(2000)), headers
    if kind == 3:
        nested = "[" * rng.choice([100, 5000, 100000]) + "]" * rng.choice([0, 100])
        return "POST", path, nested.encode(), headers
    if kind == 4:
        valid = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": {"uid": "u", "operation": "CREATE"}}).encode()
        return "POST", path, valid[: rng.randrange(len(valid))], headers
    if kind == 5:
        return "POST", path, json.dumps(_junk(rng)).encode(), headers
    if "convert" in path:
        body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
                "request": {"uid": _junk(rng) if kind == 6 else "u",
                            "desiredAPIVersion": rng.choice(["apps.kruise.io/v1alpha1", "apps.kruise.io/v1beta1",
                                                             "v9", _junk(rng)]),
                            "objects": [_junk(rng) for _ in range(rng.randrange(4))]}}
        return "POST", path, json.dumps(body).encode(), headers
    operation = rng.choice(["CREATE", "DELETE", "UPDATE", "CONNECT", _junk(rng)])
    dry_run = rng.random() < 0.5
    target_ns = namespace if dry_run else "fuzz-nowhere"
    obj: Any = _hostile_pod(rng, target_ns) if "pods" in path else _junk(rng)
    request: dict[str, Any] = {
        "uid": rng.choice(["u", "", _junk(rng)]),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": rng.choice([{"group": "", "version": "v1", "resource": "pods"}, _junk(rng)]),
        "subResource": rng.choice([None, "", "eviction", "status", _junk(rng)]),
        "namespace": rng.choice([target_ns, _junk(rng)]),
        "name": rng.choice(["p", "", _junk(rng)]),
        "operation": operation,
        "dryRun": dry_run,
        "object": obj if rng.random() < 0.8 else _junk(rng),
        "oldObject": rng.choice([None, obj, _junk(rng)]),
    }
    for _ in range(rng.randrange(3)):
        request[rng.choice(list(request))] = _junk(rng)
    review = {"apiVersion": rng.choice(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", _junk(rng)]),
              "kind": rng.choice(["AdmissionReview", "Pod", _junk(rng)]), "request": request}
    return "POST", path, json.dumps(review).encode(), headers


def test_ten_thousand_malformed_or_hostile_requests_mid_burst_get_no_5xx_and_break_nothing(
    controlplane: ControlPlane, k8s_client: client.ApiClient, namespace: str,
    spreadhook: SpreadhookFactory,
) -> None:
    sh = spreadhook(replicas=1)
    webhook = sh.replicas[0]
    count = int(os.environ.get("SPREADHOOK_FUZZ_REQUESTS", "10000"))
    seed = int(os.environ.get("SPREADHOOK_FUZZ_SEED", "20240611"))
    cloneset = apply_scenario(controlplane, namespace, replicas=600)
    sh.wait_mutating(k8s_client, namespace, cloneset)
    burst = Burst(k8s_client, namespace, cloneset, 600, CLIENTS).start()

    local = threading.local()
    server_errors: list[str] = []
    transport_errors: list[str] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def send(index: int) -> None:
        rng = random.Random(seed * 1_000_003 + index)
        method, path, body, headers = _hostile_request(rng, namespace)
        if not hasattr(local, "session"):
            local.session = requests.Session()
        try:  # verify per request: a session-level verify loses to REQUESTS_CA_BUNDLE from the environment
            reply = local.session.request(method, webhook.url + path, data=body, headers=headers, timeout=30,
                                          verify=str(sh.cert_dir / "ca.crt"))
        except requests.RequestException as err:
            with lock:
                transport_errors.append(f"#{index} {method} {path}: {err}"[:300])
            return
        with lock:
            statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
            if reply.status_code >= 500:
                server_errors.append(f"#{index} {method} {path} -> {reply.status_code} {reply.text[:200]!r} "
                                     f"body {body[:200]!r}")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(count)))
    fuzz_seconds = time.monotonic() - started
    burst.join()

    print(f"{count} hostile requests (seed {seed}) in {fuzz_seconds:.1f}s; status codes {sorted(statuses.items())}")
    assert server_errors == [], f"{len(server_errors)} 5xx answers (seed {seed}): {server_errors[:5]}"
    assert transport_errors == [], f"{len(transport_errors)} failed requests (seed {seed}): {transport_errors[:5]}"
    assert sum(statuses.values()) == count
    assert webhook.alive()
    assert burst.failures == [], burst.failures[:5]
    counts = assert_spread_holds(k8s_client, namespace, burst.created)
    assert counts.get("", 0) == 0, "a pod of the burst went unspread while the webhook was being fuzzed"
    sh.assert_clean_shutdown()
