"""``spreadhook demo``: the bandwidth-package scenario replayed as real AdmissionReviews over HTTPS.

The demo plays kube-apiserver and the CloneSet controller: concurrent clients POST pod CREATE reviews to
the webhook over verified TLS, apply the returned JSON patches, and store the pods in the embedded store
that the webhook's ledger and the reconciler share; scale-in sends DELETE reviews in deletion-cost order.
The webhook side is the production code (flask app, ledger with group commit, reconciler); only the HTTP
server differs: werkzeug's threaded TLS server in this process, so that the embedded store can be shared.
Nothing in a verdict is taken from the webhook's word: the counts are made from the patched pods.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonpatch
import requests
import yaml
from werkzeug.serving import WSGIRequestHandler, make_server

from spreadhook import certs, model, simulation
from spreadhook.metrics import Metrics
from spreadhook.runtime import build_app, utcnow
from spreadhook.server import ReloadingTLS, ServeOptions
from spreadhook.store import MemoryStore

NAMESPACE = "default"


def default_workload_spread() -> dict[str, Any]:
    """DESIGN.md's first scenario, shipped in the package (``deploy/examples/bandwidth-packages.yaml`` is a
    link to the same file): ten bandwidth packages of 300 pods, then ``no-eip``."""
    text = resources.files("spreadhook.examples").joinpath("bandwidth-packages.yaml").read_text(encoding="utf-8")
    return next(d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d.get("kind") == model.KIND)


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request: the demo prints its own progress."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Tally:
    """Pods per subset as the patches put them, and whether any subset ever went over its limit."""

    limits: dict[str, int | None]
    counts: dict[str | None, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, subset: str | None, delta: int) -> None:
        with self.lock:
            self.counts[subset] = self.counts.get(subset, 0) + delta
            limit = self.limits.get(subset) if subset is not None else None
            if limit is not None and self.counts[subset] > limit:
                self.violations.append(f"subset {subset} held {self.counts[subset]} pods, over its max {limit}")


@dataclass
class Demo:
    ws_obj: dict[str, Any]
    concurrency: int
    out: Any = sys.stderr
    write_latency: float = 0.002

    def __post_init__(self) -> None:
        self.store = MemoryStore(write_latency=self.write_latency)
        self.metrics = Metrics()
        self.ws = self.store.apply_workload_spread(self.ws_obj)
        self._names = itertools.count()
        self.latencies: list[float] = []
        self._latency_lock = threading.Lock()
        self.admitted = 0
        self.admission_seconds = 0.0

    # -- server ----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="spreadhook-demo-")
        bundle = certs.new_bundle(service="spreadhook-webhook", namespace="spreadhook-system")
        certs.write_bundle(self._tmp.name, bundle)
        options = ServeOptions(cert_dir=self._tmp.name, host="127.0.0.1", port=0, store="memory", reconcile=True)
        tls = ReloadingTLS(f"{self._tmp.name}/tls.crt", f"{self._tmp.name}/tls.key")
        app = build_app(options, tls, store=self.store, metrics=self.metrics)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, ssl_context=tls.context,
                                   request_handler=_QuietHandler)
        threading.Thread(target=self._server.serve_forever, name="spreadhook-demo-server", daemon=True).start()
        self.url = f"https://127.0.0.1:{self._server.server_port}"
        self._ca = f"{self._tmp.name}/ca.crt"
        self._local = threading.local()

    def stop(self) -> None:
        self._server.shutdown()
        self._tmp.cleanup()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the CA given here
            session.verify = self._ca
            self._local.session = session
        return session

    def _review(self, operation: str, pod: Mapping[str, Any]) -> dict[str, Any]:
        request: dict[str, Any] = {
            "uid": str(uuid.uuid4()), "operation": operation, "namespace": NAMESPACE,
            "name": pod["metadata"].get("name", ""),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "object": pod if operation == "CREATE" else None,
            "oldObject": pod if operation == "DELETE" else None,
            "dryRun": False,
        }
        started = time.perf_counter()
        reply = self._session().post(f"{self.url}/mutate-pods?timeout=10s",
                                     json={"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                           "request": request}, timeout=30)
        elapsed = time.perf_counter() - started
        reply.raise_for_status()
        with self._latency_lock:
            self.latencies.append(elapsed)
        response: dict[str, Any] = reply.json()["response"]
        if response.get("uid") != request["uid"] or not response.get("allowed"):
            raise RuntimeError(f"unexpected admission response: {response}")
        return response

    # -- the workload controller's part ------------------------------------------------------------

    def _create(self, tally: Tally) -> None:
        pod = simulation.new_pod(self.ws, next(self._names))
        response = self._review("CREATE", pod)
        if response.get("patch"):
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        tally.add(simulation.subset_of(pod), 1)
        metadata = pod["metadata"]
        metadata["creationTimestamp"] = model.format_time(utcnow())
        self.store.put_pod({**pod, "spec": {**pod["spec"], "nodeName": "node-1"},
                            "status": {"phase": "Running", "conditions": [
                                {"type": "Ready", "status": "True",
                                 "lastTransitionTime": metadata["creationTimestamp"]}]}})

    def _delete(self, pod: Mapping[str, Any], tally: Tally) -> None:
        self._review("DELETE", pod)
        self.store.delete_pod(NAMESPACE, pod["metadata"]["name"])
        tally.add(simulation.subset_of(pod), -1)

    def _set_replicas(self, replicas: int) -> None:
        for obj in simulation.workload_objects(self.ws, replicas):
            self.store.apply_workload(obj)

    def _run(self, label: str, jobs: Iterable[Any], count: int) -> None:
        started = time.perf_counter()
        done = 0
        with ThreadPoolExecutor(self.concurrency) as pool:
            for future in [pool.submit(job) for job in jobs]:
                future.result()
                done += 1
                if done % 500 == 0 or done == count:
                    print(f"  {label}: {done}/{count} pods, {done / (time.perf_counter() - started):.0f}/s",
                          file=self.out, flush=True)
        self.admission_seconds += time.perf_counter() - started
        self.admitted += count

    def scale_out(self, replicas: int, tally: Tally) -> None:
        current = len(self.store.pods(NAMESPACE))
        self._set_replicas(replicas)
        self._run(f"scale {current} -> {replicas}", (lambda: self._create(tally) for _ in range(replicas - current)),
                  replicas - current)

    def scale_in(self, replicas: int, tally: Tally) -> list[str | None]:
        """Scale in as the CloneSet controller does: at once, the cheapest pods first, with the deletion
        costs the reconciler wrote before the scale."""
        self._reconcile_now()
        self._set_replicas(replicas)
        pods = self.store.pods(NAMESPACE)
        leaving = simulation.scale_in_order(pods)[: max(0, len(pods) - replicas)]
        self._run(f"scale {len(pods)} -> {replicas}", (lambda p=p: self._delete(p, tally) for p in leaving),
                  len(leaving))
        return [simulation.subset_of(p) for p in leaving]

    def _reconcile_now(self) -> None:
        from spreadhook.reconciler import Reconciler

        Reconciler(self.store, clock=utcnow).sync(NAMESPACE, self.ws.name)

    def status_writes_by_ledger(self) -> int:
        return int(self.metrics.registry.get_sample_value("spreadhook_ledger_status_writes_total") or 0)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def run_demo(
    ws_obj: Mapping[str, Any] | None = None,
    *,
    replicas: int = 3000,
    overflow: int = 300,
    scale_in_to: int = 1000,
    concurrency: int = 64,
    write_latency_ms: float = 2.0,
    out: Any = sys.stderr,
) -> dict[str, Any]:
    obj = copy.deepcopy(dict(ws_obj or default_workload_spread()))
    obj["metadata"] = {**obj.get("metadata", {}), "namespace": NAMESPACE}
    demo = Demo(obj, concurrency, out, write_latency_ms / 1000)
    peak = replicas + overflow
    limits = {s.name: model.resolve_max_replicas(s.max_replicas, peak) for s in demo.ws.subsets}
    tally = Tally(limits)
    demo.start()
    try:
        print(f"spreadhook demo: webhook on {demo.url}, WorkloadSpread {demo.ws.name} with "
              f"{len(demo.ws.subsets)} subsets, {concurrency} concurrent clients, embedded store with "
              f"{write_latency_ms:g} ms per status write", file=out, flush=True)
        demo.scale_out(replicas, tally)
        demo.scale_out(peak, tally)
        at_peak = {k: v for k, v in tally.counts.items()}
        leaving = demo.scale_in(scale_in_to, tally) if scale_in_to < peak else []
    finally:
        demo.stop()
    subsets = [{"name": s.name, "replicas": at_peak.get(s.name, 0), "maxReplicas": limits[s.name]}
               for s in demo.ws.subsets]
    if at_peak.get(None):
        subsets.append({"name": None, "replicas": at_peak[None], "maxReplicas": None})
    return {
        "subsets": subsets,
        "scaleIn": simulation.runs(leaving),
        "afterScaleIn": {str(k): v for k, v in tally.counts.items() if v},
        "verdict": "violated" if tally.violations else "ok",
        "violations": tally.violations[:10],
        "latency_ms": {name: round(percentile(demo.latencies, q) * 1000, 2)
                       for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))},
        "admissions_per_s": round(demo.admitted / demo.admission_seconds, 1) if demo.admission_seconds else 0.0,
        "ledger_writes_per_pod": round(demo.status_writes_by_ledger() / max(1, peak), 4),
    }
