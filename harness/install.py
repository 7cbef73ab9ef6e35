"""Install spreadhook into a running test control plane, the way a user tries it on one machine.

The CRD, namespace and RBAC come from ``deploy/`` through the real ``kubectl``; the webhook and reconciler
run as local processes (``spreadhook run``); the webhook configurations are ``deploy/webhooks.yaml`` with
each ``clientConfig.service`` rewritten into a ``url`` on 127.0.0.1 and the generated CA bundle, as
envtest does for Go operators. The CRD's conversion webhook is pointed at the same place.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from harness.controlplane import ControlPlane, repo_root
from spreadhook import certs

DEPLOY = repo_root() / "deploy"
NAMESPACE = "spreadhook-system"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Webhook:
    """One ``spreadhook run`` process serving on loopback."""

    cp: ControlPlane
    workdir: Path
    port: int
    cert_dir: Path
    name: str = "spreadhook"
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    conversion_port: int = field(default_factory=lambda: free_port())

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def conversion_url(self) -> str:
        return f"https://127.0.0.1:{self.conversion_port}"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def env(self) -> dict[str, str]:
        """The cluster's kubeconfig and PATH, the lease namespace, and this checkout importable."""
        env = {**self.cp.env(), "POD_NAMESPACE": NAMESPACE, **self.extra_env}
        env["PYTHONPATH"] = str(repo_root()) + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def server_command(self, subcommand: str = "run") -> list[str]:
        """``spreadhook run`` (or ``serve``) on this loopback port, with the conversion process beside it."""
        return [sys.executable, "-m", "spreadhook.cli", subcommand, "--cert-dir", str(self.cert_dir),
                "--host", "127.0.0.1", "--port", str(self.port), "--store", "kube",
                "--conversion-port", str(self.conversion_port)]

    def start(self, *, wait: bool = True) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.server_command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env(), start_new_session=True)
        (self.workdir / f"{self.name}.pid").write_text(str(self.process.pid))
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                reply = requests.get(f"{self.url}/readyz", verify=str(self.cert_dir / "ca.crt"), timeout=2)
                if reply.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: no graceful shutdown."""
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def apply_base(cp: ControlPlane) -> None:
    """Namespace, CRD, RBAC and flow control from deploy/, and the upstream CloneSet CRD for the CloneSet
    scenarios."""
    for name in ("namespace.yaml", "crd.yaml", "rbac.yaml", "flowcontrol.yaml"):
        if name == "crd.yaml":
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_crd_keeping_url(cp))
        else:
            cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(DEPLOY / name))
    cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(DEPLOY / "testing" / "cloneset-crd.yaml"))
    cp.kubectl("wait", "--for=condition=Established", "crd/workloadspreads.apps.kruise.io",
               "crd/clonesets.apps.kruise.io", "--timeout=60s")


def _crd_keeping_url(cp: ControlPlane) -> str:
    """deploy/crd.yaml, but when an earlier install already pointed the conversion webhook at a ``url``, that
    ``url`` (and CA bundle) instead of the ``service``: re-applying the ``service`` next to the ``url`` that
    ``register`` patched in would make the CRD invalid ("exactly one of url or service"), so a second install
    into the same cluster (``up --spreadhook`` again, a reused test cluster) would fail."""
    doc = yaml.safe_load((DEPLOY / "crd.yaml").read_text())
    current = cp.kubectl("get", "crd", "workloadspreads.apps.kruise.io", "-o", "json", check=False)
    if current.returncode == 0:
        existing = json.loads(current.stdout)["spec"].get("conversion", {}).get("webhook", {}).get("clientConfig", {})
        if existing.get("url"):
            doc["spec"]["conversion"]["webhook"]["clientConfig"] = {
                key: existing[key] for key in ("url", "caBundle") if key in existing}
    return json.dumps(doc)


def webhook_configurations(url: str, ca_pem: bytes, failure_policy: str | None = None) -> list[dict[str, Any]]:
    """deploy/webhooks.yaml with ``service`` references turned into loopback URLs carrying the CA bundle."""
    documents = [d for d in yaml.safe_load_all((DEPLOY / "webhooks.yaml").read_text()) if d]
    ca_b64 = base64.b64encode(ca_pem).decode()
    out = []
    for doc in documents:
        doc = copy.deepcopy(doc)
        for hook in doc.get("webhooks", []):
            path = hook["clientConfig"]["service"].get("path", "/")
            hook["clientConfig"] = {"url": f"{url}{path}", "caBundle": ca_b64}
            if failure_policy is not None and hook["name"] != "vworkloadspread.spreadhook.io":
                hook["failurePolicy"] = failure_policy
        out.append(doc)
    return out


def register(cp: ControlPlane, url: str, ca_pem: bytes, failure_policy: str | None = None,
             conversion_url: str | None = None) -> None:
    """Apply the webhook configurations for ``url``; with ``conversion_url``, also point the CRD's
    conversion webhook there (the dedicated conversion listener, see ``ServeOptions.conversion_port``)."""
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(webhook_configurations(url, ca_pem, failure_policy)))
    if conversion_url is None:
        return
    conversion = {"spec": {"conversion": {"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"],
        "clientConfig": {"url": f"{conversion_url}/convert-workloadspreads", "service": None,
                         "caBundle": base64.b64encode(ca_pem).decode()}}}}}
    cp.kubectl("patch", "crd", "workloadspreads.apps.kruise.io", "--type=merge", "-p", yaml.safe_dump(conversion))


def unregister(cp: ControlPlane) -> None:
    cp.kubectl("delete", "mutatingwebhookconfiguration/spreadhook", "validatingwebhookconfiguration/spreadhook",
               "--ignore-not-found")


def install_spreadhook(cp: ControlPlane, workdir: Path, *, failure_policy: str | None = None) -> Webhook:
    """Everything ``scripts/controlplane up --spreadhook`` does: CRDs and RBAC, certificates, one
    ``spreadhook run`` process (webhook and leader-elected reconciler), webhook registration."""
    workdir.mkdir(parents=True, exist_ok=True)
    apply_base(cp)
    cert_dir = workdir / "certs"
    bundle = certs.load_or_create(cert_dir, extra_sans=("127.0.0.1",))
    webhook = Webhook(cp, workdir, free_port(), cert_dir)
    webhook.start()
    try:
        register(cp, webhook.url, bundle.ca_bundle_pem(), failure_policy, conversion_url=webhook.conversion_url)
    except BaseException:
        webhook.stop()  # nobody else holds the process: do not leak it
        raise
    return webhook


def second_replica(first: Webhook, name: str = "spreadhook-2") -> Webhook:
    """Another process with the same certificates; the API server reaches it only if registered."""
    replica = Webhook(first.cp, first.workdir, free_port(), first.cert_dir, name=name)
    replica.start()
    return replica
