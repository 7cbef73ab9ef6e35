"""A real gunicorn ``spreadhook serve`` subprocess on loopback, with the embedded store, over verified TLS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

from harness.install import free_port
from spreadhook import certs
from spreadhook.demo import default_workload_spread

# A CloneSet at rest (its controller has reported every pod it wants): the tests send pods one by one, and a
# workload that says it has thousands of pods to come would have its first admission reserve slots for them.
CLONESET = {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "CloneSet",
            "metadata": {"name": "load-agent", "namespace": "default"}, "spec": {"replicas": 3300},
            "status": {"replicas": 3300}}


@dataclass
class Server:
    url: str
    conversion_url: str
    ca: str
    cert_dir: Path
    process: subprocess.Popen[bytes]
    log: Path

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE would otherwise replace the CA given here
        session.verify = self.ca
        return session

    def alive(self) -> bool:
        return self.process.poll() is None


def start_server(tmp: Path, seed_docs: list[dict]) -> Server:
    cert_dir = tmp / "certs"
    certs.write_bundle(cert_dir, certs.new_bundle())
    seed = tmp / "seed.yaml"
    seed.write_text(yaml.safe_dump_all(seed_docs))
    port, conversion_port = free_port(), free_port()
    log = tmp / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "spreadhook.cli", "serve", "--cert-dir", str(cert_dir), "--host", "127.0.0.1",
         "--port", str(port), "--store", "memory", "--seed", str(seed), "--threads", "64",
         "--conversion-port", str(conversion_port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"https://127.0.0.1:{port}", f"https://127.0.0.1:{conversion_port}", str(cert_dir / "ca.crt"),
                    cert_dir, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if server.session().get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"server not ready in 30s: {log.read_text()}")


def stop_server(server: Server) -> None:
    if server.alive():
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=25)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path, [default_workload_spread(), CLONESET])
    try:
        yield srv
    finally:
        stop_server(srv)
        text = srv.log.read_text()
        assert "Traceback" not in text, text
