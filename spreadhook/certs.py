"""The webhook's TLS material: a private CA, the serving certificate it signs, and the caBundle.

kube-apiserver only calls a webhook whose serving certificate chains to the ``caBundle`` registered in the
Mutating-/ValidatingWebhookConfiguration (and, for the conversion webhook, in the CRD). An expired or
mismatched CA there is a recurring cluster-wide outage in other projects, so this module is written around
three rules:

* **Renew early, never in place.** The serving (leaf) certificate lives one year and is re-issued when fewer
  than 30 days remain; the CA lives ten years and is *rotated* (a new CA generated) while the old one is still
  valid, so there is always an overlap during which the trust bundle holds both.
* **Widen trust before switching the leaf.** After a CA rotation the old leaf keeps being served and the new
  CA is only *added* to the bundle; the leaf moves to the new CA much later (when it is itself due), by which
  time every caBundle has long been updated. The old CA leaves the bundle only when it expires.
* **Never let a reader see half a file.** Files are written to a temporary name in the same directory, flushed
  and renamed over the target (``os.replace`` is atomic on POSIX), so a server reloading on change reads the
  old file or the new one, never a truncated one.

The Kubernetes client is imported lazily, only inside the functions that talk to the API server
(:func:`inject_ca_bundle`, :func:`ensure_secret`), so generating certificates for local use
(``spreadhook certs``, ``spreadhook demo``, tests) needs no cluster and no client.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVICE = "spreadhook-webhook"
DEFAULT_NAMESPACE = "spreadhook-system"
DEFAULT_SECRET = "spreadhook-webhook-tls"
DEFAULT_WEBHOOK_CONFIGURATION = "spreadhook"
DEFAULT_CRD = "workloadspreads.apps.kruise.io"

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
#: Re-issue the serving certificate when it expires within this window (cert-manager uses 1/3 of the
#: lifetime; 30 days leaves a month of alerts and retries before anything breaks).
LEAF_RENEW_BEFORE = dt.timedelta(days=30)
#: Rotate the CA this long before it expires. Must exceed LEAF_RENEW_BEFORE: the new CA then sits in every
#: caBundle for (CA_RENEW_BEFORE - LEAF_RENEW_BEFORE) before any leaf signed by it is served.
CA_RENEW_BEFORE = dt.timedelta(days=180)
#: Backdate notBefore so that a node whose clock is a little behind still accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)

TLS_CRT = "tls.crt"
TLS_KEY = "tls.key"
CA_CRT = "ca.crt"
CA_KEY = "ca.key"


class CertError(RuntimeError):
    """Certificate material is missing, unreadable, or could not be stored."""


# --------------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True, slots=True)
class CertKeyPair:
    """One certificate and its private key, both PEM-encoded (the form every consumer wants)."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def not_after(self) -> dt.datetime:
        return self.certificate.not_valid_after_utc


@dataclass(frozen=True, slots=True)
class CertBundle:
    """Everything a webhook replica needs: the current CA (with its key, to issue the next leaf), the serving
    certificate, and older CAs that are still trusted because the rotation overlap is not over yet."""

    ca: CertKeyPair
    serving: CertKeyPair
    previous_ca_pems: tuple[bytes, ...] = field(default=())

    def ca_bundle_pem(self) -> bytes:
        """The trust bundle for ``caBundle`` and for clients: previous (still valid) CAs first, then the
        current CA. During a rotation this is old + new, so leaves signed by either verify."""
        parts = [_normalise_pem(p) for p in self.previous_ca_pems]
        parts.append(_normalise_pem(self.ca.cert_pem))
        return b"".join(parts)

    def ca_bundle_b64(self) -> str:
        """``caBundle`` as the API wants it in a JSON patch: base64 of the PEM bundle."""
        return base64.b64encode(self.ca_bundle_pem()).decode("ascii")


@dataclass(frozen=True, slots=True)
class InjectionResult:
    """What :func:`inject_ca_bundle` did, so the caller can log it: objects patched, objects already up to
    date, and objects that do not exist (for example no CRD conversion webhook in a local setup)."""

    patched: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


# --------------------------------------------------------------------------------------------------
# Generation


def _now(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        return now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # ECDSA P-256: accepted by Go's TLS stack (kube-apiserver), Python's ssl and every browser; key generation
    # is ~1000x faster than RSA, which keeps tests and `spreadhook demo` start-up instant.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names kube-apiserver may use to reach a Service-backed webhook (it dials ``<svc>.<ns>.svc``; the
    others cover in-cluster clients and custom cluster domains' common default)."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
        "localhost",
    ]


LOOPBACK_IPS: tuple[str, ...] = ("127.0.0.1", "::1")


def generate_ca(
    common_name: str = "spreadhook-webhook-ca",
    *,
    validity: dt.timedelta = CA_VALIDITY,
    now: dt.datetime | None = None,
) -> CertKeyPair:
    """A self-signed CA that may sign only end-entity certificates (pathLen 0): even if its key leaked, it
    could not mint intermediate CAs. The random suffix in the subject makes two CAs (old and new during a
    rotation) distinguishable in ``openssl`` output."""
    start = _now(now)
    key = _new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spreadhook"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name}@{int(start.timestamp())}"),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate_serving_cert(
    ca: CertKeyPair,
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    extra_sans: Iterable[str] = (),
    validity: dt.timedelta = LEAF_VALIDITY,
    now: dt.datetime | None = None,
) -> CertKeyPair:
    """A server certificate signed by ``ca`` for the Service's DNS names, ``localhost`` and the loopback IPs
    (the last two let ``spreadhook demo``, tests and a url-registered local webhook verify TLS properly).

    ``extra_sans`` may hold more DNS names or IP addresses. The leaf never outlives its CA: a leaf valid
    past its issuer's expiry would fail verification at the CA's expiry anyway, and capping it makes the
    renewal logic (which looks only at the leaf) re-issue it in time."""
    start = _now(now)
    ca_cert = ca.certificate
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    # A CA brought by the user (cert-manager, corporate PKI) is often RSA: accept it for signing.
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertError("unsupported CA key type (need ECDSA or RSA)")
    key = _new_key()
    sans = _san_list([*service_dns_names(service, namespace), *LOOPBACK_IPS, *extra_sans])
    not_after = min(start + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spreadhook"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{service}.{namespace}.svc"),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return CertKeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        ski = x509.SubjectKeyIdentifier.from_public_key(ca_cert.public_key())
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _san_list(names: Iterable[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in names:
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def new_bundle(
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    extra_sans: Iterable[str] = (),
    now: dt.datetime | None = None,
    ca_validity: dt.timedelta = CA_VALIDITY,
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
) -> CertBundle:
    """A fresh CA and a serving certificate signed by it."""
    ca = generate_ca(validity=ca_validity, now=now)
    leaf = generate_serving_cert(ca, service, namespace, extra_sans=extra_sans, validity=leaf_validity,
                                 now=now)
    return CertBundle(ca=ca, serving=leaf)


# --------------------------------------------------------------------------------------------------
# Inspection


def _normalise_pem(pem: bytes) -> bytes:
    pem = pem.strip()
    return pem + b"\n" if pem else b""


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM blob (a bundle may hold several)."""
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertError(f"not a PEM certificate: {exc}") from exc


def certificate_expiry(path: str | os.PathLike[str]) -> dt.datetime:
    """``notAfter`` (UTC, timezone-aware) of the first certificate in a PEM file: the serving certificate
    when given ``tls.crt``. The server exports it as a gauge so an alert fires long before expiry."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read {path}: {exc.strerror}") from exc
    certs = load_certificates(pem)
    return certs[0].not_valid_after_utc


def _public_der(obj: Any) -> bytes:
    return bytes(obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ))


def key_matches_certificate(cert_pem: bytes, key_pem: bytes) -> bool:
    """True when the private key belongs to the (first) certificate. tls.crt and tls.key are two files
    renamed one after the other, so a reloading server can catch the new key with the old certificate for
    an instant; it should check this and keep its current context until both match."""
    try:
        cert = load_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (CertError, ValueError, TypeError, IndexError):
        return False
    return _public_der(cert) == _public_der(key)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _sans(cert: x509.Certificate) -> set[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return set()
    dns = ext.value.get_values_for_type(x509.DNSName)
    ips = ext.value.get_values_for_type(x509.IPAddress)
    return set(dns) | {str(ip) for ip in ips}


def _expected_sans(service: str, namespace: str, extra_sans: Iterable[str]) -> set[str]:
    names = [*service_dns_names(service, namespace), *LOOPBACK_IPS, *extra_sans]
    return {str(ipaddress.ip_address(n)) if _is_ip(n) else n for n in names if n}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Renewal decisions (no I/O)


def refresh(
    bundle: CertBundle | None,
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    extra_sans: Iterable[str] = (),
    now: dt.datetime | None = None,
    ca_validity: dt.timedelta = CA_VALIDITY,
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
    renew_before: dt.timedelta = LEAF_RENEW_BEFORE,
    ca_renew_before: dt.timedelta = CA_RENEW_BEFORE,
) -> CertBundle:
    """The bundle to use from now on: ``bundle`` itself when it is still good (the same object, so callers
    can test ``is`` to know whether to write), otherwise a repaired one.

    * no bundle, or a CA that is expired/unusable: everything new;
    * CA expiring within ``ca_renew_before``: a new CA becomes current, the old one moves to
      ``previous_ca_pems`` (trust widened, leaf unchanged);
    * leaf missing its key, not issued by a trusted CA, with other SANs than wanted, or expiring within
      ``renew_before``: a new leaf from the current CA;
    * previous CAs that have expired leave the bundle.
    """
    extra = tuple(extra_sans)
    at = _now(now)
    if bundle is None:
        return new_bundle(service, namespace, extra_sans=extra, now=at, ca_validity=ca_validity,
                          leaf_validity=leaf_validity)
    try:
        ca_cert: x509.Certificate | None = bundle.ca.certificate
    except ValueError:
        ca_cert = None
    if (ca_cert is None or not key_matches_certificate(bundle.ca.cert_pem, bundle.ca.key_pem)
            or ca_cert.not_valid_after_utc <= at):
        return new_bundle(service, namespace, extra_sans=extra, now=at, ca_validity=ca_validity,
                          leaf_validity=leaf_validity)

    changed = False
    ca = bundle.ca
    previous: list[bytes] = []
    for pem in bundle.previous_ca_pems:
        try:
            still_valid = load_certificates(pem)[0].not_valid_after_utc > at
        except (CertError, IndexError):
            still_valid = False
        if still_valid:
            previous.append(pem)
        else:
            changed = True

    if ca_cert.not_valid_after_utc - at <= ca_renew_before:
        previous.append(ca.cert_pem)
        ca = generate_ca(validity=ca_validity, now=at)
        changed = True

    trusted = [load_certificates(p)[0] for p in previous] + [ca.certificate]
    serving = bundle.serving
    if _leaf_needs_reissue(serving, trusted, _expected_sans(service, namespace, extra), at, renew_before):
        serving = generate_serving_cert(ca, service, namespace, extra_sans=extra, validity=leaf_validity,
                                        now=at)
        changed = True

    if not changed:
        return bundle
    return CertBundle(ca=ca, serving=serving, previous_ca_pems=tuple(previous))


def _leaf_needs_reissue(
    leaf: CertKeyPair,
    trusted: Sequence[x509.Certificate],
    wanted_sans: set[str],
    at: dt.datetime,
    renew_before: dt.timedelta,
) -> bool:
    if not key_matches_certificate(leaf.cert_pem, leaf.key_pem):
        return True
    cert = leaf.certificate
    if cert.not_valid_after_utc - at <= renew_before or cert.not_valid_before_utc > at + CLOCK_SKEW:
        return True
    if not any(_issued_by(cert, ca) for ca in trusted):
        return True
    return _sans(cert) != wanted_sans


# --------------------------------------------------------------------------------------------------
# Files


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file beside ``path`` (same filesystem, so the rename is atomic), fsync it, set
    the final mode *before* the rename (a key is never visible with a wider mode), then rename over."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bundle(out_dir: str | os.PathLike[str], bundle: CertBundle) -> None:
    """Write ``ca.crt`` (the trust bundle: previous + current CA, 0644), ``ca.key`` (0600), ``tls.key``
    (0600) and ``tls.crt`` (0644) into ``out_dir``, each atomically.

    The order matters for a server that reloads on change: trust first, then the key, and ``tls.crt`` last,
    so the certificate's change is the final event and a reload triggered by it finds the matching key
    already in place (see :func:`key_matches_certificate` for the instant between the two renames).
    The directory is created 0700 when missing: it holds private keys."""
    directory = Path(out_dir)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _atomic_write(directory / CA_CRT, bundle.ca_bundle_pem(), 0o644)
    _atomic_write(directory / CA_KEY, _normalise_pem(bundle.ca.key_pem), 0o600)
    _atomic_write(directory / TLS_KEY, _normalise_pem(bundle.serving.key_pem), 0o600)
    _atomic_write(directory / TLS_CRT, _normalise_pem(bundle.serving.cert_pem), 0o644)


def bundle_from_parts(
    tls_crt: bytes, tls_key: bytes, ca_crt: bytes, ca_key: bytes | None
) -> CertBundle | None:
    """Rebuild a bundle from the four stored blobs (files or Secret keys). ``ca.crt`` may hold several CAs;
    the current one is the CA whose public key matches ``ca.key``, the others are the previous ones.
    Returns None when the CA key is absent or matches none of them: such material cannot issue a new leaf,
    so the caller must start over (serving it read-only is the server's business, not this module's)."""
    if not ca_key or not tls_crt or not tls_key or not ca_crt:
        return None
    try:
        cas = load_certificates(ca_crt)
        key = serialization.load_pem_private_key(ca_key, password=None)
    except (CertError, ValueError, TypeError):
        return None
    key_der = _public_der(key)
    current = next((c for c in cas if _public_der(c) == key_der), None)
    if current is None:
        return None
    previous = tuple(c.public_bytes(serialization.Encoding.PEM) for c in cas if c is not current)
    return CertBundle(
        ca=CertKeyPair(current.public_bytes(serialization.Encoding.PEM), ca_key),
        serving=CertKeyPair(tls_crt, tls_key),
        previous_ca_pems=previous,
    )


def read_bundle(out_dir: str | os.PathLike[str]) -> CertBundle | None:
    """The bundle stored in ``out_dir``, or None when any file is missing or unreadable."""
    directory = Path(out_dir)
    try:
        parts = [(directory / n).read_bytes() for n in (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY)]
    except OSError:
        return None
    return bundle_from_parts(*parts)


def load_or_create(
    out_dir: str | os.PathLike[str],
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    extra_sans: Iterable[str] = (),
    now: dt.datetime | None = None,
    ca_validity: dt.timedelta = CA_VALIDITY,
    leaf_validity: dt.timedelta = LEAF_VALIDITY,
    renew_before: dt.timedelta = LEAF_RENEW_BEFORE,
    ca_renew_before: dt.timedelta = CA_RENEW_BEFORE,
) -> CertBundle:
    """Reuse the bundle in ``out_dir`` when it is still good; otherwise renew what is due (see
    :func:`refresh`) and write it. Files are rewritten only when something changed, so calling this on
    every start-up does not make running servers reload for nothing."""
    current = read_bundle(out_dir)
    fresh = refresh(
        current, service, namespace, extra_sans=extra_sans, now=now, ca_validity=ca_validity,
        leaf_validity=leaf_validity, renew_before=renew_before, ca_renew_before=ca_renew_before,
    )
    if fresh is not current:
        write_bundle(out_dir, fresh)
    return fresh


# --------------------------------------------------------------------------------------------------
# Kubernetes: Secret as the shared store, caBundle injection


def bundle_to_secret_data(bundle: CertBundle) -> dict[str, str]:
    """Secret ``data`` (base64 values): ``tls.crt``, ``tls.key``, ``ca.crt`` (trust bundle) and ``ca.key``.
    The CA key lives beside the leaf because the replicas themselves renew the leaf; the Secret is readable
    only by the webhook's ServiceAccount (deploy/rbac.yaml)."""
    raw = {
        TLS_CRT: _normalise_pem(bundle.serving.cert_pem),
        TLS_KEY: _normalise_pem(bundle.serving.key_pem),
        CA_CRT: bundle.ca_bundle_pem(),
        CA_KEY: _normalise_pem(bundle.ca.key_pem),
    }
    return {k: base64.b64encode(v).decode("ascii") for k, v in raw.items()}


def bundle_from_secret_data(data: dict[str, str] | None) -> CertBundle | None:
    """Inverse of :func:`bundle_to_secret_data`; None when the Secret holds no usable bundle."""
    if not data:
        return None
    try:
        raw = {k: base64.b64decode(v) for k, v in data.items()}
    except (ValueError, TypeError):
        return None
    return bundle_from_parts(raw.get(TLS_CRT, b""), raw.get(TLS_KEY, b""), raw.get(CA_CRT, b""),
                             raw.get(CA_KEY))


def _read_json(response: Any) -> dict[str, Any]:
    data = response.data if hasattr(response, "data") else response
    if isinstance(data, bytes | bytearray):
        data = data.decode("utf-8")
    loaded = json.loads(data) if isinstance(data, str) else data
    if not isinstance(loaded, dict):
        raise CertError("unexpected API response")
    return loaded


def ensure_secret(
    api_client: Any,
    namespace: str = DEFAULT_NAMESPACE,
    name: str = DEFAULT_SECRET,
    service: str = DEFAULT_SERVICE,
    *,
    extra_sans: Iterable[str] = (),
    now: dt.datetime | None = None,
    renew_before: dt.timedelta = LEAF_RENEW_BEFORE,
    ca_renew_before: dt.timedelta = CA_RENEW_BEFORE,
    attempts: int = 5,
) -> CertBundle:
    """Make the TLS Secret hold a good bundle and return it: the Secret, not a replica's disk, is the one
    place where the CA lives, so every replica serves a leaf from the same CA and one caBundle fits all.

    Create when absent, renew when due, with the ``resourceVersion`` precondition of a replace: when two
    replicas start together, one wins and the other gets 409/AlreadyExists, re-reads and adopts the winner's
    bundle instead of overwriting it (which would leave the first replica serving an untrusted cert).
    The Deployment mounts this Secret at the cert dir; kubelet refreshes the mounted files atomically."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    core = client.CoreV1Api(api_client)
    extra = tuple(extra_sans)
    last_error: Exception | None = None
    for _ in range(max(1, attempts)):
        try:
            raw = _read_json(core.read_namespaced_secret(name, namespace, _preload_content=False))
        except ApiException as exc:
            if exc.status != 404:
                raise CertError(
                    f"cannot read Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
                ) from exc
            raw = None
        existing = bundle_from_secret_data(raw.get("data") if raw else None)
        fresh = refresh(existing, service, namespace, extra_sans=extra, now=now, renew_before=renew_before,
                        ca_renew_before=ca_renew_before)
        if raw is not None and fresh is existing:
            return fresh
        meta = client.V1ObjectMeta(
            name=name, namespace=namespace,
            labels={"app.kubernetes.io/name": "spreadhook", "app.kubernetes.io/component": "webhook-tls"},
        )
        data: dict[str, bytes | str] = dict(bundle_to_secret_data(fresh))
        body = client.V1Secret(metadata=meta, type="kubernetes.io/tls", data=data)
        try:
            if raw is None:
                core.create_namespaced_secret(namespace, body)
            else:
                meta.resource_version = str(raw.get("metadata", {}).get("resourceVersion", ""))
                old_labels = raw.get("metadata", {}).get("labels") or {}
                meta.labels = {**old_labels, **(meta.labels or {})}
                core.replace_namespaced_secret(name, namespace, body)
            return fresh
        except ApiException as exc:
            if exc.status == 409:  # lost the race (AlreadyExists / Conflict): re-read, adopt
                last_error = exc
                continue
            raise CertError(
                f"cannot write Secret {namespace}/{name}: HTTP {exc.status} {exc.reason}"
            ) from exc
    raise CertError(f"Secret {namespace}/{name} kept changing under us ({attempts} attempts): {last_error}")


def _webhook_patch(webhooks: list[dict[str, Any]], ca_b64: str) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    for i, hook in enumerate(webhooks):
        if (hook.get("clientConfig") or {}).get("caBundle") == ca_b64:
            continue
        # `test` pins the index to the webhook we read: if someone reordered the list meanwhile, the whole
        # patch fails (422) instead of writing a caBundle into the wrong webhook, and we retry on fresh state.
        ops.append({"op": "test", "path": f"/webhooks/{i}/name", "value": hook.get("name")})
        ops.append({"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": ca_b64})
    return ops


def inject_ca_bundle(
    api_client: Any,
    ca_pem: bytes,
    mutating_name: str = DEFAULT_WEBHOOK_CONFIGURATION,
    validating_name: str = DEFAULT_WEBHOOK_CONFIGURATION,
    crd_name: str = DEFAULT_CRD,
    *,
    attempts: int = 3,
) -> InjectionResult:
    """Set ``clientConfig.caBundle`` on every webhook of the two configurations and on the CRD's conversion
    webhook, so kube-apiserver trusts the serving certificate.

    Idempotent and minimal: objects already carrying this bundle are not written (no watch events, no
    conflicts with GitOps tools on every restart); a missing object is reported, not an error (a local
    setup may register url webhooks without the CRD conversion). JSON patches with a ``test`` guard on each
    webhook's name, retried on fresh state when the list changed under us. RBAC restricts this to these
    three names (deploy/rbac.yaml)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    ca_b64 = base64.b64encode(ca_pem).decode("ascii")
    admission = client.AdmissionregistrationV1Api(api_client)
    crds = client.ApiextensionsV1Api(api_client)
    patched: list[str] = []
    unchanged: list[str] = []
    missing: list[str] = []

    targets: list[tuple[str, Any, Any]] = [
        (f"mutatingwebhookconfigurations/{mutating_name}",
         lambda: admission.read_mutating_webhook_configuration(mutating_name, _preload_content=False),
         lambda ops: admission.patch_mutating_webhook_configuration(mutating_name, ops)),
        (f"validatingwebhookconfigurations/{validating_name}",
         lambda: admission.read_validating_webhook_configuration(validating_name, _preload_content=False),
         lambda ops: admission.patch_validating_webhook_configuration(validating_name, ops)),
        (f"customresourcedefinitions/{crd_name}",
         lambda: crds.read_custom_resource_definition(crd_name, _preload_content=False),
         lambda ops: crds.patch_custom_resource_definition(crd_name, ops)),
    ]
    for label, read, patch in targets:
        for attempt in range(max(1, attempts)):
            try:
                obj = _read_json(read())
            except ApiException as exc:
                if exc.status == 404:
                    missing.append(label)
                    break
                raise CertError(f"cannot read {label}: HTTP {exc.status} {exc.reason}") from exc
            if label.startswith("customresourcedefinitions/"):
                ops = _crd_patch(obj, ca_b64)
                if ops is None:
                    missing.append(label + " (no conversion webhook)")
                    break
            else:
                ops = _webhook_patch(list(obj.get("webhooks") or []), ca_b64)
            if not ops:
                unchanged.append(label)
                break
            try:
                patch(ops)
            except ApiException as exc:
                if exc.status in (409, 422) and attempt + 1 < attempts:
                    continue
                raise CertError(f"cannot patch {label}: HTTP {exc.status} {exc.reason}") from exc
            patched.append(label)
            break
    return InjectionResult(tuple(patched), tuple(unchanged), tuple(missing))


def _crd_patch(crd: dict[str, Any], ca_b64: str) -> list[dict[str, Any]] | None:
    conversion = (crd.get("spec") or {}).get("conversion") or {}
    webhook = conversion.get("webhook")
    if conversion.get("strategy") != "Webhook" or not isinstance(webhook, dict):
        return None
    if (webhook.get("clientConfig") or {}).get("caBundle") == ca_b64:
        return []
    return [{"op": "add", "path": "/spec/conversion/webhook/clientConfig/caBundle", "value": ca_b64}]
