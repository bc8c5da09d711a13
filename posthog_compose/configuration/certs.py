"""Certificates for TLS inside the deployment, made with the `cryptography` package.

Owns the private CA of the deployment and the server certificates of `clickhouse`, `db` and `redis`
under certs/ (git-ignored): the folder is 0700, private keys 0600, certificates 0644. Each server
certificate names the Compose service (the host name the other containers use), `localhost` and
127.0.0.1. Also answers what `harden --check` asks: do they exist, do they chain to the CA, and
when do they expire.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from posthog_compose.fileops import atomic_write

CERT_DIR = "certs"
CA_NAME = "ca"
SERVICES = ("clickhouse", "db", "redis")
CA_DAYS = 3650
SERVER_DAYS = 825  # the longest validity clients commonly accept for a server certificate
RENEW_DAYS = 30  # --check fails when a certificate expires sooner than this


@dataclass
class CertStatus:
    name: str
    exists: bool
    expires: dt.datetime | None = None
    problem: str = ""

    @property
    def days_left(self) -> int | None:
        if self.expires is None:
            return None
        return (self.expires - dt.datetime.now(dt.timezone.utc)).days


def cert_dir(root: Path) -> Path:
    return Path(root) / CERT_DIR


def paths(root: Path, name: str) -> tuple[Path, Path]:
    """(certificate, key) of ``name`` (``ca`` or a service)."""
    directory = cert_dir(root)
    return directory / f"{name}.crt", directory / f"{name}.key"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    atomic_write(path, pem.decode("ascii"), 0o600)


def _write_cert(path: Path, certificate) -> None:
    from cryptography.hazmat.primitives import serialization

    atomic_write(path, certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"), 0o644)


def _load(root: Path, name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert_path, key_path = paths(root, name)
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    return certificate, key


def make_ca(root: Path, project: str = "posthog"):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{project} deployment"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"{project} deployment CA")])
    now = _now()
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = paths(root, CA_NAME)
    _write_key(key_path, key)
    _write_cert(cert_path, certificate)
    return certificate, key


def make_server_cert(root: Path, service: str, ca_certificate, ca_key, names=None, days: int | None = None):
    """A server certificate signed by the CA, saved as certs/<service>.crt and .key. ``names`` are
    the subject alternative names (default: the service, localhost, 127.0.0.1)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _new_key()
    now = _now()
    if names is None:
        names = [x509.DNSName(service), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days or SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_agreement=True,
                                     content_commitment=False, data_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = paths(root, service)
    _write_key(key_path, key)
    _write_cert(cert_path, certificate)
    return certificate


def ensure(root: Path) -> list[str]:
    """Create whatever is missing, invalid or expiring within RENEW_DAYS; return what was written.
    Idempotent: a second call with valid certificates writes nothing."""
    directory = cert_dir(root)
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    written = []
    ca = inspect(root, CA_NAME)
    if ca.problem:
        ca_certificate, ca_key = make_ca(root)
        written.append(CA_NAME)
    else:
        ca_certificate, ca_key = _load(root, CA_NAME)
    for service in SERVICES:
        status = inspect(root, service)
        if CA_NAME in written or status.problem:
            make_server_cert(root, service, ca_certificate, ca_key)
            written.append(service)
    return written


def inspect(root: Path, name: str) -> CertStatus:
    """Existence, chain to the CA (for server certificates), host name, key match and expiry."""
    cert_path, key_path = paths(root, name)
    if not cert_path.exists() or not key_path.exists():
        return CertStatus(name, False, problem=f"{cert_path.relative_to(root)} or its key is missing")
    try:
        certificate, key = _load(root, name)
    except (ValueError, TypeError, OSError) as exc:
        return CertStatus(name, True, problem=f"{cert_path.relative_to(root)} cannot be read ({exc})")
    status = CertStatus(name, True, certificate.not_valid_after_utc)
    if key_path.stat().st_mode & 0o077:
        status.problem = f"{key_path.relative_to(root)} is readable by others (chmod 600)"
    elif certificate.public_key().public_numbers() != key.public_key().public_numbers():
        status.problem = f"{key_path.relative_to(root)} does not belong to {cert_path.name}"
    elif status.days_left is not None and status.days_left < RENEW_DAYS:
        status.problem = f"{cert_path.name} expires in {status.days_left} day(s) ({status.expires:%Y-%m-%d})"
    elif name != CA_NAME:
        status.problem = _chain_problem(root, name, certificate)
    return status


def _chain_problem(root: Path, service: str, certificate) -> str:
    from cryptography import x509

    try:
        ca_certificate, _ = _load(root, CA_NAME)
        certificate.verify_directly_issued_by(ca_certificate)
    except Exception as exc:  # any failure to verify is the same finding for the operator
        return f"{service}.crt is not signed by certs/ca.crt ({exc.__class__.__name__})"
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    if service not in names.get_values_for_type(x509.DNSName):
        return f"{service}.crt does not name the host {service}"
    return ""


def all_status(root: Path) -> list[CertStatus]:
    return [inspect(root, name) for name in (CA_NAME, *SERVICES)]
