"""A tiny round-robin TCP proxy on loopback, for putting several webhook processes behind one URL.

A webhook registered with a ``url`` clientConfig reaches exactly one process; in a cluster a Service spreads
the apiserver's connections over the replicas. This does the same on loopback: each accepted connection
goes to the next backend in turn, and bytes are copied both ways untouched (TLS passes through, so the
apiserver verifies the webhook's own certificate). Threads, not asyncio: a test starts and stops it
around a burst, and a few dozen connections are all it ever carries.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections import Counter


class RoundRobinProxy:
    """Listens on 127.0.0.1:``port`` (0 = a free port) and forwards each connection to the next backend."""

    def __init__(self, backends: list[int], port: int = 0) -> None:
        self.backends = backends
        self._next = itertools.cycle(backends)
        self._server = socket.create_server(("127.0.0.1", port))
        self.port = int(self._server.getsockname()[1])
        self.connections: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcpproxy", daemon=True)

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._server.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> RoundRobinProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                downstream, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                backend = next(self._next)
                self.connections[backend] += 1
            threading.Thread(target=self._connect, args=(downstream, backend), daemon=True).start()

    def _connect(self, downstream: socket.socket, backend: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", backend), timeout=5)
        except OSError:
            downstream.close()  # the backend is down: the client sees a reset, as through a Service
            return
        upstream.settimeout(None)
        threading.Thread(target=_pump, args=(upstream, downstream), daemon=True).start()
        _pump(downstream, upstream)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until either side closes, then close both (half-close is not needed for HTTP/TLS here)."""
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
