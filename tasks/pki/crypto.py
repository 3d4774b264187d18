"""X.509 building blocks for the cluster PKI: keys, CAs as kubeadm makes them, leaf certificates.

Pure functions over PEM bytes; callers decide where files go. `cryptography` is imported
here, so only actions import this module (never `doit list`).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from collections.abc import Sequence
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tasks.errors import PkiError
from tasks.facts import KEY_ALGORITHMS

# kubeadm backdates its certificates a little so a node whose clock lags the host's
# still accepts them right after boot.
BACKDATE = datetime.timedelta(minutes=5)

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CaParams(NamedTuple):
    """What a CA was made with: compared against config to refuse silent replacement."""

    key_algorithm: str
    validity_days: int


def generate_key(key_algorithm: str) -> PrivateKey:
    if key_algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_algorithm in KEY_ALGORITHMS:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_algorithm.split("-")[1]))
    raise PkiError(
        f"unknown key algorithm {key_algorithm!r}",
        f"use one of {', '.join(KEY_ALGORITHMS)} (kubernetes.key_algorithm in config.yaml)",
    )


def key_algorithm_of(key: object) -> str:
    """The config name of a key's algorithm (works for public and private keys)."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    ):
        return "ecdsa-p256"
    raise PkiError(f"unsupported key type {type(key).__name__}", "use RSA or ECDSA P-256 keys")


def private_key_pem(key: PrivateKey) -> bytes:
    # PKCS#1 / SEC1 ("RSA PRIVATE KEY" / "EC PRIVATE KEY"), the encodings kubeadm writes itself.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes, what: str) -> PrivateKey:
    try:
        # Only the pipeline's own keys (0600 files in 0700 folders it wrote) are loaded here, and
        # callers check each key against its certificate. OpenSSL's RSA consistency check costs
        # ~35 ms per key on every load, so it is skipped: it guards against crafted foreign keys.
        key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{what} is not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiError(f"{what} holds a {type(key).__name__}; only RSA and ECDSA keys are supported")
    return key


def load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"{what} is not a readable PEM certificate: {exc}") from None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def create_ca(common_name: str, key_algorithm: str, validity_days: int) -> tuple[bytes, bytes]:
    """A self-signed CA shaped like kubeadm's: (certificate PEM, private key PEM)."""
    key = generate_key(key_algorithm)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key)


def ca_params(cert_pem: bytes, what: str = "CA certificate") -> CaParams:
    """Recover the key algorithm and validity a CA was made with, from the certificate alone."""
    cert = load_certificate(cert_pem, what)
    span = cert.not_valid_after_utc - cert.not_valid_before_utc - BACKDATE
    return CaParams(key_algorithm_of(cert.public_key()), round(span.total_seconds() / 86400))


def check_key_pair(cert_pem: bytes, key_pem: bytes, what: str) -> None:
    """Raise PkiError unless key_pem is the private key of cert_pem."""
    cert = load_certificate(cert_pem, f"{what}.crt")
    key = load_private_key(key_pem, f"{what}.key")
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, spki) != key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ):
        raise PkiError(
            f"{what}.key does not belong to {what}.crt: the PKI set is inconsistent",
            "restore both files from a backup (or build/<name>/pki-archive/), "
            "or rotate with `doit rotate_pki`",
        )


def discovery_hash(ca_cert_pem: bytes) -> str:
    """kubeadm's --discovery-token-ca-cert-hash: sha256 of the CA's DER SubjectPublicKeyInfo."""
    cert = load_certificate(ca_cert_pem, "CA certificate")
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def sign_certificate(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    server: bool = False,
    client: bool = False,
    validity_days: int = 365,
    key_algorithm: str | None = None,
    key: PrivateKey | None = None,
) -> tuple[bytes, bytes]:
    """A leaf certificate signed by the CA: (certificate PEM, private key PEM).

    The key is `key` when given (made ahead, say in parallel), else a new one of key_algorithm,
    or of the CA's own algorithm when None. Validity never exceeds the CA's (a verifier would
    reject the tail anyway).
    """
    if not (server or client):
        raise PkiError("a certificate must be for a server, a client, or both")
    ca_cert = load_certificate(ca_cert_pem, "CA certificate")
    ca_key = load_private_key(ca_key_pem, "CA key")
    key = key or generate_key(key_algorithm or key_algorithm_of(ca_key))
    now = _now()
    not_after = min(now + datetime.timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(str(ip))) for ip in ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key)


def not_after(cert_pem: bytes, what: str) -> datetime.datetime:
    return load_certificate(cert_pem, what).not_valid_after_utc
