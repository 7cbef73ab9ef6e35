"""Prometheus metrics (prometheus-client): what an operator needs to see the webhook's health at a glance.

The admission histogram has fine buckets from 0.5 ms to 100 ms, because kube-apiserver's own webhook
histogram jumps from 25 ms to 100 ms and cannot tell a healthy webhook from a struggling one.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from spreadhook.ledger import CommitStats

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                   0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """One registry per process; with several gunicorn workers, prometheus-client's multiprocess mode."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admissions = Counter("spreadhook_admissions", "Admission requests answered, by endpoint, operation, "
                                  "outcome and subset", ["endpoint", "operation", "outcome", "subset"],
                                  registry=self.registry)
        self.latency = Histogram("spreadhook_admission_duration_seconds", "Time to answer an admission request, "
                                 "from the body read to the response", ["endpoint", "operation"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch = Histogram("spreadhook_ledger_commit_batch_size", "Admissions committed by one ledger status "
                               "write (group commit)", buckets=BATCH_BUCKETS, registry=self.registry)
        self.writes = Counter("spreadhook_ledger_status_writes", "WorkloadSpread status writes by the ledger",
                              registry=self.registry)
        self.write_time = Histogram("spreadhook_ledger_write_duration_seconds", "Time one group commit spent "
                                    "in status writes, conflicting attempts included", buckets=LATENCY_BUCKETS,
                                    registry=self.registry)
        self.conflicts = Counter("spreadhook_ledger_conflicts", "409 Conflicts met by ledger status writes",
                                 registry=self.registry)
        self.reserved = Counter("spreadhook_ledger_reserved_slots", "Slots reserved ahead of their pods, by what "
                                "became of them: reserved (written), taken (a pod admitted without a write), "
                                "returned (given back unused)", ["event"], registry=self.registry)
        self.cert_expiry = Gauge("spreadhook_serving_certificate_expiry_timestamp_seconds", "When the serving "
                                 "certificate expires (Unix time); alert well before it", registry=self.registry,
                                 multiprocess_mode="min")

    def admission(self, endpoint: str, operation: str, outcome: str, subset: str, seconds: float) -> None:
        self.admissions.labels(endpoint, operation, outcome, subset).inc()
        self.latency.labels(endpoint, operation).observe(seconds)

    def ledger_commit(self, stats: CommitStats) -> None:
        self.batch.observe(stats.batch_size)
        if stats.wrote:
            self.writes.inc()
            self.write_time.observe(stats.write_seconds)
        if stats.conflicts:
            self.conflicts.inc(stats.conflicts)
        if stats.reserved:
            self.reserved.labels("reserved").inc(stats.reserved)
        if stats.returned:
            self.reserved.labels("returned").inc(stats.returned)

    def reserved_slot_taken(self) -> None:
        self.reserved.labels("taken").inc()

    def exposition(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
