"""Wiring: which store, which ledger, which app, for ``serve``, ``run`` and ``demo``.

Kept apart from the modules it wires so that each of them stays testable alone, and from ``cli`` so that
argument parsing and object construction do not mix.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from flask import Flask

from spreadhook import admission, model, workloads
from spreadhook.ledger import Ledger
from spreadhook.metrics import Metrics
from spreadhook.server import ReloadingTLS, ServeOptions, create_app, draining
from spreadhook.store import MemoryStore, Store

log = logging.getLogger(__name__)

CUSTOM_WORKLOADS_ENV = "SPREADHOOK_CUSTOM_WORKLOADS"
"""Upstream's custom-workload whitelist JSON (``WorkloadSpread_Watch_Custom_Workload_WhiteList``)."""


FULL_COLLECTION_EVERY = 100
"""Collections of the middle generation between two full ones of Python's cyclic garbage collector
(CPython's default is 10). Every pod event replaces a cached pod with a new nest of dicts that lives long
enough to reach the oldest generation, so under a burst a full collection, which walks every object of
the process with the interpreter lock held, came after every ten middle ones: in two traced 3,000-pod
bursts at C=64 the webhook process made 26 of them over a heap of 180,000 objects, 3.2 s in all, and spent
5.5 s in the collector altogether, against 2.2-2.8 ms of CPU per pod. The pod cache holds no reference
cycles (plain JSON), so the cycles a full collection finds are the rare ones of exceptions and threads,
and they can wait ten times longer. Measured the same way with this (and ``gc.freeze``): 5 full
collections, 0.25 s, and 2.1 s in the collector altogether."""


def tune_garbage_collector() -> None:
    """Call once the caches have made their first lists: what exists then (modules, the app, the first
    objects of every cache) is frozen out of the collector's walks, and full collections come
    ``FULL_COLLECTION_EVERY`` middle ones apart."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def custom_workloads() -> list[workloads.CustomWorkload]:
    return workloads.parse_whitelist(os.environ.get(CUSTOM_WORKLOADS_ENV, ""))


def seed_memory_store(store: MemoryStore, documents: Iterable[Mapping[str, Any]]) -> None:
    """Load WorkloadSpreads, workloads, pods and nodes into the embedded store, as ``kubectl apply`` would."""
    for doc in documents:
        kind = doc.get("kind")
        if kind == model.KIND:
            store.apply_workload_spread(doc)
        elif kind == "Pod":
            store.put_pod(doc)
        elif kind == "Node":
            store.put_node(doc)
        elif isinstance(doc.get("metadata"), dict):
            store.apply_workload({**doc, "metadata": {"namespace": "default", **doc["metadata"]}})


def build_store(options: ServeOptions) -> Store:
    if options.store == "memory":
        store = MemoryStore()
        if options.seed:
            with open(options.seed, encoding="utf-8") as handle:
                seed_memory_store(store, [d for d in yaml.safe_load_all(handle) if isinstance(d, dict)])
        return store
    from spreadhook.kubestore import KubeStore

    kube = KubeStore.from_environment(pods=options.reconcile)
    kube.start()
    tune_garbage_collector()
    return kube


def build_webhook(store: Store, metrics: Metrics) -> admission.Webhook:
    ledger = Ledger(store, clock=utcnow, on_commit=metrics.ledger_commit,
                    on_reserved_taken=metrics.reserved_slot_taken, reserve=True)
    webhook = admission.Webhook(store, ledger, custom_workloads=custom_workloads())
    store.subscribe_workloads(webhook.workload_changed)
    return webhook


def start_reconciler(store: Store) -> None:
    """The reconcile loop in this process; against the API server, only while holding the Lease."""
    from spreadhook.controller import start_controller
    from spreadhook.kubestore import KubeStore, LeaseElector

    elector = None
    if isinstance(store, KubeStore):
        elector = LeaseElector.from_environment(store)
        elector.start()
    start_controller(store, clock=utcnow, custom=custom_workloads(), elector=elector)


def build_app(
    options: ServeOptions, tls: ReloadingTLS | None, store: Store | None = None, metrics: Metrics | None = None
) -> Flask:
    """Everything one worker process serves. The demo passes its own store and metrics, to share them."""
    from spreadhook import certs

    metrics = metrics or Metrics()
    store = store if store is not None else build_store(options)
    if tls is not None:
        tls.observe(lambda path: metrics.cert_expiry.set(certs.certificate_expiry(path).timestamp()))
    webhook = build_webhook(store, metrics)
    if options.reconcile:
        start_reconciler(store)

    def status_of(namespace: str, name: str) -> dict[str, Any] | None:
        ws = store.workload_spread(namespace, name)
        return model.to_dict(ws) if ws is not None else None

    return create_app(webhook, metrics, ready=lambda: store.synced(), draining=draining, status_of=status_of)
