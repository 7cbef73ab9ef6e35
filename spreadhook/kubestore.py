"""The Store on the API server: watch-fed caches for reads, the status subresource with a resourceVersion
precondition for ledger writes, and a Lease for the reconciler's leader election.

Objects are kept as the API's plain JSON (``_preload_content=False``, no client model classes): a burst
of thousands of pods is thousands of watch events, and the client's model deserialisation would cost more
than the webhook's whole decision.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import requests
from kubernetes import client, config

from spreadhook.model import GROUP, KIND, Obj, WorkloadSpread, WorkloadSpreadStatus, api_group, parse, status_to_dict
from spreadhook.spread import needs_workload_replicas
from spreadhook.store import Conflict, NotFound, StatusPatching, StoreError, WorkloadKey, version_order

log = logging.getLogger(__name__)

WS_VERSION = "v1beta1"
WATCH_SECONDS = 240
EVENT_DEDUPE_SECONDS = 300.0


class ApiConnection:
    """kube-apiserver's address and credentials, taken from the official client's configuration loaders
    (kubeconfig or in-cluster), spoken to with ``requests``: one pooled session, streaming watches, and no
    dependence on the generated client's internals, which change between its major versions."""

    def __init__(self, configuration: client.Configuration) -> None:
        self._configuration = configuration
        self.host = configuration.host.rstrip("/")
        self.session = requests.Session()
        self.session.trust_env = False  # the kubeconfig says where and how to connect, not the environment
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=128)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.verify = configuration.ssl_ca_cert if configuration.verify_ssl and configuration.ssl_ca_cert \
            else configuration.verify_ssl
        if configuration.cert_file and configuration.key_file:
            self.session.cert = (configuration.cert_file, configuration.key_file)

    @classmethod
    def from_environment(cls) -> ApiConnection:
        """In-cluster config when running in a pod, else ``KUBECONFIG``/``~/.kube/config``."""
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(client_configuration=configuration)
        return cls(configuration)

    def auth_headers(self) -> dict[str, str]:
        """The bearer token, re-read through the client's refresh hook (in-cluster tokens rotate)."""
        token = self._configuration.get_api_key_with_prefix("authorization")
        return {"Authorization": token} if token else {}


@dataclass(frozen=True, slots=True)
class Resource:
    """A list/watch endpoint and the (group, kind) its objects have."""

    group: str
    version: str
    plural: str
    kind: str
    optional: bool = False  # CloneSet and Advanced StatefulSet exist only where their CRDs are installed

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        where = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{where}/{self.plural}" + (f"/{name}" if name else "")


FIELD_MANAGER = "spreadhook"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})

WORKLOAD_SPREADS = Resource(GROUP, WS_VERSION, "workloadspreads", KIND)
PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node")
WORKLOAD_RESOURCES = (
    Resource("apps", "v1", "replicasets", "ReplicaSet"),
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("apps", "v1", "statefulsets", "StatefulSet"),
    Resource("batch", "v1", "jobs", "Job"),
    Resource("apps.kruise.io", "v1alpha1", "clonesets", "CloneSet", optional=True),
    Resource("apps.kruise.io", "v1beta1", "statefulsets", "StatefulSet", optional=True),
)


class KubeStore(StatusPatching):
    """``Store`` on kube-apiserver. ``pods=True`` also caches pods and nodes (the reconciler needs them; the
    webhook alone does not, and a pod cache is the largest memory cost in a big cluster)."""

    def __init__(self, api: ApiConnection, *, pods: bool = True) -> None:
        self.api = api
        self._resources = [WORKLOAD_SPREADS, *WORKLOAD_RESOURCES] + ([PODS, NODES] if pods else [])
        self._lock = threading.Lock()
        self._spread_changed = threading.Condition(self._lock)
        self._objects: dict[Resource, dict[str, dict[str, Obj]]] = {r: {} for r in self._resources}
        """resource -> namespace ("" for nodes) -> name -> object: by namespace because every sync and every
        second's settle reads one namespace's pods, and a walk over a big cluster's every pod per read took
        the CPU the webhook in the same process needs."""
        self._parsed: dict[tuple[str, str], WorkloadSpread] = {}
        self._by_target: dict[WorkloadKey, tuple[str, str]] = {}
        self._synced: set[Resource] = set()
        self._subscribers: list[Callable[[str], None]] = []
        self._workload_subscribers: list[Callable[[Obj | None, Obj], None]] = []
        self._stop = threading.Event()
        self._events_sent: dict[tuple[str, str, str], float] = {}
        self._flights: dict[tuple[Resource, str, str], _Flight] = {}

    @classmethod
    def from_environment(cls, *, pods: bool = True) -> KubeStore:
        return cls(ApiConnection.from_environment(), pods=pods)

    # -- HTTP ----------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Any = None, query: list[tuple[str, Any]] | None = None,
                content_type: str = "application/json", timeout: float | tuple[float, float] = 30,
                stream: bool = False) -> Any:
        """One API request; errors become the Store's exceptions. ``stream`` returns the open response."""
        if method in WRITE_METHODS:  # named in managedFields as spreadhook, not as "python-requests"
            query = [*(query or []), ("fieldManager", FIELD_MANAGER)]
        try:
            response = self.api.session.request(
                method, self.api.host + path, params=query, data=orjson.dumps(body) if body is not None else None,
                headers={"Content-Type": content_type, **self.api.auth_headers()}, timeout=timeout, stream=stream)
        except requests.RequestException as exc:
            raise StoreError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            message = response.text[:300]
            response.close()
            if response.status_code == 404:
                raise NotFound(f"{method} {path}: not found")
            if response.status_code == 409:
                raise Conflict(f"{method} {path}: conflict: {message}")
            raise StoreError(f"{method} {path}: HTTP {response.status_code}: {message}")
        if stream:
            return response
        return orjson.loads(response.content) if response.content else {}

    # -- caches --------------------------------------------------------------------------------------

    def start(self, wait_seconds: float = 30.0) -> None:
        """List and watch every resource in background threads; wait (bounded) for the first lists."""
        for resource in self._resources:
            threading.Thread(target=self._watch_loop, args=(resource,), name=f"watch-{resource.plural}",
                             daemon=True).start()
        deadline = time.monotonic() + wait_seconds
        while not self.synced() and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()

    def synced(self) -> bool:
        return all(r in self._synced for r in self._resources)

    def subscribe(self, callback: Callable[[str], None]) -> None:
        self._subscribers.append(callback)

    def subscribe_workloads(self, callback: Callable[[Obj | None, Obj], None]) -> None:
        self._workload_subscribers.append(callback)

    def _watch_loop(self, resource: Resource) -> None:
        """List, then watch from the list's resourceVersion; re-list on 410 Gone or any broken stream."""
        backoff = 0.2
        while not self._stop.is_set():
            try:
                version = self._list(resource)
                backoff = 0.2
                while not self._stop.is_set():
                    version = self._watch(resource, version)
            except NotFound:
                if resource.optional:  # the CRD is not installed: nothing to cache, and not an error
                    self._synced.add(resource)
                    self._stop.wait(30)
                    continue
                log.warning("cannot list %s: not found", resource.plural)
            except _Gone:
                log.info("watch of %s expired, re-listing", resource.plural)
                continue
            except StoreError as exc:
                log.warning("watch of %s failed: %s", resource.plural, exc)
            except Exception:
                log.exception("watch of %s failed unexpectedly", resource.plural)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    def _list(self, resource: Resource) -> str:
        body = self.request("GET", resource.path(), timeout=120)
        objects: dict[str, dict[str, Obj]] = {}
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        for obj in body.get("items") or []:
            obj.setdefault("kind", resource.kind)
            obj.setdefault("apiVersion", api_version)
            objects.setdefault(_ns(obj), {})[_name(obj)] = obj
        with self._lock:
            self._objects[resource] = objects
            if resource is WORKLOAD_SPREADS:
                self._parsed.clear()
                self._by_target.clear()
                for namespace, named in objects.items():
                    for name, obj in named.items():
                        self._index((namespace, name), obj)
        self._synced.add(resource)
        for namespace in objects:
            self._notify(namespace)
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, resource: Resource, version: str) -> str:
        query = [("watch", "true"), ("resourceVersion", version), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", WATCH_SECONDS)]
        response = self.request("GET", resource.path(), query=query, timeout=(10, WATCH_SECONDS + 30), stream=True)
        try:
            for line in response.iter_lines(chunk_size=None):
                if not line:
                    continue
                if self._stop.is_set():
                    break
                event = orjson.loads(line)
                obj = event.get("object") or {}
                kind = event.get("type")
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise StoreError(f"watch error: {obj.get('message')}")
                version = str(obj.get("metadata", {}).get("resourceVersion", version))
                if kind == "BOOKMARK":
                    continue
                self._apply_event(resource, kind, obj)
        except requests.RequestException as exc:
            raise StoreError(f"watch of {resource.plural} broke: {exc}") from None
        finally:
            response.close()
        return version

    def _apply_event(self, resource: Resource, kind: str | None, obj: Obj) -> None:
        key = (_ns(obj), _name(obj))
        changed: Obj | None = None
        with self._lock:
            cache = self._objects[resource].setdefault(key[0], {})
            before = cache.get(key[1])
            if kind == "DELETED":
                cache.pop(key[1], None)
                if not cache:
                    del self._objects[resource][key[0]]
                if resource is WORKLOAD_SPREADS:
                    self._unindex(key)
            elif _newer(obj, before):
                cache[key[1]] = obj
                if resource is WORKLOAD_SPREADS:
                    self._index(key, obj)
                elif resource in WORKLOAD_RESOURCES:
                    changed = obj
            if resource is WORKLOAD_SPREADS:
                self._spread_changed.notify_all()
        if changed is not None:
            for callback in list(self._workload_subscribers):
                callback(before, changed)
        self._notify(key[0])

    def _index(self, key: tuple[str, str], obj: Obj) -> None:
        """Called with the lock held: parse once per change, never per admission."""
        self._unindex(key)
        try:
            ws = parse(obj)
        except ValueError as exc:
            log.warning("WorkloadSpread %s/%s cannot be read: %s", *key, exc)
            return
        self._parsed[key] = ws
        if ws.target_ref is not None:
            self._by_target[WorkloadKey.of_ref(key[0], ws.target_ref)] = key

    def _unindex(self, key: tuple[str, str]) -> None:
        old = self._parsed.pop(key, None)
        if old is not None and old.target_ref is not None:
            target = WorkloadKey.of_ref(key[0], old.target_ref)
            if self._by_target.get(target) == key:
                del self._by_target[target]

    def _notify(self, namespace: str) -> None:
        for callback in list(self._subscribers):
            callback(namespace)

    # -- Store: WorkloadSpreads ---------------------------------------------------------------------

    def workload_spread(self, namespace: str, name: str) -> WorkloadSpread | None:
        with self._lock:
            return self._parsed.get((namespace, name))

    def workload_spread_for(self, target: WorkloadKey) -> WorkloadSpread | None:
        with self._lock:
            key = self._by_target.get(target)
            return self._parsed.get(key) if key is not None else None

    def workload_spreads(self, namespace: str | None = None) -> list[WorkloadSpread]:
        with self._lock:
            return [ws for (ns, _), ws in self._parsed.items() if namespace is None or ns == namespace]

    def fresh_workload_spread(self, namespace: str, name: str) -> WorkloadSpread | None:
        try:
            obj = self.request("GET", WORKLOAD_SPREADS.path(namespace, name))
        except NotFound:
            return None
        self._apply_event(WORKLOAD_SPREADS, "MODIFIED", obj)
        return parse(obj)

    def workload_spread_after(
        self, namespace: str, name: str, resource_version: str, timeout: float
    ) -> WorkloadSpread | None:
        deadline = time.monotonic() + timeout
        with self._spread_changed:
            while True:
                ws = self._parsed.get((namespace, name))
                if ws is not None and version_order(ws.resource_version) > version_order(resource_version):
                    return ws
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._spread_changed.wait(remaining)

    def write_status(self, ws: WorkloadSpread, status: WorkloadSpreadStatus) -> WorkloadSpread:
        """PUT the status subresource; the resourceVersion in the body is the precondition (409 if stale)."""
        body = {"apiVersion": f"{GROUP}/{WS_VERSION}", "kind": KIND,
                "metadata": {"name": ws.name, "namespace": ws.namespace, "resourceVersion": ws.resource_version},
                "spec": {}, "status": status_to_dict(status)}
        written = self.request("PUT", WORKLOAD_SPREADS.path(ws.namespace, ws.name) + "/status", body=body)
        self._apply_event(WORKLOAD_SPREADS, "MODIFIED", written)
        return parse(written)

    def patch_status(self, ws: WorkloadSpread, operations: list[Obj]) -> WorkloadSpread:
        """kube-apiserver retries its own storage conflicts on a patch without a resourceVersion; a failed
        ``test`` or a missing path fails the whole patch with HTTP 422 (400 is read the same way)."""
        try:
            written = self.request("PATCH", WORKLOAD_SPREADS.path(ws.namespace, ws.name) + "/status",
                                   body=operations, content_type="application/json-patch+json")
        except StoreError as exc:
            if isinstance(exc, NotFound) or not any(f"HTTP {code}" in str(exc) for code in (400, 422)):
                raise
            raise Conflict(f"WorkloadSpread {ws.key}: the status moved under the patch") from None
        self._apply_event(WORKLOAD_SPREADS, "MODIFIED", written)
        return parse(written)

    def replace_managed_fields(self, ws: WorkloadSpread, managed_fields: list[Any]) -> None:
        """A merge patch of the main resource; the resourceVersion in it is the precondition (409 if stale)."""
        body = {"metadata": {"managedFields": managed_fields, "resourceVersion": ws.resource_version}}
        written = self.request("PATCH", WORKLOAD_SPREADS.path(ws.namespace, ws.name), body=body,
                               content_type="application/merge-patch+json")
        self._apply_event(WORKLOAD_SPREADS, "MODIFIED", written)

    # -- Store: workloads, pods, nodes -------------------------------------------------------------

    def workload(self, namespace: str, api_version: str, kind: str, name: str) -> Obj | None:
        """From the cache; on a miss, one GET (a ReplicaSet made a moment ago may not be in the cache yet,
        and a pod admitted without its subset would cost the user money)."""
        group = api_group(api_version)
        resource = next((r for r in WORKLOAD_RESOURCES if (r.group, r.kind) == (group, kind)), None)
        if resource is None:
            return self._get_custom(namespace, api_version, kind, name)
        with self._lock:
            found = self._objects[resource].get(namespace, {}).get(name)
            target = self._by_target.get(WorkloadKey(namespace, group, kind, name))
            spread_of = self._parsed.get(target) if target is not None else None
            percentages = spread_of is not None and needs_workload_replicas(spread_of)
        if percentages:
            return self._fresh_workload(resource, namespace, name, found)
        if found is not None:
            return found
        try:
            obj = self.request("GET", resource.path(namespace, name))
        except NotFound:
            return None
        self._apply_event(resource, "ADDED", obj)
        return obj

    def _fresh_workload(self, resource: Resource, namespace: str, name: str, cached: Obj | None) -> Obj | None:
        """The workload as it is now, for a WorkloadSpread with percentage maxReplicas, whose limits depend on
        its replica count. ``kubectl scale`` writes the Deployment before its controller creates the pods,
        but the watch may deliver that write after the pods' admissions: from the cache, every pod of a
        scale-out from 8 to 16 was judged against 8 replicas, found every subset full, and was admitted in
        no subset. So read past the cache, coalesced: a GET that started after this caller arrived is fresh
        enough for it, and while one is in flight later callers wait for it and share the next one, so a
        burst costs about one GET per round trip, not one per pod. On an API error, the cache answers."""
        key = (resource, namespace, name)
        arrived = time.monotonic()
        while True:
            with self._lock:
                flight = self._flights.get(key)
                if flight is None or (flight.done.is_set() and flight.started < arrived):
                    flight = self._flights[key] = _Flight(time.monotonic())
                    mine = True
                else:
                    mine = False
            if mine:
                try:
                    flight.result = self.request("GET", resource.path(namespace, name))
                    self._apply_event(resource, "MODIFIED", flight.result)
                except NotFound:
                    flight.result = None
                except StoreError as exc:
                    log.warning("cannot read %s %s/%s, using the cache: %s", resource.kind, namespace, name, exc)
                    flight.result = cached
                finally:
                    flight.done.set()
                return flight.result
            flight.done.wait(30)
            if flight.started >= arrived:
                return flight.result

    def _get_custom(self, namespace: str, api_version: str, kind: str, name: str) -> Obj | None:
        """A whitelisted custom workload, read directly (its plural is the lower-cased kind plus s, as CRDs
        generated by kubebuilder name it)."""
        try:
            return self.request("GET", f"/apis/{api_version}/namespaces/{namespace}/{kind.lower()}s/{name}")
        except NotFound:
            return None

    def pods(self, namespace: str) -> list[Obj]:
        with self._lock:
            return list(self._objects.get(PODS, {}).get(namespace, {}).values())

    def fresh_pods(self, namespace: str) -> list[Obj]:
        """A LIST without resourceVersion: a quorum read, newer than anything the watch has delivered."""
        return list(self.request("GET", PODS.path(namespace), timeout=120).get("items") or [])

    def pod(self, namespace: str, name: str) -> Obj:
        return self.request("GET", PODS.path(namespace, name))

    def nodes(self) -> dict[str, Obj]:
        with self._lock:
            return dict(self._objects.get(NODES, {}).get("", {}))

    def patch_pod(self, namespace: str, name: str, patch: Obj) -> None:
        self.request("PATCH", PODS.path(namespace, name), body=patch,
                   content_type="application/strategic-merge-patch+json")

    def delete_pod(self, namespace: str, name: str) -> None:
        self.request("DELETE", PODS.path(namespace, name))

    def record_event(self, ws: WorkloadSpread, event_type: str, reason: str, message: str) -> None:
        """A core/v1 Event on the WorkloadSpread. The same reason and message are sent at most once per five
        minutes: a level-triggered loop sees the same condition on every pass."""
        key = (ws.key, reason, message)
        now = time.monotonic()
        if now - self._events_sent.get(key, -EVENT_DEDUPE_SECONDS) < EVENT_DEDUPE_SECONDS:
            return
        if len(self._events_sent) > 10_000:  # forget what can no longer suppress anything
            self._events_sent = {k: t for k, t in self._events_sent.items() if now - t < EVENT_DEDUPE_SECONDS}
        self._events_sent[key] = now
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{ws.name}.", "namespace": ws.namespace},
            "involvedObject": {"apiVersion": f"{GROUP}/{WS_VERSION}", "kind": KIND, "name": ws.name,
                               "namespace": ws.namespace, "uid": ws.uid},
            "type": event_type, "reason": reason, "message": message[:1024],
            "source": {"component": "spreadhook"}, "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
            "reportingComponent": "spreadhook", "reportingInstance": socket.gethostname(),
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{ws.namespace}/events", body=body)
        except StoreError as exc:
            log.warning("event %s on %s not recorded: %s", reason, ws.key, exc)


@dataclass(slots=True)
class _Flight:
    """One GET of a workload that callers arriving before ``started`` may share."""

    started: float
    done: threading.Event = field(default_factory=threading.Event)
    result: Obj | None = None


class _Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


def _ns(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "")


def _name(obj: Obj) -> str:
    return str(obj.get("metadata", {}).get("name") or "")


def _newer(obj: Obj, current: Obj | None) -> bool:
    """Keep the newer of two copies: our own writes land in the cache before their watch events do."""
    if current is None:
        return True
    new, old = (version_order(str((o.get("metadata") or {}).get("resourceVersion"))) for o in (obj, current))
    return new < 0 or old < 0 or new >= old  # an unreadable version cannot be ordered: take the copy that came


# -- leader election ------------------------------------------------------------------------------------


class LeaseElector:
    """coordination.k8s.io/v1 Lease leader election, so two reconciler replicas never both act.

    The holder renews every ``renew`` seconds; another replica takes over once ``duration`` has passed
    without a renewal. Every write carries the Lease's resourceVersion, so two candidates cannot both win.
    """

    def __init__(self, store: KubeStore, namespace: str, name: str = "spreadhook-reconciler", *,
                 identity: str | None = None, duration: float = 15.0, renew: float = 2.0) -> None:
        self._store = store
        self._path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        self._create_path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        self._name, self._namespace = name, namespace
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self._duration, self._renew = duration, renew
        self._leader_until = 0.0
        self._stop = threading.Event()

    @classmethod
    def from_environment(cls, store: KubeStore) -> LeaseElector:
        return cls(store, os.environ.get("POD_NAMESPACE", "spreadhook-system"))

    def is_leader(self) -> bool:
        return time.monotonic() < self._leader_until

    def start(self) -> None:
        threading.Thread(target=self._loop, name="spreadhook-lease", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self._try_acquire_or_renew():
                    self._leader_until = started + self._duration - self._renew
                else:
                    self._leader_until = 0.0
            except StoreError as exc:
                log.warning("lease %s/%s: %s", self._namespace, self._name, exc)
            self._stop.wait(self._renew)

    def _try_acquire_or_renew(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            lease = self._store.request("GET", self._path)
        except NotFound:
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self._name, "namespace": self._namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": int(self._duration),
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}}
            try:
                self._store.request("POST", self._create_path, body=body)
            except Conflict:
                return False
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse_micro(spec.get("renewTime"))
        expired = renewed is None or renewed + dt.timedelta(seconds=spec.get("leaseDurationSeconds") or 15) < now
        if holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = stamp
            log.info("taking the reconciler lease from %s", holder)
        spec.update({"holderIdentity": self.identity, "renewTime": stamp,
                     "leaseDurationSeconds": int(self._duration)})
        lease["spec"] = spec
        try:
            self._store.request("PUT", self._path, body=lease)
        except Conflict:
            return False
        return True


def _parse_micro(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
