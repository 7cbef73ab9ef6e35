"""Fixtures for the fault suite: spreadhook installed on the real control plane as one or more ``spreadhook run``
processes, optionally behind a round-robin proxy, and torn down so that nothing outlives the test.

The suite uses the session's control plane (``harness.pytest_plugin``) except where a test breaks the control
plane itself (the API server restart), which gets a private one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from harness.bandwidth import MATCHED
from harness.controlplane import ControlPlane
from harness.install import NAMESPACE, Webhook, apply_base, free_port, register, unregister
from harness.tcpproxy import RoundRobinProxy
from spreadhook import certs

LEASE = "spreadhook-reconciler"


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains TEXT: how a leaked ``spreadhook run`` (or its worker) is found."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
    return found


def _process_group(pid: int) -> int | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    return None


@dataclass
class Spreadhook:
    """spreadhook as a small deployment on one machine: replicas sharing one cert dir, one registration."""

    cp: ControlPlane
    workdir: Path
    replicas: list[Webhook] = field(default_factory=list)
    proxy: RoundRobinProxy | None = None
    failure_policy: str | None = None
    stopped: bool = False

    @property
    def cert_dir(self) -> Path:
        return self.workdir / "certs"

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.proxy.port}" if self.proxy is not None else self.replicas[0].url

    def register(self, ca_pem: bytes | None = None) -> None:
        register(self.cp, self.url, ca_pem or (self.cert_dir / "ca.crt").read_bytes(), self.failure_policy,
                 conversion_url=self.replicas[0].conversion_url if self.replicas else None)

    def wait_mutating(self, api: client.ApiClient, namespace: str, cloneset: dict[str, Any],
                      timeout: float = 30.0) -> None:
        """Until a dry-run pod of the CloneSet comes back with a subset: the API server uses the registration
        and the webhook's cache holds the WorkloadSpread. Dry-run reserves nothing (sideEffects NoneOnDryRun)."""
        from tests.e2e.scenario import cloneset_pod

        core = client.CoreV1Api(api)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(client.ApiException):
                pod = core.create_namespaced_pod(namespace, cloneset_pod(cloneset), dry_run="All",
                                                 _preload_content=False)
                if MATCHED in (json.loads(pod.data)["metadata"].get("annotations") or {}):
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the webhook did not mutate a dry-run pod within {timeout}s")
            time.sleep(0.3)

    def leader(self) -> Webhook | None:
        """The replica whose process holds the reconciler Lease (identity ``<hostname>-<worker pid>``)."""
        proc = self.cp.kubectl("-n", NAMESPACE, "get", "lease", LEASE, "-o", "json", check=False)
        if proc.returncode != 0:
            return None
        spec = json.loads(proc.stdout).get("spec") or {}
        renewed = spec.get("renewTime")
        if renewed and dt.datetime.fromisoformat(renewed.replace("Z", "+00:00")) + dt.timedelta(
                seconds=spec.get("leaseDurationSeconds") or 15) < dt.datetime.now(dt.UTC):
            return None
        match = re.fullmatch(rf"{re.escape(socket.gethostname())}-(\d+)", spec.get("holderIdentity") or "")
        if match is None:
            return None
        group = _process_group(int(match.group(1)))
        return next((r for r in self.replicas if r.alive() and r.process is not None and r.process.pid == group),
                    None)

    def wait_leader(self, other_than: Webhook | None = None, timeout: float = 60.0) -> Webhook:
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None and leader is not other_than:
                return leader
            if time.monotonic() > deadline:
                raise AssertionError(f"no reconciler leader (other than {other_than and other_than.name}) "
                                     f"within {timeout}s")
            time.sleep(0.5)

    def metrics(self, replica: Webhook) -> str:
        import requests

        return requests.get(f"{replica.url}/metrics", verify=str(self.cert_dir / "ca.crt"), timeout=10).text

    def logs(self) -> str:
        return "\n".join(r.log.read_text(errors="replace") for r in self.replicas if r.log.exists())

    def stop(self) -> None:
        """Unregister, stop the proxy and every replica (SIGTERM, then SIGKILL), forget the Lease. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(Exception):
            unregister(self.cp)
        if self.proxy is not None:
            self.proxy.stop()
        for replica in self.replicas:
            replica.stop()
        with contextlib.suppress(Exception):
            self.cp.kubectl("-n", NAMESPACE, "delete", "lease", LEASE, "--ignore-not-found", timeout=30)

    def assert_clean_shutdown(self) -> None:
        """Stop everything, then: no process left that runs from this install, no Traceback in any log."""
        self.stop()
        leaked = []
        deadline = time.monotonic() + 10
        while (leaked := processes_mentioning(str(self.workdir))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert leaked == [], f"processes outlived the test: {leaked}"
        logs = self.logs()
        assert "Traceback" not in logs, logs[logs.index("Traceback") - 2000: logs.index("Traceback") + 3000]


SpreadhookFactory = Callable[..., Spreadhook]


def install(cp: ControlPlane, workdir: Path, *, replicas: int = 1, proxy: bool = False,
            failure_policy: str | None = None, keep: list[Spreadhook] | None = None) -> Spreadhook:
    """CRDs, RBAC and certificates as ``harness.install`` makes them, REPLICAS ``spreadhook run`` processes
    sharing the cert dir, a proxy in front when asked, and the registration pointing at it. Each process is
    appended to the returned object before it starts, so a failed start is still stopped by its teardown."""
    workdir.mkdir(parents=True, exist_ok=True)
    apply_base(cp)
    cp.kubectl("-n", NAMESPACE, "delete", "lease", LEASE, "--ignore-not-found")
    certs.load_or_create(workdir / "certs", extra_sans=("127.0.0.1",))
    sh = Spreadhook(cp, workdir, failure_policy=failure_policy)
    if keep is not None:
        keep.append(sh)
    for index in range(replicas):
        replica = Webhook(cp, workdir, free_port(), workdir / "certs",
                          name="spreadhook" if index == 0 else f"spreadhook-{index + 1}")
        sh.replicas.append(replica)
        replica.start()
    if proxy:
        # harness.tcpproxy: a connection routed to a killed replica is reset, as through a Service whose
        # endpoint is not yet removed; the API server then applies the failurePolicy.
        sh.proxy = RoundRobinProxy([r.port for r in sh.replicas]).start()
    sh.register()
    return sh


@pytest.fixture
def spreadhook(controlplane: ControlPlane, tmp_path: Path) -> Iterator[SpreadhookFactory]:
    """``spreadhook(replicas=2, proxy=True, failure_policy="Fail")`` installs on the session's cluster; always
    stopped and unregistered afterwards."""
    made: list[Spreadhook] = []

    def make(**options: Any) -> Spreadhook:
        return install(controlplane, tmp_path / f"spreadhook-{len(made)}", keep=made, **options)

    yield make
    for sh in made:
        sh.stop()




def restart_apiserver(cp: ControlPlane, down_seconds: float = 2.0) -> float:
    """Crash kube-apiserver (SIGKILL: a graceful SIGTERM drains for a minute, longer than the whole burst), keep
    it down DOWN_SECONDS, and start it again with the very command line, working directory, environment and log
    kwokctl gave it; the pid file is updated so ``harness.controlplane.down`` stops the new process. Returns
    how long it was unreachable."""
    pid = cp.pids()["kube-apiserver"]
    argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    cwd = os.readlink(f"/proc/{pid}/cwd")
    environ = dict(line.split("=", 1) for line in Path(f"/proc/{pid}/environ").read_bytes().decode(
        errors="replace").split("\0") if "=" in line)
    started = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _process_group(pid) is not None:
        assert time.monotonic() < deadline, f"kube-apiserver {pid} still there 30 s after SIGKILL"
        time.sleep(0.05)
    time.sleep(down_seconds)
    log_file = cp.logs_dir / "kube-apiserver.log"
    for _attempt in range(10):  # the listening port may take a moment to be free again
        with log_file.open("ab") as log:
            process = subprocess.Popen(argv, cwd=cwd, env=environ, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        (cp.cluster_dir / "pids" / "kube-apiserver.pid").write_text(str(process.pid))
        deadline = time.monotonic() + 120
        while process.poll() is None and cp.kubectl("get", "--raw=/readyz", check=False, timeout=10).returncode:
            assert time.monotonic() < deadline, "kube-apiserver not ready 120 s after its restart"
            time.sleep(0.2)
        if process.poll() is None:
            return time.monotonic() - started
        time.sleep(1.0)
    tail = log_file.read_text(errors="replace")[-3000:]
    raise AssertionError(f"kube-apiserver kept exiting after its restart:\n{tail}")


__all__ = ["Spreadhook", "install", "processes_mentioning", "restart_apiserver"]
