"""The cluster PKI: kubeadm-shaped CAs, SA key, bootstrap token, admin.conf (see the modules).

The functions here are the PKI's public face for stages; the heavy modules (crypto, store,
kubeconfig) import `cryptography` and are imported inside them, so loading the tasks stays fast.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.config import Cluster
from tasks.pki.layout import PKI_FILES, NodeFile, node_files, read_secret

__all__ = [
    "PKI_FILES", "NodeFile", "discovery_hash", "generate_pki", "issue_certificate", "node_files",
    "pki_settings", "read_secret", "server_url", "write_admin_conf",
]


def discovery_hash(ca_cert_pem: bytes) -> str:
    """`sha256:<hex>` of the CA's DER SubjectPublicKeyInfo (kubeadm's discovery hash; RSA or ECDSA)."""
    from tasks.pki.crypto import discovery_hash as compute

    return compute(ca_cert_pem)


def generate_pki(pki_dir: Path, *, key_algorithm: str, validity_days: int, cluster_name: str) -> None:
    """Write a complete new set into pki_dir; PkiError if a CA is already there."""
    from tasks.pki.store import generate_pki as generate

    generate(pki_dir, key_algorithm=key_algorithm, validity_days=validity_days, cluster_name=cluster_name)


def write_admin_conf(pki_dir: Path, out: Path, *, cluster_name: str, server: str) -> None:
    """Write a kubeconfig (0600) with a fresh kubernetes-admin client certificate from pki_dir's CA."""
    from tasks.pki.kubeconfig import write_admin_conf as write

    write(pki_dir, out, cluster_name=cluster_name, server=server)


def issue_certificate(
    pki_dir: Path,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str | ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    server: bool = False,
    client: bool = False,
    validity_days: int = 365,
    key_algorithm: str | None = None,
    ca: str = "ca",
) -> tuple[bytes, bytes]:
    """Sign a server and/or client certificate with one of pki_dir's CAs: (cert PEM, key PEM).

    ca is the CA's file stem: "ca", "front-proxy-ca" or "etcd/ca". The key uses
    key_algorithm, or the CA's algorithm when None.
    """
    from tasks.pki.crypto import sign_certificate

    return sign_certificate(
        (pki_dir / f"{ca}.crt").read_bytes(),
        (pki_dir / f"{ca}.key").read_bytes(),
        common_name=common_name,
        organizations=organizations,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        server=server,
        client=client,
        validity_days=validity_days,
        key_algorithm=key_algorithm,
    )


def server_url(c: Cluster) -> str:
    """The API endpoint through keepalived's VIP and haproxy: https://<vip>:<apiserver_port>."""
    from tasks.pki.kubeconfig import server_url as url

    return url(str(c.network.vip), c.network.apiserver_port)


def pki_settings(c: Cluster) -> dict[str, Any]:
    return {
        "key_algorithm": c.kubernetes.key_algorithm,
        "validity_days": c.kubernetes.ca_validity_days,
        "cluster_name": c.name,
    }
