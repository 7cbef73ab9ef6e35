"""spreadhook.certs: generation, verification, atomic files, renewal, CA rotation, caBundle injection."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509 import verification

from spreadhook import certs

SVC, NS = "spreadhook-webhook", "spreadhook-system"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def bundle() -> certs.CertBundle:
    return certs.new_bundle(SVC, NS, now=NOW)


def _verify(leaf_pem: bytes, trust_pem: bytes, name: x509.GeneralName, at: dt.datetime = NOW) -> None:
    """Full RFC 5280 server-certificate path validation, as a TLS client would do it."""
    store = verification.Store(x509.load_pem_x509_certificates(trust_pem))
    verifier = verification.PolicyBuilder().store(store).time(at).build_server_verifier(name)
    verifier.verify(x509.load_pem_x509_certificate(leaf_pem), [])


def _sans(pem: bytes) -> set[str]:
    ext = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(ext.value.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in ext.value.get_values_for_type(x509.IPAddress)
    }


# ---------------------------------------------------------------------------------------------------------
# Generation


def test_serving_cert_has_every_service_name_and_loopback(bundle: certs.CertBundle) -> None:
    assert _sans(bundle.serving.cert_pem) == {
        "spreadhook-webhook",
        "spreadhook-webhook.spreadhook-system",
        "spreadhook-webhook.spreadhook-system.svc",
        "spreadhook-webhook.spreadhook-system.svc.cluster.local",
        "localhost",
        "127.0.0.1",
        "::1",
    }


def test_extra_sans_accept_names_and_ips() -> None:
    b = certs.new_bundle("svc", "ns", extra_sans=["webhook.example.com", "10.0.0.7"], now=NOW)
    assert {"webhook.example.com", "10.0.0.7", "svc.ns.svc"} <= _sans(b.serving.cert_pem)


@pytest.mark.parametrize(
    "name",
    [
        x509.DNSName("spreadhook-webhook.spreadhook-system.svc"),
        x509.DNSName("spreadhook-webhook.spreadhook-system.svc.cluster.local"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ],
)
def test_leaf_verifies_against_the_ca(bundle: certs.CertBundle, name: x509.GeneralName) -> None:
    _verify(bundle.serving.cert_pem, bundle.ca_bundle_pem(), name)


def test_leaf_does_not_verify_for_other_names_or_other_cas(bundle: certs.CertBundle) -> None:
    with pytest.raises(verification.VerificationError):
        _verify(bundle.serving.cert_pem, bundle.ca_bundle_pem(), x509.DNSName("evil.example.com"))
    other = certs.generate_ca(now=NOW)
    with pytest.raises(verification.VerificationError):
        _verify(bundle.serving.cert_pem, other.cert_pem, x509.DNSName("localhost"))


def test_ca_and_leaf_lifetimes_and_constraints(bundle: certs.CertBundle) -> None:
    ca = bundle.ca.certificate
    leaf = bundle.serving.certificate
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert abs((ca.not_valid_after_utc - NOW) - certs.CA_VALIDITY) < dt.timedelta(seconds=1)
    assert abs((leaf.not_valid_after_utc - NOW) - certs.LEAF_VALIDITY) < dt.timedelta(seconds=1)
    assert leaf.not_valid_before_utc < NOW  # backdated for clock skew
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_leaf_never_outlives_its_ca() -> None:
    ca = certs.generate_ca(validity=dt.timedelta(days=100), now=NOW)
    leaf = certs.generate_serving_cert(ca, SVC, NS, now=NOW)
    assert leaf.not_after == ca.not_after


def test_key_matches_certificate(bundle: certs.CertBundle) -> None:
    assert certs.key_matches_certificate(bundle.serving.cert_pem, bundle.serving.key_pem)
    assert not certs.key_matches_certificate(bundle.serving.cert_pem, bundle.ca.key_pem)
    assert not certs.key_matches_certificate(b"garbage", bundle.serving.key_pem)


def test_real_tls_handshake_with_python_ssl(tmp_path: Path) -> None:
    """The files work as a server would load them and a client (requests/urllib3 use ssl) would trust them."""
    b = certs.load_or_create(tmp_path, SVC, NS)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client_ctx.wrap_socket(
            raw, server_hostname="localhost"
        ) as tls:
            tls.sendall(b"hello")
            assert tls.recv(5) == b"hello"
    finally:
        thread.join(5)
        listener.close()
    assert not errors
    assert b.serving.cert_pem.strip() == (tmp_path / "tls.crt").read_bytes().strip()


# ---------------------------------------------------------------------------------------------------------
# Files


def test_write_bundle_modes_and_contents(tmp_path: Path, bundle: certs.CertBundle) -> None:
    out = tmp_path / "new" / "certs"
    certs.write_bundle(out, bundle)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert mode == {"tls.crt": 0o644, "tls.key": 0o600, "ca.crt": 0o644, "ca.key": 0o600}
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert certs.read_bundle(out) == bundle


def test_write_bundle_is_atomic_per_file(
    tmp_path: Path, bundle: certs.CertBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file is complete, fsynced and already at its final mode under a temporary name in the same
    directory when it is renamed over the target; a failure leaves the old file and no litter."""
    certs.write_bundle(tmp_path, bundle)
    other = certs.new_bundle(SVC, NS, now=NOW)
    real_replace = os.replace
    seen: list[tuple[str, str, int, bytes]] = []

    def spying_replace(src: Any, dst: Any) -> None:
        src_p, dst_p = Path(src), Path(dst)
        assert src_p.parent == dst_p.parent  # same filesystem: rename is atomic
        seen.append((src_p.name, dst_p.name, stat.S_IMODE(src_p.stat().st_mode), src_p.read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spying_replace)
    certs.write_bundle(tmp_path, other)
    assert [s[1] for s in seen] == ["ca.crt", "ca.key", "tls.key", "tls.crt"]  # trust first, cert last
    by_name = {s[1]: s for s in seen}
    assert by_name["tls.key"][2] == 0o600 and by_name["ca.key"][2] == 0o600
    assert by_name["tls.crt"][3].strip() == other.serving.cert_pem.strip()
    assert all(s[0].startswith(".") and s[0].endswith(".tmp") for s in seen)

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    before = (tmp_path / "ca.crt").read_bytes()
    with pytest.raises(OSError):
        certs.write_bundle(tmp_path, bundle)
    assert (tmp_path / "ca.crt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]


def test_certificate_expiry_reads_back(tmp_path: Path, bundle: certs.CertBundle) -> None:
    certs.write_bundle(tmp_path, bundle)
    expiry = certs.certificate_expiry(tmp_path / "tls.crt")
    assert expiry == bundle.serving.certificate.not_valid_after_utc
    assert expiry.tzinfo is not None
    assert certs.certificate_expiry(tmp_path / "ca.crt") == bundle.ca.not_after
    with pytest.raises(certs.CertError):
        certs.certificate_expiry(tmp_path / "missing.crt")
    (tmp_path / "bad.crt").write_text("not a cert")
    with pytest.raises(certs.CertError):
        certs.certificate_expiry(tmp_path / "bad.crt")


def test_read_bundle_missing_or_broken(tmp_path: Path, bundle: certs.CertBundle) -> None:
    assert certs.read_bundle(tmp_path) is None
    certs.write_bundle(tmp_path, bundle)
    (tmp_path / "ca.key").write_bytes(certs.generate_ca(now=NOW).key_pem)  # key of another CA
    assert certs.read_bundle(tmp_path) is None


# ---------------------------------------------------------------------------------------------------------
# Reuse, renewal, rotation


def _snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in directory.iterdir()}


def test_load_or_create_reuses_a_valid_bundle_without_rewriting(tmp_path: Path) -> None:
    first = certs.load_or_create(tmp_path, SVC, NS, now=NOW)
    snap = _snapshot(tmp_path)
    second = certs.load_or_create(tmp_path, SVC, NS, now=NOW + dt.timedelta(days=200))
    assert second == first
    assert _snapshot(tmp_path) == snap  # same inodes: nothing rewritten, no spurious reload


def test_leaf_reissued_within_30_days_of_expiry_ca_kept(tmp_path: Path) -> None:
    first = certs.load_or_create(tmp_path, SVC, NS, now=NOW)
    later = first.serving.not_after - dt.timedelta(days=29)
    second = certs.load_or_create(tmp_path, SVC, NS, now=later)
    assert second.ca == first.ca
    assert second.serving != first.serving
    assert second.serving.not_after > first.serving.not_after
    assert certs.read_bundle(tmp_path) == second
    _verify(second.serving.cert_pem, (tmp_path / "ca.crt").read_bytes(), x509.DNSName("localhost"), later)
    # just outside the window: reused
    third = certs.load_or_create(tmp_path, SVC, NS, now=later + dt.timedelta(days=1))
    assert third == second


def test_leaf_reissued_when_service_names_change(tmp_path: Path) -> None:
    first = certs.load_or_create(tmp_path, SVC, NS, now=NOW)
    moved = certs.load_or_create(tmp_path, SVC, "other-ns", now=NOW)
    assert moved.ca == first.ca and moved.serving != first.serving
    assert "spreadhook-webhook.other-ns.svc" in _sans(moved.serving.cert_pem)


def test_everything_renewed_when_ca_expired_or_unusable(tmp_path: Path) -> None:
    first = certs.load_or_create(tmp_path, SVC, NS, now=NOW)
    after = first.ca.not_after + dt.timedelta(days=1)
    second = certs.refresh(first, SVC, NS, now=after)
    assert second.ca != first.ca and not second.previous_ca_pems


def test_ca_rotation_keeps_old_and_new_ca_during_the_overlap() -> None:
    first = certs.new_bundle(SVC, NS, now=NOW)
    old_ca_expiry = first.ca.not_after

    # The leaf has been renewed yearly by the old CA; the last renewal before rotation is capped at the CA's
    # own expiry.
    aged = certs.refresh(first, SVC, NS, now=old_ca_expiry - dt.timedelta(days=200))
    assert aged.ca == first.ca and aged.serving.not_after == old_ca_expiry

    # 1. The CA enters its last 180 days: a new CA is generated, the old one stays trusted, the leaf stays.
    t1 = old_ca_expiry - dt.timedelta(days=179)
    rotated = certs.refresh(aged, SVC, NS, now=t1)
    assert rotated.ca != first.ca
    assert rotated.serving == aged.serving
    assert rotated.previous_ca_pems == (first.ca.cert_pem,)
    cas = x509.load_pem_x509_certificates(rotated.ca_bundle_pem())
    assert [c.not_valid_after_utc for c in cas] == [old_ca_expiry, rotated.ca.not_after]  # old + new
    _verify(rotated.serving.cert_pem, rotated.ca_bundle_pem(), x509.DNSName("localhost"), t1)
    assert certs.refresh(rotated, SVC, NS, now=t1) is rotated  # stable once rotated

    # 2. Later the leaf is re-issued by the *new* CA; the old CA is still in the bundle until it expires.
    t2 = old_ca_expiry - dt.timedelta(days=20)
    switched = certs.refresh(rotated, SVC, NS, now=t2)
    assert switched.ca == rotated.ca
    assert switched.serving.certificate.issuer == rotated.ca.certificate.subject
    assert switched.previous_ca_pems == (first.ca.cert_pem,)
    _verify(switched.serving.cert_pem, switched.ca_bundle_pem(), x509.DNSName("localhost"), t2)
    _verify(switched.serving.cert_pem, rotated.ca.cert_pem, x509.DNSName("localhost"), t2)

    # 3. Once the old CA has expired it leaves the bundle.
    t3 = old_ca_expiry + dt.timedelta(days=1)
    final = certs.refresh(switched, SVC, NS, now=t3)
    assert final.previous_ca_pems == ()
    assert len(x509.load_pem_x509_certificates(final.ca_bundle_pem())) == 1


def test_rotation_round_trips_through_files(tmp_path: Path) -> None:
    first = certs.load_or_create(tmp_path, SVC, NS, now=NOW)
    t1 = first.ca.not_after - dt.timedelta(days=100)
    rotated = certs.load_or_create(tmp_path, SVC, NS, now=t1)
    assert len(rotated.previous_ca_pems) == 1
    assert len(x509.load_pem_x509_certificates((tmp_path / "ca.crt").read_bytes())) == 2
    again = certs.read_bundle(tmp_path)
    assert again is not None and again.ca == rotated.ca
    assert [p.strip() for p in again.previous_ca_pems] == [p.strip() for p in rotated.previous_ca_pems]


# ---------------------------------------------------------------------------------------------------------
# Kubernetes: caBundle injection and the TLS Secret, against in-memory fakes of the typed API classes


class _Resp:
    def __init__(self, obj: dict[str, Any]) -> None:
        self.data = json.dumps(obj).encode()


def _apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    from kubernetes.client.rest import ApiException

    for op in ops:
        parts = op["path"].strip("/").split("/")
        target: Any = obj
        for p in parts[:-1]:
            target = target[int(p)] if isinstance(target, list) else target.setdefault(p, {})
        if op["op"] == "test":
            if target[parts[-1]] != op["value"]:
                raise ApiException(status=422, reason="test failed")
        else:
            target[parts[-1]] = op["value"]


class FakeCluster:
    def __init__(self) -> None:
        self.mutating = {"webhooks": [{"name": "mpod.spreadhook.io", "clientConfig": {}}]}
        self.validating = {"webhooks": [{"name": "vpod.spreadhook.io", "clientConfig": {}},
                                        {"name": "vworkloadspread.spreadhook.io", "clientConfig": {}}]}
        self.crd: dict[str, Any] | None = {"spec": {"conversion": {
            "strategy": "Webhook", "webhook": {"clientConfig": {"service": {"name": SVC}}}}}}
        self.patches = 0
        self.secret: dict[str, Any] | None = None
        self.secret_rv = 0
        self.writes = 0


def _install_fakes(monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    def not_found() -> ApiException:
        return ApiException(status=404, reason="Not Found")

    class Admission:
        def __init__(self, api_client: Any) -> None: ...

        def read_mutating_webhook_configuration(self, name: str, **kw: Any) -> _Resp:
            return _Resp(cluster.mutating)

        def read_validating_webhook_configuration(self, name: str, **kw: Any) -> _Resp:
            return _Resp(cluster.validating)

        def patch_mutating_webhook_configuration(self, name: str, body: Any) -> None:
            assert isinstance(body, list)  # a JSON patch, never a merge patch replacing the list
            cluster.patches += 1
            _apply_json_patch(cluster.mutating, body)

        def patch_validating_webhook_configuration(self, name: str, body: Any) -> None:
            assert isinstance(body, list)
            cluster.patches += 1
            _apply_json_patch(cluster.validating, body)

    class Ext:
        def __init__(self, api_client: Any) -> None: ...

        def read_custom_resource_definition(self, name: str, **kw: Any) -> _Resp:
            if cluster.crd is None:
                raise not_found()
            return _Resp(cluster.crd)

        def patch_custom_resource_definition(self, name: str, body: Any) -> None:
            assert cluster.crd is not None
            cluster.patches += 1
            _apply_json_patch(cluster.crd, body)

    class Core:
        def __init__(self, api_client: Any) -> None: ...

        def read_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> _Resp:
            if cluster.secret is None:
                raise not_found()
            return _Resp(cluster.secret)

        def create_namespaced_secret(self, namespace: str, body: Any) -> None:
            if cluster.secret is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            self._store(body)

        def replace_namespaced_secret(self, name: str, namespace: str, body: Any) -> None:
            assert cluster.secret is not None
            if body.metadata.resource_version != str(cluster.secret["metadata"]["resourceVersion"]):
                raise ApiException(status=409, reason="Conflict")
            self._store(body)

        def _store(self, body: Any) -> None:
            cluster.secret_rv += 1
            cluster.writes += 1
            cluster.secret = {"metadata": {"resourceVersion": str(cluster.secret_rv)},
                              "type": body.type, "data": dict(body.data)}

    monkeypatch.setattr(client, "AdmissionregistrationV1Api", Admission)
    monkeypatch.setattr(client, "ApiextensionsV1Api", Ext)
    monkeypatch.setattr(client, "CoreV1Api", Core)


def test_inject_ca_bundle_patches_every_webhook_and_the_crd(
    monkeypatch: pytest.MonkeyPatch, bundle: certs.CertBundle
) -> None:
    cluster = FakeCluster()
    _install_fakes(monkeypatch, cluster)
    result = certs.inject_ca_bundle(object(), bundle.ca_bundle_pem())
    want = base64.b64encode(bundle.ca_bundle_pem()).decode()
    hooks = cluster.mutating["webhooks"] + cluster.validating["webhooks"]
    assert [h["clientConfig"]["caBundle"] for h in hooks] == [want] * 3
    assert cluster.crd is not None
    assert cluster.crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"] == want
    assert len(result.patched) == 3 and not result.missing

    # idempotent: a second run writes nothing
    again = certs.inject_ca_bundle(object(), bundle.ca_bundle_pem())
    assert cluster.patches == 3 and len(again.unchanged) == 3


def test_inject_ca_bundle_reports_missing_crd(
    monkeypatch: pytest.MonkeyPatch, bundle: certs.CertBundle
) -> None:
    cluster = FakeCluster()
    cluster.crd = None
    _install_fakes(monkeypatch, cluster)
    result = certs.inject_ca_bundle(object(), bundle.ca_bundle_pem())
    assert result.missing == ("customresourcedefinitions/workloadspreads.apps.kruise.io",)
    assert len(result.patched) == 2


def test_ensure_secret_creates_then_reuses(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster()
    _install_fakes(monkeypatch, cluster)
    first = certs.ensure_secret(object(), NS, "spreadhook-webhook-tls", SVC, now=NOW)
    assert cluster.writes == 1 and cluster.secret is not None
    assert set(cluster.secret["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca.key"}
    assert cluster.secret["type"] == "kubernetes.io/tls"
    second = certs.ensure_secret(object(), NS, "spreadhook-webhook-tls", SVC, now=NOW + dt.timedelta(days=10))
    assert cluster.writes == 1 and second == first
    renewed = certs.ensure_secret(object(), NS, "spreadhook-webhook-tls", SVC,
                                  now=first.serving.not_after - dt.timedelta(days=5))
    assert cluster.writes == 2 and renewed.ca == first.ca and renewed.serving != first.serving


def test_ensure_secret_adopts_the_winner_of_a_race(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas start together: the loser must end up with the winner's CA, not overwrite it."""
    cluster = FakeCluster()
    _install_fakes(monkeypatch, cluster)
    from kubernetes import client

    core_cls = client.CoreV1Api
    winner = certs.new_bundle(SVC, NS, now=NOW)

    class Racing(core_cls):  # type: ignore[misc, valid-type]
        def create_namespaced_secret(self, namespace: str, body: Any) -> None:
            if cluster.secret is None:  # the other replica creates it between our read and our create
                cluster.secret_rv += 1
                cluster.secret = {"metadata": {"resourceVersion": str(cluster.secret_rv)},
                                  "data": certs.bundle_to_secret_data(winner)}
            super().create_namespaced_secret(namespace, body)

    monkeypatch.setattr(client, "CoreV1Api", Racing)
    got = certs.ensure_secret(object(), NS, "spreadhook-webhook-tls", SVC, now=NOW)
    assert got.ca == winner.ca and got.serving == winner.serving
