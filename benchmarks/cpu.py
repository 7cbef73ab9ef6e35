"""CPU seconds spent by each part of the test cluster, so a burst can say where its time went.

On this 2-core machine a burst saturates the CPU: every component (kube-apiserver, etcd, the scheduler, kwok,
spreadhook, the benchmark's own clients) shares the same two cores, so pods/s falls by whatever extra CPU each
pod costs, wherever that cost is paid. Comparing CPU milliseconds per pod with the webhook, through it without a
WorkloadSpread, and without it tells the ledger's cost from the call's, and spreadhook's own from what it makes
kube-apiserver and etcd do. psutil reads the per-process times portably (the /proc parsing it replaces is
exactly the kind of code the project should not hand-roll).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import psutil

COMPONENTS = ("kube-apiserver", "etcd", "kube-controller-manager", "kube-scheduler", "kwok", "spreadhook",
              "nullhook", "clients")
"""What the per-pod figures are broken down by; "clients" is the benchmark process (its create threads),
"nullhook" the benchmark's do-nothing Go webhook (``benchmarks/nullhook``)."""

CpuTimes = dict[str, float]


def component_of(name: str, cmdline: list[str], pid: int, benchmark_pid: int) -> str | None:
    """Which component a process belongs to, from its name and command line (None: not the cluster's)."""
    if pid == benchmark_pid:
        return "clients"
    if any("spreadhook.cli" in arg or "spreadhook.server" in arg for arg in cmdline):
        return "spreadhook"  # the webhook, its gunicorn workers and the conversion process
    program = os.path.basename(cmdline[0]) if cmdline else name
    return next((c for c in COMPONENTS if program.startswith(c)), None)


def cpu_seconds() -> CpuTimes:
    """User plus system CPU seconds used so far by each component's live processes."""
    out = dict.fromkeys(COMPONENTS, 0.0)
    me = os.getpid()
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        times = proc.info.get("cpu_times")
        if times is None:  # gone, or not ours to read
            continue
        component = component_of(proc.info.get("name") or "", proc.info.get("cmdline") or [], proc.pid, me)
        if component is not None:
            out[component] += times.user + times.system
    return out


def ms_per_pod(after: Mapping[str, float], before: Mapping[str, float], pods: int) -> CpuTimes:
    """CPU milliseconds per pod spent by each component between two ``cpu_seconds`` readings.

    A process that started in between counts from zero; one that ended in between is missing from AFTER and
    its share is lost, so readings are taken around bursts during which the cluster's processes live on."""
    if pods <= 0:
        return dict.fromkeys(COMPONENTS, 0.0)
    return {c: max(0.0, after.get(c, 0.0) - before.get(c, 0.0)) * 1000 / pods for c in COMPONENTS}
