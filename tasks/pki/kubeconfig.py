"""admin.conf: the host's kubeconfig, with a client certificate signed by the cluster CA."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tasks.fsutil import PRIVATE_FILE, atomic_write
from tasks.pki import crypto as pki_crypto

ADMIN_USER = "kubernetes-admin"
# Since Kubernetes 1.29 kubeadm's admin.conf is in this group, bound to cluster-admin by
# `kubeadm init`, so it can be revoked (system:masters cannot).
ADMIN_GROUP = "kubeadm:cluster-admins"
# As kubeadm: one year. ensure_admin_conf renews it when less than RENEW_BEFORE is left.
ADMIN_VALIDITY_DAYS = 365
RENEW_BEFORE = datetime.timedelta(days=30)


def server_url(vip: str, port: int) -> str:
    host = f"[{vip}]" if ":" in vip else vip
    return f"https://{host}:{port}"


def kubeconfig_text(cluster_name: str, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> str:
    import yaml

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    context = f"{ADMIN_USER}@{cluster_name}"
    cluster = {"server": server, "certificate-authority-data": b64(ca_pem)}
    user = {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": ADMIN_USER}}],
        "current-context": context,
        "preferences": {},
        "users": [{"name": ADMIN_USER, "user": user}],
    }
    return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))


def write_admin_conf(
    pki_dir: Path, out: Path, *, cluster_name: str, server: str, key: pki_crypto.PrivateKey | None = None
) -> None:
    """Issue a new admin client certificate from pki_dir's CA and write the kubeconfig (0600)."""
    ca_pem = (pki_dir / "ca.crt").read_bytes()
    cert_pem, key_pem = pki_crypto.sign_certificate(
        ca_pem,
        (pki_dir / "ca.key").read_bytes(),
        common_name=ADMIN_USER,
        organizations=[ADMIN_GROUP],
        client=True,
        validity_days=ADMIN_VALIDITY_DAYS,
        key=key,
    )
    atomic_write(out, kubeconfig_text(cluster_name, server, ca_pem, cert_pem, key_pem), PRIVATE_FILE)


def read_admin_conf(path: Path) -> dict[str, Any]:

    from tasks.yamlutil import safe_load

    data = safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a kubeconfig")
    return data


def admin_conf_credentials(path: Path) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, client certificate, client key) PEMs embedded in a kubeconfig."""
    data = read_admin_conf(path)
    user = data["users"][0]["user"]
    return (
        base64.b64decode(data["clusters"][0]["cluster"]["certificate-authority-data"]),
        base64.b64decode(user["client-certificate-data"]),
        base64.b64decode(user["client-key-data"]),
    )


def admin_conf_current(pki_dir: Path, out: Path, *, cluster_name: str, server: str) -> bool:
    """True when out is a kubeconfig for this CA, cluster and server, good for RENEW_BEFORE more."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    try:
        data = read_admin_conf(out)
        cluster = data["clusters"][0]
        ca_pem, cert_pem, _ = admin_conf_credentials(out)
        ca = x509.load_pem_x509_certificate((pki_dir / "ca.crt").read_bytes())
        cert = x509.load_pem_x509_certificate(cert_pem)
        cert.verify_directly_issued_by(ca)
    except (OSError, ValueError, KeyError, IndexError, TypeError, InvalidSignature):
        return False
    now = datetime.datetime.now(datetime.UTC)
    return (
        cluster.get("name") == cluster_name
        and cluster.get("cluster", {}).get("server") == server
        and ca_pem == (pki_dir / "ca.crt").read_bytes()
        and cert.not_valid_after_utc - now > RENEW_BEFORE
    )


def admin_not_after(out: Path) -> datetime.datetime:
    """When the client certificate in the kubeconfig at out expires."""
    from cryptography import x509

    _, cert_pem, _ = admin_conf_credentials(out)
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def ensure_admin_conf(
    pki_dir: Path, out: Path, *, cluster_name: str, server: str,
    new_key: Callable[[], pki_crypto.PrivateKey] | None = None,
) -> bool:
    """Keep out as it is when current (re-runs stay byte-identical); else write it. True if written.

    new_key, when given, supplies the client key (a key made ahead of time, in parallel).
    """
    if out.exists() and admin_conf_current(pki_dir, out, cluster_name=cluster_name, server=server):
        if out.stat().st_mode & 0o777 != PRIVATE_FILE:
            out.chmod(PRIVATE_FILE)
        return False
    write_admin_conf(pki_dir, out, cluster_name=cluster_name, server=server, key=new_key() if new_key else None)
    return True


def renew_admin_conf(pki_dir: Path, out: Path, *, cluster_name: str, server: str) -> str:
    """Re-issue admin.conf from the cluster CA the host holds once it is within RENEW_BEFORE of its
    end (or no longer matches the CA, cluster or server); what was done, as a line to print. The CA
    is only read: a missing CA is an error here, never a reason to make one."""
    from tasks.errors import PkiError

    missing = [p.name for p in (pki_dir / "ca.crt", pki_dir / "ca.key") if not p.is_file()]
    if missing:
        raise PkiError(f"{pki_dir} has no {' or '.join(missing)}: admin.conf cannot be re-issued",
                       "restore the CA from a backup (build/<name>/pki-archive/), or make the PKI: doit pki")
    renewed = ensure_admin_conf(pki_dir, out, cluster_name=cluster_name, server=server)
    until = f"{admin_not_after(out):%Y-%m-%d}"
    if renewed:
        return f"{out}: re-issued from the cluster CA, valid until {until} (the CA is unchanged)"
    return f"{out}: valid until {until}, more than {RENEW_BEFORE.days} days left: kept"
