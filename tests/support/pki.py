"""Cluster PKIs for tests, made by the project's own code: CAs, admin.conf, an API server certificate.

`make_pki(where)` writes where/pki/ and where/admin.conf (pointing at the VIP: data only, nothing
connects to it); `apiserver_pki(where)` adds an API server certificate for 127.0.0.1, which the
fake API (support/fake_api.py) presents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from support.configs import VIP
from tasks.pki import issue_certificate
from tasks.pki.kubeconfig import write_admin_conf
from tasks.pki.store import generate_pki

SERVER = f"https://{VIP}:6444"  # data only: nothing connects to the VIP


def make_pki(where: Path, *, key_algorithm: str, validity_days: int, cluster_name: str) -> Path:
    """where/pki (returned) and where/admin.conf for SERVER."""
    pki_dir = where / "pki"
    generate_pki(pki_dir, key_algorithm=key_algorithm, validity_days=validity_days, cluster_name=cluster_name)
    write_admin_conf(pki_dir, where / "admin.conf", cluster_name=cluster_name, server=SERVER)
    return pki_dir


def write_apiserver_cert(pki_dir: Path, where: Path) -> tuple[Path, Path]:
    """An API server certificate for 127.0.0.1 from the cluster CA in pki_dir: where/apiserver.{crt,key}."""
    cert, key = issue_certificate(pki_dir, common_name="kube-apiserver", ip_addresses=["127.0.0.1"], server=True)
    (where / "apiserver.crt").write_bytes(cert)
    (where / "apiserver.key").write_bytes(key)
    return where / "apiserver.crt", where / "apiserver.key"


@dataclass(frozen=True)
class Pki:
    dir: Path
    admin_conf: Path
    server_cert: Path
    server_key: Path


def apiserver_pki(where: Path, name: str = "day2") -> Pki:
    """The project's own PKI: CAs, admin.conf and an apiserver certificate for 127.0.0.1."""
    pki_dir = make_pki(where, key_algorithm="ecdsa-p256", validity_days=30, cluster_name=name)
    return Pki(pki_dir, where / "admin.conf", *write_apiserver_cert(pki_dir, where))


def assert_whole_set(pki_dir: Path) -> None:
    """pki_dir holds every PKI file and each CA key belongs to its certificate (one set, not a mix)."""
    from tasks.pki import PKI_FILES
    from tasks.pki.crypto import check_key_pair
    from tasks.pki.layout import CAS

    missing = [name for name in PKI_FILES if not (pki_dir / name).is_file()]
    assert not missing, f"{pki_dir} lacks {missing}"
    for stem, _ in CAS:
        check_key_pair((pki_dir / f"{stem}.crt").read_bytes(), (pki_dir / f"{stem}.key").read_bytes(), stem)


def admin_signed_by(admin_conf: Path, ca_pem: bytes) -> bool:
    """True when admin.conf embeds ca_pem and its client certificate was issued by that CA."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    from tasks.pki.kubeconfig import admin_conf_credentials

    embedded, cert_pem, _ = admin_conf_credentials(admin_conf)
    try:
        x509.load_pem_x509_certificate(cert_pem).verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return embedded == ca_pem
