"""The cluster PKI: kubeadm-shaped CAs, SA key, bootstrap token, admin.conf (see the modules).

The modules: layout (which files, their modes, where each lands on a node; light), crypto (keys,
CAs, leaf certificates), store (the set on disk: made once, checked, rotated deliberately),
kubeconfig (admin.conf). crypto, store and kubeconfig import `cryptography`: import them inside
actions, never while `doit list` loads the tasks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.config import Cluster
from tasks.pki.layout import PKI_FILES, NodeFile, node_files, read_secret

__all__ = ["PKI_FILES", "NodeFile", "issue_certificate", "node_files", "pki_settings", "read_secret", "server_url"]


def issue_certificate(pki_dir: Path, *, ca: str = "ca", **options: Any) -> tuple[bytes, bytes]:
    """Sign a server and/or client certificate with one of pki_dir's CAs: (cert PEM, key PEM).

    ca is the CA's file stem: "ca", "front-proxy-ca" or "etcd/ca"; options are those of
    tasks.pki.crypto.sign_certificate (common_name, dns_names, ip_addresses, server, client, ...).
    """
    from tasks.pki.crypto import sign_certificate

    return sign_certificate((pki_dir / f"{ca}.crt").read_bytes(), (pki_dir / f"{ca}.key").read_bytes(), **options)


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
