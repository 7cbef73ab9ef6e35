"""Burst benchmark: what the webhook costs a 3,000-pod CloneSet scale-out, measured against the bare control plane.

    python benchmarks/burst.py [--pods 3000] [--concurrency C] [--scale-in-to 1000]
                               [-o table|json] [--chart latency.png] [--topology run|split]
                               [--repeat K]

One command does everything on a fresh, private control plane (``harness.controlplane.up`` in a temporary
directory, always torn down): it installs spreadhook (``harness.install``), and for each concurrency C (16, 64
and 256 unless ``--concurrency`` names one):

1. **with the webhook**: in a fresh namespace, applies ``deploy/examples/bandwidth-packages.yaml``
   (WorkloadSpread first, then CloneSet ``load-agent``), scales the CloneSet to N and, playing the CloneSet
   controller (there is no Kruise controller in the test cluster), creates N pods owned by it (controller
   ownerReference with its uid, the template's labels, name ``load-agent-<random>``) from C concurrent
   clients. Then it waits until the reconciler has written ``controller.kubernetes.io/pod-deletion-cost`` on
   every pod and scales in to 1,000 as the CloneSet controller does: lowest cost first. Caps are counted on
   the pods, and the status is compared with what the pods say, after the burst and after the scale-in;
2. **through the webhook, with no WorkloadSpread**: the same burst into a fresh namespace that has the CloneSet
   but no WorkloadSpread, so each pod costs the admission call and nothing of the ledger: the floor that
   separates what the call costs on this machine from what the ledger costs;
3. **through a null webhook**: spreadhook stopped and ``benchmarks/nullhook`` (a Go webhook from the
   standard library that decodes each review and admits the pod unchanged, built here with ``go``)
   registered in its place, the same burst into a fresh namespace: what any webhook costs on this machine
   before it decides anything, the hardware's floor under the call floor of step 2; then once more with
   the null webhook answering every pod with the JSON patch spreadhook answers for a burst pod in the first
   bandwidth package (``spreadhooks_patch``): the floor of any webhook that makes spreadhook's change to the
   pods (kube-apiserver applying the patch, and every component handling the larger pods), in any language;
4. **without it**: the webhooks unregistered and no webhook process running (the bare control plane: no
   admission call, no watch, no reconciler writes), the same burst with the same client code
   (:func:`benchmarks.podcreate.create_pods`) into a fresh namespace.

The five bursts run in this order in odd repetitions and in the reverse order in even ones (``burst_order``):
the control plane drifts from one burst to the next, and a fixed order would charge the drift to the same
mode every time. spreadhook is stopped and unregistered for steps 3-4 and restarted and re-registered for 1-2.

**Where the time goes.** At C=64 and above every burst keeps both cores of this machine busy (the table's
"CPU cores busy" row: 2.0 in every mode), so pods/s is 2,000 divided by the CPU milliseconds all components
spend per pod, and the ratio with/without is the ratio of those sums ("ratio by CPU" row; it matched the
measured ratio within 0.01 in every C=64 and C=256 run of 2026-12-06). Any webhook is held to
``without / (without + what it adds per pod)``: kube-apiserver's side of the call, the webhook's own CPU, and
what its changes cost the other components. The CPU rows break that sum down by component.

``--topology split`` runs the webhook (``spreadhook serve``, whose store watches no pods) and the reconciler
(``spreadhook reconcile``) as two processes instead of the one ``spreadhook run`` that ``harness.install``
deploys: the difference between the two is what sharing one Python interpreter (one GIL) with the reconciler's
pod cache and syncs costs the admissions.

Latency percentiles come from the webhook's own histogram (``spreadhook_admission_duration_seconds``, buckets
from 0.5 ms): the delta over the burst, interpolated linearly inside the bucket that holds the percentile.
kube-apiserver's ``apiserver_admission_webhook_admission_duration_seconds`` (as seen by the caller, network
and TLS included; buckets 5, 25, 100 ms, ...) is printed beside it as a cross-check.

``-o json`` prints, for one C, exactly DESIGN.md's interface-contract object::

    {"with_webhook": {"pods_per_s", "p50_ms", "p95_ms", "p99_ms"}, "without_webhook": {"pods_per_s"},
     "ratio", "status_writes_per_pod", "conflicts", "violations"}

and, for several C or ``--repeat K`` > 1, a JSON **list** of such objects in ascending C, each with added
``"concurrency"`` and ``"repeat"`` keys (the contract's keys are untouched, so a consumer of one object reads
every element the same way). ``--repeat K`` measures each C K times in a row (all five bursts each time) and
prints the medians and ranges of the noisy figures after the table (to stderr with ``-o json``): on this
2-core machine one run's ratio moves by a third from one run to the next, with the bare control plane. Every
object also carries ``"details"``: the other figures of the table. ``status_writes_per_pod`` counts the
ledger's status writes (the webhook's group commits) per admitted pod; the table also shows every status PUT
seen by kube-apiserver, the reconciler's included.

The figures are reported, never asserted: the targets (throughput with the webhook >= 0.8 of bare at C=64,
p99 admission latency < 50 ms at C=64, < 0.2 status writes per admitted pod, zero violations) are printed
beside them. Exit 0 when the run completed, 1 when it could not (cluster, install, timeouts), 2 on bad flags.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import cpu, podcreate
from harness import controlplane as cpmod
from harness.bandwidth import (
    active,
    apply_scenario,
    list_pods,
    read_workload_spread,
    scale_cloneset,
    scenario_documents,
    status_mismatches,
    subset_counts,
    subset_limits,
)
from harness.build import go_executable
from harness.controlplane import ControlPlane
from harness.install import Webhook, apply_base, free_port, register, unregister
from spreadhook import certs, model, mutation

COST = "controller.kubernetes.io/pod-deletion-cost"
WEBHOOK_NAME = "mpod.spreadhook.io"
NULLHOOK_SOURCE = Path(__file__).resolve().parent / "nullhook"
DEFAULT_CONCURRENCY = (16, 64, 256)
TARGETS = {"ratio": 0.8, "p99_ms": 50.0, "status_writes_per_pod": 0.2, "violations": 0}
MODES = ("with", "no-spread", "null", "null+patch", "without")
"""The five bursts of one measurement, in the order of an odd repetition."""
SPREADHOOK_MODES = frozenset({"with", "no-spread"})
"""The bursts that go through spreadhook (the others need it stopped and unregistered)."""
Log = Callable[[str], None]


def _log(message: str) -> None:
    print(f"[burst] {message}", file=sys.stderr, flush=True)


class ServeOnly(Webhook):
    """``spreadhook serve`` (webhook only: its store watches no pods) plus a separate ``spreadhook reconcile``
    process: the split topology, to tell the webhook's own cost from that of sharing one Python process (one
    GIL) with the reconciler's pod cache and syncs."""

    reconciler: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: bool = True) -> None:
        env = self.env()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.server_command("serve"), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
            self.reconciler = subprocess.Popen([sys.executable, "-m", "spreadhook.cli", "reconcile"], stdout=log,
                                               stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if wait:
            self.wait_ready()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        super().stop(sig, timeout)
        reconciler, self.reconciler = self.reconciler, None
        if reconciler is not None and reconciler.poll() is None:
            os.killpg(reconciler.pid, sig)
            try:
                reconciler.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(reconciler.pid, signal.SIGKILL)
                reconciler.wait()


# ---------------------------------------------------------------------------------------------- the scenario


def cloneset_pod_factory(cloneset: Mapping[str, Any], run: str) -> podcreate.PodFactory:
    """Pods as Kruise's CloneSet controller makes them: template labels and spec, a controller
    ownerReference carrying the CloneSet's uid, ``load-agent-<random>`` names, instance-id label."""
    template = cloneset["spec"]["template"]
    owner = {"apiVersion": cloneset["apiVersion"], "kind": "CloneSet", "name": cloneset["metadata"]["name"],
             "uid": cloneset["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}

    def make(index: int) -> dict[str, Any]:
        suffix = hashlib.sha256(f"{run}-{index}".encode()).hexdigest()[:8]
        labels = {**template["metadata"].get("labels", {}), "apps.kruise.io/cloneset-instance-id": suffix}
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"load-agent-{suffix}", "labels": labels, "ownerReferences": [owner]},
                "spec": copy.deepcopy(template["spec"])}

    return make


def violations(counts: Mapping[str, int], limits: Mapping[str, int | None]) -> int:
    """Pods beyond a subset's maxReplicas, summed over subsets: the number that must always be zero."""
    return sum(max(0, counts.get(name, 0) - limit) for name, limit in limits.items() if limit is not None)


def wait_until(what: str, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float,
               interval: float = 1.0) -> tuple[Any, float]:
    """Poll PROBE until DONE(value); return (value, seconds waited). Raises TimeoutError with the last value."""
    started = time.monotonic()
    value = probe()
    while not done(value):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s; last: {str(value)[:600]}")
        time.sleep(interval)
        value = probe()
    return value, time.monotonic() - started


# ---------------------------------------------------------------------------------------------- metrics


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str, prefixes: Iterable[str]) -> Samples:
    """Prometheus text -> {(sample name, sorted labels): value}, only for families named by PREFIXES."""
    wanted = tuple(prefixes)
    out: Samples = {}
    lines = [line for line in text.splitlines() if line.startswith(wanted) or (
        line.startswith("#") and any(p in line for p in wanted))]
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def delta(after: Samples, before: Samples) -> Samples:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(samples: Samples, metric: str, /, **labels: str) -> float:
    """Sum of METRIC's samples whose labels include LABELS (positional-only: ``name`` is a label too)."""
    return sum(v for (n, ls), v in samples.items() if n == metric and labels.items() <= dict(ls).items())


def histogram(samples: Samples, metric: str, /, **labels: str) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) of METRIC_bucket summed over every series matching LABELS."""
    buckets: dict[float, float] = {}
    for (n, ls), value in samples.items():
        label_map = dict(ls)
        if n == f"{metric}_bucket" and labels.items() <= label_map.items():
            bound = float(label_map["le"])
            buckets[bound] = buckets.get(bound, 0.0) + value
    return sorted(buckets.items())


def quantile_ms(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The Q-quantile in ms, linear inside the bucket that holds it (as PromQL's histogram_quantile).
    Past the last finite bound the bound itself is returned: the histogram cannot say more."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower * 1000
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return (lower + (bound - lower) * fraction) * 1000
        lower, below = bound, cumulative
    return lower * 1000


WEBHOOK_PREFIXES = ("spreadhook_admission_duration_seconds", "spreadhook_admissions_total",
                    "spreadhook_ledger_status_writes_total", "spreadhook_ledger_conflicts_total",
                    "spreadhook_ledger_commit_batch_size", "spreadhook_ledger_write_duration_seconds",
                    "spreadhook_ledger_reserved_slots_total")
APISERVER_PREFIXES = ("apiserver_admission_webhook_admission_duration_seconds", "apiserver_request_total",
                      "apiserver_crd_conversion_webhook_duration_seconds")


def scrape_webhook(webhook: Webhook) -> Samples:
    reply = requests.get(f"{webhook.url}/metrics", verify=str(webhook.cert_dir / "ca.crt"), timeout=30)
    reply.raise_for_status()
    return parse_metrics(reply.text, WEBHOOK_PREFIXES)


def scrape_apiserver(cp: ControlPlane) -> Samples:
    return parse_metrics(cp.kubectl("get", "--raw", "/metrics", timeout=60).stdout, APISERVER_PREFIXES)


# ---------------------------------------------------------------------------------------------- one run


@dataclass
class Run:
    """Everything measured at one concurrency, with and without the webhook."""

    concurrency: int
    pods: int
    repeat: int = 1
    """Which repetition at this concurrency (``--repeat``), from 1."""
    with_pods_per_s: float = 0.0
    without_pods_per_s: float = 0.0
    idle_pods_per_s: float = 0.0
    """Through the webhook, but into a namespace without a WorkloadSpread: the admission call's own cost."""
    idle_p50_ms: float | None = None
    idle_p99_ms: float | None = None
    null_pods_per_s: float = 0.0
    """Through ``benchmarks/nullhook`` instead of spreadhook: what any webhook call costs this machine."""
    null_apiserver_p50_ms: float | None = None
    null_apiserver_p99_ms: float | None = None
    patching_pods_per_s: float = 0.0
    """Through ``benchmarks/nullhook -patch``: what any webhook that patches the pods as spreadhook does costs."""
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    apiserver_p50_ms: float | None = None
    apiserver_p99_ms: float | None = None
    client_p50_ms_with: float = 0.0
    client_p99_ms_with: float = 0.0
    client_p50_ms_without: float = 0.0
    client_p99_ms_without: float = 0.0
    errors_with: int = 0
    errors_without: int = 0
    first_error: str = ""
    admitted: int = 0
    fallbacks: int = 0
    """Pods the ledger could not record before the deadline, placed in the first subset without a max."""
    ledger_writes: int = 0
    reserved_taken: int = 0
    """Pods admitted on a slot reserved ahead, without waiting for a status write."""
    reserved_returned: int = 0
    status_puts: int = 0
    conflicts: int = 0
    apiserver_409: int = 0
    pod_patches: int = 0
    conversions: int = 0
    conversion_ms: float = 0.0
    mean_batch: float = 0.0
    write_p50_ms: float | None = None
    write_p99_ms: float | None = None
    violations: int = 0
    no_subset: int = 0
    per_subset: dict[str, int] = field(default_factory=dict)
    status_converged_s: float | None = None
    costs_written_s: float | None = None
    scale_in_s: float | None = None
    scale_in_order_ok: bool | None = None
    violations_after_scale_in: int = 0
    status_after_scale_in_s: float | None = None
    cpu_with: cpu.CpuTimes = field(default_factory=dict)
    """CPU ms per pod by component during the burst through the webhook (``benchmarks.cpu``)."""
    cpu_idle: cpu.CpuTimes = field(default_factory=dict)
    cpu_null: cpu.CpuTimes = field(default_factory=dict)
    cpu_patching: cpu.CpuTimes = field(default_factory=dict)
    cpu_without: cpu.CpuTimes = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def _to_bare(self, pods_per_s: float) -> float:
        return pods_per_s / self.without_pods_per_s if self.without_pods_per_s else 0.0

    @property
    def ratio(self) -> float:
        return self._to_bare(self.with_pods_per_s)

    @property
    def idle_ratio(self) -> float:
        return self._to_bare(self.idle_pods_per_s)

    @property
    def null_ratio(self) -> float:
        return self._to_bare(self.null_pods_per_s)

    @property
    def patching_ratio(self) -> float:
        return self._to_bare(self.patching_pods_per_s)

    @property
    def floor_ratio(self) -> float:
        """With the webhook against the patching null webhook: how far spreadhook is from what any webhook
        making its change to the pods would cost here."""
        return self.with_pods_per_s / self.patching_pods_per_s if self.patching_pods_per_s else 0.0

    def per_mode(self) -> list[tuple[cpu.CpuTimes, float]]:
        """Each burst's CPU ms per pod by component and its pods/s, in ``MODES`` order."""
        return [(self.cpu_with, self.with_pods_per_s), (self.cpu_idle, self.idle_pods_per_s),
                (self.cpu_null, self.null_pods_per_s), (self.cpu_patching, self.patching_pods_per_s),
                (self.cpu_without, self.without_pods_per_s)]

    @property
    def cpu_ratio(self) -> float | None:
        """Bare against with-webhook CPU milliseconds per pod, all components: the ratio pods/s must show when
        both bursts keep every core busy, since each pod then takes exactly its CPU's share of the machine."""
        with_ms, without_ms = sum(self.cpu_with.values()), sum(self.cpu_without.values())
        return without_ms / with_ms if with_ms and without_ms else None

    @property
    def status_writes_per_pod(self) -> float:
        return self.ledger_writes / self.admitted if self.admitted else 0.0

    def contract(self) -> dict[str, Any]:
        """DESIGN.md's JSON shape, plus ``concurrency``, ``repeat`` and ``details``."""
        return {
            "concurrency": self.concurrency,
            "repeat": self.repeat,
            "with_webhook": {"pods_per_s": round(self.with_pods_per_s, 1), "p50_ms": _r(self.p50_ms),
                             "p95_ms": _r(self.p95_ms), "p99_ms": _r(self.p99_ms)},
            "without_webhook": {"pods_per_s": round(self.without_pods_per_s, 1)},
            "ratio": round(self.ratio, 3),
            "status_writes_per_pod": round(self.status_writes_per_pod, 4),
            "conflicts": self.conflicts,
            "violations": self.violations + self.violations_after_scale_in,
            "details": {**{k: v for k, v in asdict(self).items() if k not in ("concurrency", "repeat")},
                        "cpu_ratio": _r(self.cpu_ratio), "burst_order": list(burst_order(self.repeat))},
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _fresh_namespace(cp: ControlPlane, prefix: str) -> str:
    namespace = f"{prefix}-{uuid.uuid4().hex[:5]}"
    podcreate.prepare_namespace(str(cp.kubeconfig), namespace)
    return namespace


def clean_namespace(cp: ControlPlane, api: client.ApiClient, namespace: str, timeout: float = 300.0) -> None:
    """Force-delete every pod (kwok need not finish them), delete the namespace, wait until it is gone, so
    the next measurement does not share the machine with this one's garbage."""
    core = client.CoreV1Api(api)
    # The answer lists every deleted pod (megabytes for 3,000) and is drained unparsed; a connection broken
    # while it streams (seen once) changes nothing, since the namespace deletion below removes what is left.
    with contextlib.suppress(client.ApiException, urllib3.exceptions.HTTPError):
        _drain(core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0, _request_timeout=timeout,
                                                     _preload_content=False))
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(namespace, propagation_policy="Background", grace_period_seconds=0)

    def gone() -> bool:
        try:
            core.read_namespace(namespace)
        except client.ApiException as err:
            return err.status == 404
        return False

    wait_until(f"namespace {namespace} deleted", gone, bool, timeout)


def burst_with_webhook(cp: ControlPlane, api: client.ApiClient, webhook: Webhook, run: Run, scale_in_to: int,
                       log: Log) -> None:
    """The measured burst through the webhook, the deletion-cost wait, the scale-in, and the checks."""
    ws_doc, _ = scenario_documents()
    limits = subset_limits(ws_doc)
    namespace = _fresh_namespace(cp, f"burst-wh-c{run.concurrency}")
    try:
        cloneset = apply_scenario(cp, namespace, with_spread=True)
        wait_until("WorkloadSpread in the webhook's cache", lambda: _webhook_sees(webhook, namespace), bool, 30, 0.2)
        scale_cloneset(cp, namespace, run.pods)
        hook_before, api_before, cpu_before = scrape_webhook(webhook), scrape_apiserver(cp), cpu.cpu_seconds()
        result = podcreate.create_pods(str(cp.kubeconfig), namespace, run.pods, run.concurrency,
                                       cloneset_pod_factory(cloneset, namespace))
        run.cpu_with = cpu.ms_per_pod(cpu.cpu_seconds(), cpu_before, run.pods)
        hook, apis = delta(scrape_webhook(webhook), hook_before), delta(scrape_apiserver(cp), api_before)
        burst_end = time.monotonic()
        run.with_pods_per_s, run.errors_with = result.pods_per_second, result.errors
        run.client_p50_ms_with, run.client_p99_ms_with = result.p50_ms, result.p99_ms
        run.first_error = result.first_error
        _read_figures(run, hook, apis)
        log(f"C={run.concurrency} with webhook: {result.summary()}")

        pods = list_pods(api, namespace)
        counts = subset_counts(pods)
        run.per_subset = dict(sorted(counts.items()))
        run.violations = violations(counts, limits)
        run.no_subset = counts.get("", 0)

        _, run.status_converged_s = _wait_status(api, namespace, limits)
        pods, _ = wait_until("pod-deletion-cost on every pod", lambda: list_pods(api, namespace),
                                  lambda ps: all(COST in (p["metadata"].get("annotations") or {}) for p in ps), 300)
        run.costs_written_s = time.monotonic() - burst_end
        log(f"C={run.concurrency}: status matched the pods after {run.status_converged_s:.1f}s, deletion costs "
            f"on all pods {run.costs_written_s:.1f}s after the burst")
        _scale_in(cp, api, namespace, pods, run, scale_in_to, limits, log)
    except (TimeoutError, client.ApiException, cpmod.KubectlError) as err:
        run.problems.append(f"with webhook: {err}"[:800])
        log(f"C={run.concurrency}: PROBLEM {err}"[:800])
    finally:
        clean_namespace(cp, api, namespace)


def _webhook_sees(webhook: Webhook, namespace: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        reply = requests.get(f"{webhook.url}/workloadspreads/{namespace}/load-agent",
                             verify=str(webhook.cert_dir / "ca.crt"), timeout=5)
        return reply.status_code == 200
    return False


def _wait_status(api: client.ApiClient, namespace: str, limits: Mapping[str, int | None]) -> tuple[Any, float]:
    def probe() -> list[str]:
        return status_mismatches(read_workload_spread(api, namespace), subset_counts(list_pods(api, namespace)),
                                 limits)

    return wait_until("status equal to the pods", probe, lambda problems: not problems, 180)


def _read_figures(run: Run, hook: Samples, apis: Samples) -> None:
    buckets = webhook_seen_buckets(hook)
    run.p50_ms, run.p95_ms, run.p99_ms = (quantile_ms(buckets, q) for q in (0.5, 0.95, 0.99))
    run.apiserver_p50_ms, run.apiserver_p99_ms = apiserver_seen_ms(apis)
    run.admitted = int(total(hook, "spreadhook_admissions_total", endpoint="pods", operation="CREATE",
                             outcome="mutated"))
    run.fallbacks = int(total(hook, "spreadhook_admissions_total", endpoint="pods", operation="CREATE",
                              outcome="fallback"))
    run.ledger_writes = int(total(hook, "spreadhook_ledger_status_writes_total"))
    run.reserved_taken = int(total(hook, "spreadhook_ledger_reserved_slots_total", event="taken"))
    run.reserved_returned = int(total(hook, "spreadhook_ledger_reserved_slots_total", event="returned"))
    run.conflicts = int(total(hook, "spreadhook_ledger_conflicts_total"))
    batches = total(hook, "spreadhook_ledger_commit_batch_size_count")
    run.mean_batch = total(hook, "spreadhook_ledger_commit_batch_size_sum") / batches if batches else 0.0
    writes = histogram(hook, "spreadhook_ledger_write_duration_seconds")
    run.write_p50_ms, run.write_p99_ms = quantile_ms(writes, 0.5), quantile_ms(writes, 0.99)
    status = {"resource": "workloadspreads", "subresource": "status", "verb": "PUT"}
    run.status_puts = int(total(apis, "apiserver_request_total", **status))
    run.apiserver_409 = int(total(apis, "apiserver_request_total", code="409", **status))
    run.pod_patches = int(total(apis, "apiserver_request_total", resource="pods", subresource="", verb="PATCH"))
    run.conversions = int(total(apis, "apiserver_crd_conversion_webhook_duration_seconds_count"))
    seconds = total(apis, "apiserver_crd_conversion_webhook_duration_seconds_sum")
    run.conversion_ms = seconds * 1000 / run.conversions if run.conversions else 0.0


def webhook_seen_buckets(hook: Samples) -> list[tuple[float, float]]:
    """The pod CREATE admissions in spreadhook's own histogram (fine buckets, from 0.5 ms)."""
    return histogram(hook, "spreadhook_admission_duration_seconds", endpoint="pods", operation="CREATE")


def apiserver_seen_ms(apis: Samples) -> tuple[float | None, float | None]:
    """p50 and p99 of the pod webhook's CREATE calls as kube-apiserver timed them (coarse buckets)."""
    server = histogram(apis, "apiserver_admission_webhook_admission_duration_seconds", name=WEBHOOK_NAME,
                       operation="CREATE")
    return quantile_ms(server, 0.5), quantile_ms(server, 0.99)


def _scale_in(cp: ControlPlane, api: client.ApiClient, namespace: str, pods: list[dict[str, Any]], run: Run,
              replicas: int, limits: Mapping[str, int | None], log: Log) -> None:
    """Delete the lowest-cost pods (ties: newest first, as ActivePods ranks them) until REPLICAS remain, from
    the same number of clients, then check who remains and that the status follows."""
    scale_cloneset(cp, namespace, replicas)
    live = [p for p in pods if active(p)]
    order = sorted(live, key=lambda p: (int(p["metadata"]["annotations"][COST]),
                                        _negated_time(p["metadata"].get("creationTimestamp", ""))))
    doomed = [p["metadata"]["name"] for p in order[: max(0, len(live) - replicas)]]
    core = client.CoreV1Api(api)
    started = time.monotonic()

    def delete(name: str) -> None:
        with contextlib.suppress(client.ApiException):
            _drain(core.delete_namespaced_pod(name, namespace, _preload_content=False))

    with ThreadPoolExecutor(max_workers=min(run.concurrency, 64)) as pool:
        list(pool.map(delete, doomed))
    remaining, _ = wait_until(f"{replicas} pods left", lambda: [p for p in list_pods(api, namespace) if active(p)],
                              lambda ps: len(ps) <= replicas, 300)
    run.scale_in_s = time.monotonic() - started
    counts = subset_counts(remaining)
    run.violations_after_scale_in = violations(counts, limits)
    run.scale_in_order_ok = counts == expected_after_scale_in(limits, replicas)
    _, run.status_after_scale_in_s = _wait_status(api, namespace, limits)
    log(f"C={run.concurrency}: scaled in to {replicas} in {run.scale_in_s:.1f}s, remaining per subset "
        f"{dict(sorted(counts.items()))}, order {'ok' if run.scale_in_order_ok else 'WRONG'}")


def _drain(response: Any) -> None:
    """Read the body before releasing the connection: a pooled connection with unread bytes answers the next
    request with them (urllib3 then reports a BadStatusLine)."""
    response.read()
    response.release_conn()


def _negated_time(stamp: str) -> str:
    """Newest first among equal costs: invert the ISO timestamp's digits so ascending order is descending."""
    return "".join(chr(ord("9") - ord(c) + ord("0")) if c.isdigit() else c for c in stamp)


def expected_after_scale_in(limits: Mapping[str, int | None], replicas: int) -> dict[str, int]:
    """Filling subsets in order to REPLICAS is what must remain when scale-in runs in reverse order."""
    left, out = replicas, {}
    for name, limit in limits.items():
        take = left if limit is None else min(limit, left)
        if take:
            out[name] = take
        left -= take
    return out


def burst_without_spread(cp: ControlPlane, api: client.ApiClient, prefix: str, run: Run
                         ) -> tuple[podcreate.PodCreateResult, cpu.CpuTimes]:
    """The same client code, pods and concurrency into a fresh namespace with the CloneSet but no
    WorkloadSpread: whatever is registered sees the pods, and no ledger or reconciler has work to do.
    Returns the clients' figures and the CPU ms per pod each component spent meanwhile."""
    namespace = _fresh_namespace(cp, f"{prefix}-c{run.concurrency}")
    try:
        cloneset = apply_scenario(cp, namespace, with_spread=False)
        scale_cloneset(cp, namespace, run.pods)
        before = cpu.cpu_seconds()
        result = podcreate.create_pods(str(cp.kubeconfig), namespace, run.pods, run.concurrency,
                                       cloneset_pod_factory(cloneset, namespace))
        return result, cpu.ms_per_pod(cpu.cpu_seconds(), before, run.pods)
    finally:
        clean_namespace(cp, api, namespace)


def burst_through_idle_webhook(cp: ControlPlane, api: client.ApiClient, webhook: Webhook, run: Run,
                               log: Log) -> None:
    """The webhook's floor: every pod goes through the admission call (kube-apiserver's webhook client, TLS,
    gunicorn, the owner lookup) but no WorkloadSpread selects it, so no ledger write or wait. What is lost
    here against the bare control plane is the call's own cost on this machine, and that of the process's
    pod watch sharing its two cores, not the ledger's."""
    before = scrape_webhook(webhook)
    result, run.cpu_idle = burst_without_spread(cp, api, "burst-idle", run)
    buckets = webhook_seen_buckets(delta(scrape_webhook(webhook), before))
    run.idle_pods_per_s = result.pods_per_second
    run.idle_p50_ms, run.idle_p99_ms = quantile_ms(buckets, 0.5), quantile_ms(buckets, 0.99)
    log(f"C={run.concurrency} through the webhook, no WorkloadSpread: {result.summary()}")


@dataclass
class NullWebhook(Webhook):
    """``benchmarks/nullhook`` serving on loopback with spreadhook's certificates, under spreadhook's
    registration (so kube-apiserver calls it exactly as it calls spreadhook)."""

    binary: Path = Path()
    name: str = "nullhook"
    patch: Path | None = None
    """A JSON patch file to answer every review with (``-patch``); None admits pods unchanged."""

    def server_command(self, subcommand: str = "run") -> list[str]:
        command = [str(self.binary), "-addr", f"127.0.0.1:{self.port}", "-cert", str(self.cert_dir / certs.TLS_CRT),
                   "-key", str(self.cert_dir / certs.TLS_KEY)]
        return command if self.patch is None else [*command, "-patch", str(self.patch)]


def spreadhooks_patch(api: client.ApiClient, path: Path) -> Path:
    """Write to PATH the JSON patch spreadhook answers for a burst pod put in the scenario's first subset:
    the pod as kube-apiserver hands it to webhooks (a server-side dry run of the burst's pod, defaulted and
    through the built-in admission plugins), mutated by spreadhook's own ``mutation.mutate``. Every burst pod
    has that shape (only the name and instance-id label differ), so the patch applies to each of them."""
    ws_doc, cloneset = scenario_documents()
    cloneset = {**cloneset, "metadata": {**cloneset["metadata"], "uid": str(uuid.uuid4())}}
    pod = cloneset_pod_factory(cloneset, "patch-probe")(0)
    answer = client.CoreV1Api(api).create_namespaced_pod("default", pod, dry_run="All", _preload_content=False)
    defaulted = json.loads(answer.data)
    ws = model.parse(ws_doc)
    _, patch = mutation.mutate(defaulted, ws, ws.subsets[0])
    path.write_text(json.dumps(patch))
    return path


def build_nullhook(directory: Path) -> Path:
    """``go build`` of benchmarks/nullhook (standard library only: no module download) into DIRECTORY."""
    binary = directory / "nullhook"
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod"}
    proc = subprocess.run([go_executable(), "build", "-o", str(binary), "."], cwd=NULLHOOK_SOURCE, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"go build of {NULLHOOK_SOURCE} failed: {proc.stderr[-2000:]}")
    return binary


def burst_through_null_webhook(cp: ControlPlane, api: client.ApiClient, null: NullWebhook, ca_pem: bytes, run: Run,
                               log: Log) -> None:
    """The hardware's floor: the same burst through a webhook that decides nothing and costs next to no CPU
    itself, so what is lost against the bare control plane is kube-apiserver's side of any webhook call (and,
    with ``null.patch``, of applying spreadhook's patch and handling the larger pods)."""
    null.start()
    try:
        register(cp, null.url, ca_pem)
        _wait_webhook_called(cp, api, registered=True)
        before = scrape_apiserver(cp)
        if null.patch is not None:
            result, run.cpu_patching = burst_without_spread(cp, api, "burst-patching", run)
            run.patching_pods_per_s = result.pods_per_second
            log(f"C={run.concurrency} through the null webhook answering spreadhook's patch: {result.summary()}")
            return
        result, run.cpu_null = burst_without_spread(cp, api, "burst-null", run)
        run.null_pods_per_s = result.pods_per_second
        run.null_apiserver_p50_ms, run.null_apiserver_p99_ms = apiserver_seen_ms(delta(scrape_apiserver(cp), before))
        log(f"C={run.concurrency} through the null webhook: {result.summary()}")
    finally:
        unregister(cp)
        null.stop()
    _wait_webhook_called(cp, api, registered=False)


def burst_without_webhook(cp: ControlPlane, api: client.ApiClient, run: Run, log: Log) -> None:
    """The baseline: the same client code, pods and concurrency, no webhook and no spreadhook process."""
    result, run.cpu_without = burst_without_spread(cp, api, "burst-bare", run)
    run.without_pods_per_s, run.errors_without = result.pods_per_second, result.errors
    run.client_p50_ms_without, run.client_p99_ms_without = result.p50_ms, result.p99_ms
    log(f"C={run.concurrency} without webhook: {result.summary()}")


def _wait_webhook_called(cp: ControlPlane, api: client.ApiClient, registered: bool, timeout: float = 30.0) -> None:
    """kube-apiserver picks webhook configuration changes up asynchronously: send dry-run CloneSet-owned pods
    until its own call counter for the pod webhook moves (registered) or stops moving (unregistered)."""
    _, cloneset = scenario_documents()
    probe_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "burst-probe", "ownerReferences": [
        {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet", "name": "none", "uid": str(uuid.uuid4()),
         "controller": True}]}, "spec": copy.deepcopy(cloneset["spec"]["template"]["spec"])}
    core = client.CoreV1Api(api)

    def called() -> bool:
        before = total(scrape_apiserver(cp), "apiserver_admission_webhook_admission_duration_seconds_count",
                       name=WEBHOOK_NAME)
        with contextlib.suppress(client.ApiException):
            _drain(core.create_namespaced_pod("default", probe_pod, dry_run="All", _preload_content=False))
        return total(scrape_apiserver(cp), "apiserver_admission_webhook_admission_duration_seconds_count",
                     name=WEBHOOK_NAME) > before

    wait_until(f"webhook {'registration' if registered else 'removal'} seen by kube-apiserver", called,
               lambda yes: yes == registered, timeout, 0.5)


def burst_order(repeat: int) -> tuple[str, ...]:
    """The order of the five bursts in repetition REPEAT (from 1): as ``MODES`` in odd ones, reversed in even
    ones. The control plane does not stay the same from burst to burst (etcd's history grows, earlier bursts'
    garbage is still being collected), and a fixed order hands whatever that drift costs to the same mode every
    time; alternating it, an even ``--repeat`` gives every mode each position once per pair (an ABBA design)."""
    return MODES if repeat % 2 else MODES[::-1]


def measure(concurrencies: list[int], pods: int, scale_in_to: int, log: Log = _log, *, split: bool = False,
            repeat: int = 1) -> list[Run]:
    """Bring a control plane up, run every C with and without the webhook REPEAT times in a row, always tear
    it down. SPLIT runs the webhook and the reconciler as two processes (``serve`` + ``reconcile``) instead
    of one ``run``."""
    directory = Path(tempfile.mkdtemp(prefix="spreadhook-burst-"))
    runs: list[Run] = []
    webhook: Webhook | None = None
    try:
        cp = cpmod.up(directory / "cp", log=log)
        api = cp.api_client(pool_maxsize=64)
        # install_spreadhook's steps, holding the process from its start so the finally below can stop it
        workdir = directory / "spreadhook"
        workdir.mkdir()
        apply_base(cp)
        patch = spreadhooks_patch(api, workdir / "spreadhook-patch.json")
        ca_pem = certs.load_or_create(workdir / "certs", extra_sans=("127.0.0.1",)).ca_bundle_pem()
        webhook = (ServeOnly if split else Webhook)(cp, workdir, free_port(), workdir / "certs")
        webhook.start()
        register(cp, webhook.url, ca_pem, conversion_url=webhook.conversion_url)
        binary = build_nullhook(workdir)
        null = NullWebhook(cp, workdir, free_port(), workdir / "certs", binary=binary)
        patching = NullWebhook(cp, workdir, free_port(), workdir / "certs", binary=binary, name="nullhook-patching",
                               patch=patch)

        def spreadhook_registered(registered: bool) -> None:
            if registered and not webhook.alive():
                webhook.start()
                register(cp, webhook.url, ca_pem, conversion_url=webhook.conversion_url)
            elif not registered and webhook.alive():
                unregister(cp)
                webhook.stop()
            _wait_webhook_called(cp, api, registered=registered)

        for concurrency, attempt in ((c, k) for c in concurrencies for k in range(1, repeat + 1)):
            run = Run(concurrency, pods, attempt)
            runs.append(run)
            for mode in burst_order(attempt):
                spreadhook_registered(mode in SPREADHOOK_MODES)
                if mode == "with":
                    burst_with_webhook(cp, api, webhook, run, scale_in_to, log)
                elif mode == "no-spread":
                    burst_through_idle_webhook(cp, api, webhook, run, log)
                elif mode in ("null", "null+patch"):
                    burst_through_null_webhook(cp, api, null if mode == "null" else patching, ca_pem, run, log)
                else:
                    burst_without_webhook(cp, api, run, log)
        if webhook.alive():
            webhook.stop()
        if "Traceback" in webhook.log.read_text(errors="replace"):
            for run in runs:
                run.problems.append(f"Traceback in {webhook.log}")
        api.close()
    finally:
        if webhook is not None:
            webhook.stop()
        with contextlib.suppress(Exception):
            cpmod.down(directory / "cp", log=log)
        shutil.rmtree(directory, ignore_errors=True)
    return runs


# ---------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(runs: list[Run]) -> str:
    """One column per concurrency; the targets beside the rows they apply to."""
    rows: list[tuple[str, list[str], str]] = [
        ("pods created", [f"{r.pods}" for r in runs], ""),
        ("pods/s with webhook", [_fmt(r.with_pods_per_s) for r in runs], ""),
        ("pods/s without webhook", [_fmt(r.without_pods_per_s) for r in runs], ""),
        ("ratio with/without", [_fmt(r.ratio, 3) for r in runs], ">= 0.8 at C=64"),
        ("pods/s through webhook, no spread", [_fmt(r.idle_pods_per_s) for r in runs], "the call's floor"),
        ("ratio no-spread/without", [_fmt(r.idle_ratio, 3) for r in runs], ""),
        ("no-spread admission p50/p99 ms", [f"{_fmt(r.idle_p50_ms, 2)}/{_fmt(r.idle_p99_ms, 2)}" for r in runs],
         "webhook histogram"),
        ("pods/s through a null Go webhook", [_fmt(r.null_pods_per_s) for r in runs], "any webhook's floor"),
        ("ratio null/without", [_fmt(r.null_ratio, 3) for r in runs], ""),
        ("pods/s through it answering spreadhook's patch", [_fmt(r.patching_pods_per_s) for r in runs],
         "the floor of spreadhook's change"),
        ("ratio patching null/without", [_fmt(r.patching_ratio, 3) for r in runs], ""),
        ("ratio with/patching null", [_fmt(r.floor_ratio, 3) for r in runs], "spreadhook against the floor"),
        ("apiserver-seen null p50/p99 ms",
         [f"{_fmt(r.null_apiserver_p50_ms)}/{_fmt(r.null_apiserver_p99_ms)}" for r in runs], "coarse buckets"),
        ("webhook admission p50 ms", [_fmt(r.p50_ms, 2) for r in runs], ""),
        ("webhook admission p95 ms", [_fmt(r.p95_ms, 2) for r in runs], ""),
        ("webhook admission p99 ms", [_fmt(r.p99_ms, 2) for r in runs], "< 50 at C=64"),
        ("apiserver-seen webhook p50 ms", [_fmt(r.apiserver_p50_ms) for r in runs], "coarse buckets"),
        ("apiserver-seen webhook p99 ms", [_fmt(r.apiserver_p99_ms) for r in runs], "coarse buckets"),
        ("client create p50 ms with", [_fmt(r.client_p50_ms_with) for r in runs], ""),
        ("client create p99 ms with", [_fmt(r.client_p99_ms_with) for r in runs], ""),
        ("client create p50 ms without", [_fmt(r.client_p50_ms_without) for r in runs], ""),
        ("client create p99 ms without", [_fmt(r.client_p99_ms_without) for r in runs], ""),
        ("create errors with/without", [f"{r.errors_with}/{r.errors_without}" for r in runs], ""),
        ("pods admitted into a subset", [f"{r.admitted}" for r in runs], ""),
        ("pods past the ledger deadline", [f"{r.fallbacks}" for r in runs], "put where no max applies"),
        ("ledger status writes", [f"{r.ledger_writes}" for r in runs], ""),
        ("pods on slots reserved ahead (returned unused)",
         [f"{r.reserved_taken} ({r.reserved_returned})" for r in runs], "no write waited for"),
        ("ledger writes per admitted pod", [_fmt(r.status_writes_per_pod, 4) for r in runs], "< 0.2"),
        ("mean group-commit batch", [_fmt(r.mean_batch) for r in runs], ""),
        ("ledger write p50/p99 ms", [f"{_fmt(r.write_p50_ms)}/{_fmt(r.write_p99_ms)}" for r in runs], ""),
        ("all status PUTs (apiserver)", [f"{r.status_puts}" for r in runs], "ledger + reconciler"),
        ("pod PATCHes during the burst", [f"{r.pod_patches}" for r in runs], "reconciler"),
        ("CRD conversions (mean ms)", [f"{r.conversions} ({r.conversion_ms:.1f})" for r in runs], ""),
        ("409 conflicts (ledger/apiserver)", [f"{r.conflicts}/{r.apiserver_409}" for r in runs], ""),
        ("cap violations after burst", [f"{r.violations}" for r in runs], "0"),
        ("pods in no subset", [f"{r.no_subset}" for r in runs], ""),
        ("status = pods after (s)", [_fmt(r.status_converged_s) for r in runs], ""),
        ("deletion costs on all pods (s)", [_fmt(r.costs_written_s) for r in runs], "after burst end"),
        ("scale-in duration (s)", [_fmt(r.scale_in_s) for r in runs], ""),
        ("scale-in order (reverse subsets)", ["ok" if r.scale_in_order_ok else "-" if r.scale_in_order_ok is None
                                              else "WRONG" for r in runs], ""),
        ("cap violations after scale-in", [f"{r.violations_after_scale_in}" for r in runs], "0"),
        ("status = pods after scale-in (s)", [_fmt(r.status_after_scale_in_s) for r in runs], ""),
        *_cpu_rows(runs),
    ]
    header = ("concurrency C", [_column(r, runs) for r in runs], "target")
    width0 = max(len(r[0]) for r in [header, *rows])
    widths = [max(len(header[1][i]), *(len(r[1][i]) for r in rows)) for i in range(len(runs))]
    lines = []
    for label, cells, note in [header, *rows]:
        lines.append("  ".join([label.ljust(width0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True)),
                                note]).rstrip())
    for run in runs:
        lines.extend(f"C={_column(run, runs)}: problem: {p}" for p in run.problems)
        if run.first_error:
            lines.append(f"C={_column(run, runs)}: first create error: {run.first_error}")
    return "\n".join(lines)


def _column(run: Run, runs: list[Run]) -> str:
    """C, and which repetition when C was measured more than once."""
    repeated = sum(r.concurrency == run.concurrency for r in runs) > 1
    return f"{run.concurrency} #{run.repeat}" if repeated else str(run.concurrency)


def medians(runs: list[Run]) -> str:
    """For each C measured more than once: the median and range over the repetitions of the figures whose
    single runs are too noisy to judge by (the bare control plane alone ran at 98-392 pods/s at C=64 on
    different days of this machine), or "" when no C was repeated."""
    lines = []
    for concurrency in dict.fromkeys(r.concurrency for r in runs):
        same = [r for r in runs if r.concurrency == concurrency]
        if len(same) < 2:
            continue
        lines.append(f"C={concurrency}, {len(same)} runs: median (min-max)")
        for label, values in (
            ("pods/s with webhook", [r.with_pods_per_s for r in same]),
            ("pods/s without webhook", [r.without_pods_per_s for r in same]),
            ("ratio with/without", [r.ratio for r in same]),
            ("ratio no-spread/without", [r.idle_ratio for r in same]),
            ("ratio patching null/without", [r.patching_ratio for r in same]),
            ("ratio with/patching null", [r.floor_ratio for r in same]),
            ("ratio by CPU (without/with ms per pod)", [r.cpu_ratio for r in same if r.cpu_ratio is not None]),
            ("webhook admission p99 ms", [r.p99_ms for r in same if r.p99_ms is not None]),
        ):
            if values:
                lines.append(f"  {label}: {statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g})")
    return "\n".join(lines)


def _cpu_rows(runs: list[Run]) -> list[tuple[str, list[str], str]]:
    """CPU ms per pod by component, as with / no-spread / null / null+patch / without: on a saturated machine
    pods/s falls by the extra CPU each pod costs, so these say which component pays for the webhook."""
    def cell(r: Run, component: str | None) -> str:
        return "/".join(_fmt(sum(t.values()) if component is None else t.get(component), 1) if t else "-"
                        for t, _ in r.per_mode())

    def cores(r: Run) -> str:
        return "/".join(_fmt(sum(t.values()) * rate / 1000, 2) if t else "-" for t, rate in r.per_mode())

    columns = "/".join(MODES)
    rows = [(f"CPU ms/pod {c}", [cell(r, c) for r in runs], columns) for c in cpu.COMPONENTS]
    return [*rows, ("CPU ms/pod, all", [cell(r, None) for r in runs], columns),
            ("CPU cores busy", [cores(r) for r in runs], columns + "; 2.0 = this machine saturated"),
            ("ratio by CPU (without/with ms per pod)", [_fmt(r.cpu_ratio, 3) for r in runs],
             "= ratio with/without when both saturate"),
            ("burst order", [" ".join(burst_order(r.repeat)) for r in runs], "")]


def chart(runs: list[Run], path: Path) -> None:
    """Latency percentiles (webhook histogram, client-side with and without) against concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r.concurrency for r in runs]
    fig, ax = plt.subplots(figsize=(8, 5))
    for label, values, style in (
        ("webhook p50", [r.p50_ms for r in runs], "o-"),
        ("webhook p95", [r.p95_ms for r in runs], "o-"),
        ("webhook p99", [r.p99_ms for r in runs], "o-"),
        ("client create p50 (with)", [r.client_p50_ms_with for r in runs], "s--"),
        ("client create p99 (with)", [r.client_p99_ms_with for r in runs], "s--"),
        ("client create p50 (bare)", [r.client_p50_ms_without for r in runs], "^:"),
        ("client create p99 (bare)", [r.client_p99_ms_without for r in runs], "^:"),
    ):
        ax.plot(xs, [v if v is not None else float("nan") for v in values], style, label=label)
    ax.axhline(TARGETS["p99_ms"], color="grey", linewidth=0.8, linestyle="-.", label="p99 target (50 ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("concurrent clients C")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"spreadhook burst: {runs[0].pods} CloneSet pods, latency percentiles")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=3000, help="pods per burst (default 3000)")
    parser.add_argument("--concurrency", type=int, default=None, help="one C (default: 16, 64 and 256)")
    parser.add_argument("--scale-in-to", type=int, default=1000, help="replicas after the scale-in (default 1000)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    parser.add_argument("--chart", type=Path, default=None, help="write a PNG of latency against concurrency")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each C this many times in a row and print the medians (default 1)")
    parser.add_argument("--topology", choices=("run", "split"), default="run",
                        help="run: one `spreadhook run` process (default, what harness.install deploys); split: "
                             "`spreadhook serve` and `spreadhook reconcile` as two processes")
    args = parser.parse_args(argv)
    if args.pods <= 0 or args.repeat <= 0 or (args.concurrency is not None and args.concurrency <= 0) or not (
            0 <= args.scale_in_to <= args.pods):
        print("--pods, --repeat and --concurrency must be > 0, and 0 <= --scale-in-to <= --pods", file=sys.stderr)
        return 2
    concurrencies = [args.concurrency] if args.concurrency else list(DEFAULT_CONCURRENCY)
    try:
        runs = measure(concurrencies, args.pods, args.scale_in_to, split=args.topology == "split",
                       repeat=args.repeat)
    except (cpmod.ControlPlaneError, cpmod.KubectlError, RuntimeError, TimeoutError, OSError,
            requests.RequestException) as err:
        print(f"burst benchmark failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
              file=sys.stderr)
        return 1
    if args.output == "json":
        objects = [r.contract() for r in runs]
        print(json.dumps(objects[0] if len(objects) == 1 else objects, indent=2))
    else:
        print(table(runs))
    summary = medians(runs)
    if summary:  # beside the JSON, not inside it: the contract's shape stays one object per run
        print(summary, file=sys.stderr if args.output == "json" else sys.stdout)
    if args.chart is not None:
        chart(runs, args.chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
