"""pytest fixtures for the real control plane (register with `pytest_plugins = ["harness.pytest_plugin"]`).

* ``controlplane`` (session): starts etcd, kube-apiserver, kube-controller-manager,
  kube-scheduler and kwok once per session through :func:`harness.controlplane.up`
  (the same code as ``scripts/controlplane up``) in a temporary directory, and
  always stops them: fixture finalizer, ``atexit``, SIGTERM/SIGHUP handlers and
  a detached watchdog that fires if the test runner itself is killed.
* ``namespace`` (function): a fresh namespace per test, whose ``default``
  ServiceAccount already exists (pods are rejected before it does), deleted
  afterwards without waiting for it to finish terminating.
* ``k8s_client`` (session): a ``kubernetes.client.ApiClient`` for the cluster.

Without Go (and without cached binaries) the tests skip with instructions,
unless ``CI=true``: there a missing toolchain, a failed build or a failed start
fails the tests, so CI can never go green by skipping them.

Set ``SPREADHOOK_CONTROLPLANE_DIR`` to the ``--dir`` of a cluster started with
``scripts/controlplane up`` to reuse it (not torn down) while iterating locally.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytest

from harness import build
from harness import controlplane as cpmod
from harness.controlplane import ControlPlane

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REUSE_ENV = "SPREADHOOK_CONTROLPLANE_DIR"


def in_ci() -> bool:
    """CI=true makes every control-plane problem a failure, never a skip."""
    return os.environ.get("CI", "").lower() == "true"


def _skip_or_fail(message: str) -> None:
    if in_ci():
        pytest.fail(f"control plane unavailable in CI (CI=true): {message}", pytrace=False)
    pytest.skip(message)


class _Teardown:
    """Idempotent `down` wired to the finalizer, atexit and termination signals."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.done = False
        self.previous: dict[int, Any] = {}

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(Exception):
            cpmod.down(self.directory)
        shutil.rmtree(self.directory, ignore_errors=True)

    def install(self) -> None:
        atexit.register(self)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            self.previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        atexit.unregister(self)
        for sig, handler in self.previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Stop the cluster, then let the signal do what it would have done."""
        self()
        previous = self.previous.get(signum)
        if callable(previous):
            previous(signum, frame)
            return
        raise SystemExit(128 + signum)


def _reuse_running() -> ControlPlane | None:
    reuse = os.environ.get(REUSE_ENV)
    if not reuse:
        return None
    cp = ControlPlane(Path(reuse).resolve())
    if not cp.is_running():
        pytest.fail(f"{REUSE_ENV}={reuse} but no control plane runs there (scripts/controlplane up --dir {reuse})")
    return cp


def _ensure_binaries_or_skip() -> None:
    if not build.missing_binaries():
        return
    try:
        build.go_executable()
    except build.GoMissingError as err:
        reason = str(err)
    else:
        return
    _skip_or_fail(reason)  # outside the except: no "during handling ..." noise in the report


@pytest.fixture(scope="session")
def controlplane() -> Iterator[ControlPlane]:
    """The session's control plane; started once, always stopped."""
    reused = _reuse_running()
    if reused is not None:
        yield reused
        return
    yield from _private_controlplane(flow_control=False)


@pytest.fixture(scope="module")
def flow_controlled_controlplane() -> Iterator[ControlPlane]:
    """A second control plane, with API Priority and Fairness on as in every real cluster (the session's has
    it off so that bursts measure spreadhook, not throttling); for the tests of deploy/flowcontrol.yaml."""
    yield from _private_controlplane(flow_control=True)


def _private_controlplane(*, flow_control: bool) -> Iterator[ControlPlane]:
    """Start a control plane in a temporary directory; always stopped (finalizer, atexit, signals, watchdog)."""
    _ensure_binaries_or_skip()
    directory = cpmod.temporary_dir()
    teardown = _Teardown(directory)
    teardown.install()
    cpmod.start_watchdog(directory, os.getpid())
    try:
        yield cpmod.up(directory, flow_control=flow_control)
    finally:
        teardown()
        teardown.uninstall()


@pytest.fixture(scope="session")
def k8s_client(controlplane: ControlPlane) -> Iterator[ApiClient]:
    """One shared ApiClient for the session's cluster."""
    api = controlplane.api_client()
    yield api
    api.close()


def _namespace_name(node_name: str) -> str:
    """A valid, recognisable, unique namespace name for a test."""
    base = re.sub(r"[^a-z0-9-]+", "-", node_name.lower()).strip("-")[:40].rstrip("-")
    return f"t-{base}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, controlplane: ControlPlane, k8s_client: ApiClient) -> Iterator[str]:
    """A fresh namespace for this test; deleted afterwards in the background."""
    from kubernetes import client

    core = client.CoreV1Api(k8s_client)
    name = _namespace_name(request.node.name)
    body = {"metadata": {"name": name, "labels": {"spreadhook.io/test": "true"}}}
    core.create_namespace(body)  # type: ignore[arg-type]  # the client accepts plain dicts
    controlplane.wait_for_service_account(name)
    yield name
    force_delete_pods(k8s_client, name)
    with contextlib.suppress(Exception):
        core.delete_namespace(name, propagation_policy="Background", grace_period_seconds=0)


def force_delete_pods(api: ApiClient, namespace: str) -> None:
    """Delete every pod of NAMESPACE at once (grace 0). Deleting the namespace alone leaves its pods to a
    graceful deletion that outlives the test, and the next test finds them on the nodes it needs."""
    from kubernetes import client

    with contextlib.suppress(Exception):
        client.CoreV1Api(api).delete_collection_namespaced_pod(namespace, grace_period_seconds=0,
                                                               _request_timeout=120)


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker too, so the plugin works in a project that did not."""
    config.addinivalue_line("markers", "controlplane: needs the real control plane (scripts/controlplane)")


__all__: list[str] = ["controlplane", "force_delete_pods", "in_ci", "k8s_client", "namespace"]
