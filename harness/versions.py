"""The one place the control plane's versions are pinned.

Everything that builds, caches or describes the test control plane reads these
constants, so bumping Kubernetes is a one-line change here (and the cache key,
derived from them, makes the next run rebuild exactly once).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Newest Kubernetes release whose go.mod the machine's Go (1.26) accepts.
KUBERNETES_VERSION = "v1.37.2"

#: The published staging modules (k8s.io/api, k8s.io/client-go, ...) that
#: match KUBERNETES_VERSION: v1.X.Y ships its staging repos as v0.X.Y.
STAGING_VERSION = "v0.37.2"

#: The etcd server version that k8s.io/kubernetes v1.37.2's go.mod pins
#: (go.etcd.io/etcd/server/v3 v3.7.0), so the apiserver's client and the
#: server speak the same release.
ETCD_VERSION = "v3.7.0"

#: Newest kwok release; provides both kwok (node / pod lifecycle simulator)
#: and kwokctl (the launcher).
KWOK_VERSION = "v0.8.0"

#: Go toolchain the versions above were chosen for (informational; `go`
#: itself refuses modules that need a newer one).
GO_MIN_VERSION = "go1.26"


@dataclass(frozen=True)
class Binary:
    """A binary the harness needs: its file name and the Go package it builds from."""

    name: str
    package: str


KUBERNETES_BINARIES: tuple[Binary, ...] = (
    Binary("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    Binary("kube-controller-manager", "k8s.io/kubernetes/cmd/kube-controller-manager"),
    Binary("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    Binary("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
)
ETCD_BINARIES: tuple[Binary, ...] = (Binary("etcd", "go.etcd.io/etcd/server/v3"),)
KWOK_BINARIES: tuple[Binary, ...] = (
    Binary("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    Binary("kwokctl", "sigs.k8s.io/kwok/cmd/kwokctl"),
)

ALL_BINARIES: tuple[Binary, ...] = KWOK_BINARIES + ETCD_BINARIES + KUBERNETES_BINARIES


def cache_key() -> str:
    """Directory name under the cache that identifies this exact set of versions."""
    return f"k8s-{KUBERNETES_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}"
