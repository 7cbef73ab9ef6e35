"""The HTTPS server: a flask app (one route per endpoint) served by gunicorn with TLS 1.2+.

Each gunicorn worker builds its own store, ledger and app after the fork (``build_app`` runs in
``load``), because watch threads and locks do not survive a fork. One worker with many threads is the
default: group commit batches only within a process, and the work per admission is small.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from flask import Flask, Response, request
from gunicorn.app.base import BaseApplication

from spreadhook import admission
from spreadhook.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024
DRAIN_LIMIT_BYTES = 16 * 1024 * 1024
"""An oversized body up to this size is read and thrown away before the 413 is sent: answering while the
client is still sending makes it see a reset connection instead of the 413 (seen once in CI)."""
_TIMEOUT_PARAM = re.compile(r"^(\d+)s$")


def create_app(
    webhook: admission.Webhook,
    metrics: Metrics,
    *,
    ready: Callable[[], bool],
    draining: Callable[[], bool] = lambda: False,
    status_of: Callable[[str, str], dict[str, Any] | None] | None = None,
) -> Flask:
    """The flask app. ``ready`` says whether certificates are loaded and the store is synced; ``draining``
    is true once shutdown began, so keep-alive connections are closed and the API server stops reusing
    them (kubernetes #127335)."""
    app = Flask("spreadhook")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def body() -> bytes:
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            _drain(request.environ["wsgi.input"], min(length, DRAIN_LIMIT_BYTES))
            raise _TooLarge()
        data = request.stream.read(MAX_BODY_BYTES + 1)
        if len(data) > MAX_BODY_BYTES:
            raise _TooLarge()
        return data

    def review_endpoint(kind: str, decide: Callable[[admission.Review], admission.Verdict]) -> Response:
        started = time.perf_counter()
        try:
            review = admission.parse_review(body())
            verdict = decide(review)
        except _TooLarge:
            metrics.admission(kind, "", "too-large", "", time.perf_counter() - started)
            return _text(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        except admission.BadReview as exc:
            metrics.admission(kind, "", "bad-request", "", time.perf_counter() - started)
            return _text(400, str(exc))
        except RecursionError:  # an object nested deeper than any pod: not a pod spreadhook can read
            metrics.admission(kind, "", "bad-request", "", time.perf_counter() - started)
            return _text(400, "the object is nested too deeply")
        except admission.Unavailable as exc:
            log.warning("cannot decide: %s", exc)
            metrics.admission(kind, review.operation, "unavailable", "", time.perf_counter() - started)
            return _text(503, str(exc))
        metrics.admission(kind, review.operation, verdict.outcome, verdict.subset, time.perf_counter() - started)
        return _json(200, admission.review_response(review.uid, verdict))

    @app.post("/mutate-pods")
    def mutate_pods() -> Response:
        timeout = _timeout_param(request.args.get("timeout", ""))
        return review_endpoint("pods", lambda review: webhook.pods(review, timeout))

    @app.post("/validate-workloadspreads")
    def validate_workloadspreads() -> Response:
        return review_endpoint("workloadspreads", webhook.validate)

    @app.post("/convert-workloadspreads")
    def convert_workloadspreads() -> Response:
        try:
            return _convert(body())
        except _TooLarge:
            return _text(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    @app.get("/healthz")
    def healthz() -> Response:
        return _text(200, "ok")

    @app.get("/readyz")
    def readyz() -> Response:
        if draining():
            return _text(503, "shutting down")
        return _text(200, "ok") if ready() else _text(503, "not ready: certificates or store caches not loaded")

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        payload, content_type = metrics.exposition()
        return Response(payload, status=200, content_type=content_type)

    if status_of is not None:
        lookup = status_of

        @app.get("/workloadspreads/<namespace>/<name>")
        def workloadspread(namespace: str, name: str) -> Response:
            """Read-only: the WorkloadSpread as this process's store holds it (the embedded store has no
            other window; with the API server, ``kubectl get ws`` shows the same)."""
            found = lookup(namespace, name)
            return _json(200, found) if found is not None else _text(404, f"WorkloadSpread {namespace}/{name} "
                                                                         "not found")

    @app.errorhandler(413)
    def too_large(_: Exception) -> Response:
        return _text(413, f"the body is larger than {MAX_BODY_BYTES} bytes")

    @app.after_request
    def close_after_refusing_a_body(response: Response) -> Response:
        if response.status_code == 413:
            response.headers["Connection"] = "close"  # whatever was not drained must not be read as a request
        return response

    @app.errorhandler(404)
    def not_found(_: Exception) -> Response:
        return _text(404, "no such endpoint")

    @app.errorhandler(405)
    def wrong_method(_: Exception) -> Response:
        return _text(405, "method not allowed for this endpoint")

    @app.after_request
    def close_when_draining(response: Response) -> Response:
        if draining():
            response.headers["Connection"] = "close"
        return response

    return app


CONVERSION_THREADS = 8
CONVERSION_GRACE_SECONDS = 2
"""A conversion takes milliseconds; on shutdown the listener must not outlive the webhook by gunicorn's 20 s."""


def create_conversion_app() -> Flask:
    """The conversion endpoint alone, for the dedicated listener (``ServeOptions.conversion_port``)."""
    app = Flask("spreadhook-conversion")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/convert-workloadspreads")
    def convert_workloadspreads() -> Response:
        return _convert(request.get_data(cache=False))

    return app


def _convert(data: bytes) -> Response:
    if len(data) > MAX_BODY_BYTES:
        return _text(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return _json(200, admission.convert_review(data))
    except admission.BadReview as exc:
        return _text(400, str(exc))


def serve_conversion(host: str, port: int, cert_dir: str) -> None:
    """The conversion listener's process: the same gunicorn server as the admissions, with the conversion
    endpoint alone.

    A process of its own, not threads beside the admissions: kube-apiserver calls it inside every status
    write (to convert for each version in managedFields), so it must answer at once even while the webhook
    process is saturated; under a burst, threads sharing the webhook's interpreter lock waited behind 64
    admissions and made every ledger write several times slower. gunicorn rather than werkzeug's server:
    werkzeug closed the connection after every answer and took ~20 ms per conversion where gunicorn takes
    ~4 ms, and two conversions sit inside every ledger write."""
    options = ServeOptions(cert_dir=cert_dir, host=host, port=port, threads=CONVERSION_THREADS,
                           graceful_timeout=CONVERSION_GRACE_SECONDS)
    log.info("conversion webhook listening on %s:%s", host, port)
    SpreadhookServer(options, lambda _options, _tls: create_conversion_app()).run()


def start_conversion_process(options: ServeOptions) -> subprocess.Popen[bytes]:
    """Start ``serve_conversion`` in a fresh interpreter (nothing of this process's state is inherited, and
    gunicorn's forked workers know nothing of it), in this process group, so that whatever stops the server
    stops it too; the caller terminates it when the server returns."""
    assert options.conversion_port is not None
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    code = (f"from spreadhook import logs; from spreadhook.server import serve_conversion; logs.configure({level!r}); "
            f"serve_conversion({options.host!r}, {options.conversion_port}, {options.cert_dir!r})")
    return subprocess.Popen([sys.executable, "-c", code])


class _TooLarge(Exception):
    pass


def _drain(stream: Any, remaining: int) -> None:
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            return
        remaining -= len(chunk)


def _timeout_param(value: str) -> float | None:
    """kube-apiserver passes the time it will wait as ``?timeout=10s``; decisions must finish inside it."""
    match = _TIMEOUT_PARAM.match(value)
    return max(0.5, int(match.group(1)) - 0.5) if match else None


def _json(code: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status=code, content_type="application/json")


def _text(code: int, message: str) -> Response:
    return Response(message + "\n", status=code, content_type="text/plain; charset=utf-8")


# -- TLS -------------------------------------------------------------------------------------------------


class ReloadingTLS:
    """The serving certificate of one worker, reloaded when the files change on disk.

    gunicorn asks for a context on every new connection; at most once a second this checks the files'
    modification times and, when they changed, loads the new pair into a fresh context that later
    connections get. Connections already open keep their session. A half-written pair (rotation in
    progress) fails to load and is retried on the next check, while the old certificate keeps serving.
    """

    def __init__(self, cert_file: str, key_file: str) -> None:
        self._cert, self._key = cert_file, key_file
        self._observers: list[Callable[[str], None]] = []
        self._lock = threading.Lock()
        self._stamp: tuple[float, float] | None = None
        self._checked = 0.0
        self.context = self._new_context()
        """The context with the newest pair; replaced, never changed, when the pair is reloaded."""
        self.refresh(force=True)

    @staticmethod
    def _new_context() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _mtimes(self) -> tuple[float, float]:
        return os.stat(self._cert).st_mtime, os.stat(self._key).st_mtime

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        with self._lock:
            self._checked = now
            try:
                stamp = self._mtimes()
                if stamp == self._stamp:
                    return
                # A fresh context, not a reload into the one serving: that one would hold, for a moment, the
                # new certificate with the old key, and a handshake in that moment fails.
                fresh = self._new_context()
                fresh.load_cert_chain(self._cert, self._key)
                self.context = fresh
            except (OSError, ssl.SSLError) as exc:
                if force:
                    raise
                log.warning("serving certificate not reloaded yet: %s", exc)
                return
            self._stamp = stamp
            for observer in self._observers:
                observer(self._cert)
            log.info("serving certificate loaded from %s", self._cert)

    def observe(self, observer: Callable[[str], None]) -> None:
        """Call ``observer(cert_path)`` now and after every reload (the expiry metric follows rotation)."""
        self._observers.append(observer)
        observer(self._cert)

    def get(self) -> ssl.SSLContext:
        self.refresh()
        return self.context


# -- gunicorn ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeOptions:
    cert_dir: str
    host: str = "0.0.0.0"
    port: int = 9443
    workers: int = 1
    threads: int = 256
    """Admissions in flight at once. Each waits for its group commit, and a request beyond the pool waits in
    gunicorn's queue, unseen by the admission histogram, until kube-apiserver's 5 s timeout fails it open:
    with 64 threads, half the pods of a 3,000-pod burst from 256 clients were created in no subset. 256 is
    kube-apiserver's default mutating in-flight limit (200) with room; more API servers than webhook
    replicas call for more."""
    store: str = "kube"
    seed: str | None = None
    reconcile: bool = False
    graceful_timeout: int = 20
    conversion_port: int | None = None
    """A listener of its own for the CRD's conversion webhook. kube-apiserver converts every status write
    to each version in the object's managedFields (a v1alpha1 ``kubectl apply`` leaves one), so the ledger's
    own writes wait on conversions: served from the admission thread pool, a burst that fills the pool with
    admissions waiting on the ledger would wait on itself until the webhook timeout."""


class SpreadhookServer(BaseApplication):
    """gunicorn with spreadhook's app, TLS context and shutdown behaviour, configured from code."""

    def __init__(self, options: ServeOptions, build: Callable[[ServeOptions, ReloadingTLS | None], Flask]) -> None:
        self.options = options
        self._build = build
        self._tls: ReloadingTLS | None = None
        super().__init__()

    def load_config(self) -> None:
        o = self.options
        cfg = {
            "bind": [f"[{o.host}]:{o.port}" if ":" in o.host else f"{o.host}:{o.port}"],
            "workers": o.workers,
            "threads": o.threads,
            "worker_class": "gthread",
            "certfile": str(Path(o.cert_dir) / "tls.crt"),
            "keyfile": str(Path(o.cert_dir) / "tls.key"),
            "ssl_context": self._ssl_context,
            "graceful_timeout": o.graceful_timeout,
            "timeout": 60,
            "keepalive": 30,
            "backlog": 2048,
            "accesslog": None,
            "post_worker_init": _install_drain_handler,
            "worker_connections": 4096,
        }
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 24's control socket lives at one fixed path per user: two webhook processes on one
            # machine would fight over it, and a read-only root filesystem has nowhere to put it.
            cfg["control_socket_disable"] = True
        for key, value in cfg.items():
            self.cfg.set(key, value)

    def _ssl_context(self, conf: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ReloadingTLS(conf.certfile, conf.keyfile)
        return self._tls.get()

    def load(self) -> Flask:
        self._tls = ReloadingTLS(self.cfg.certfile, self.cfg.keyfile)
        return self._build(self.options, self._tls)


_DRAINING = threading.Event()


def draining() -> bool:
    return _DRAINING.is_set()


def _install_drain_handler(worker: Any) -> None:
    """On SIGTERM, mark the worker as draining before gunicorn's own graceful stop runs, so responses still
    in flight carry ``Connection: close``."""
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum: int, frame: Any) -> None:
        _DRAINING.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def multiprocess_metrics_dir(workers: int) -> None:
    """prometheus-client needs a shared folder when several worker processes serve /metrics."""
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="spreadhook-metrics-")
