"""`doit pki`: the cluster PKI, made once with `cryptography` and never silently replaced.

kubeadm uses CA files it finds in /etc/kubernetes/pki, so pre-shared CAs let every control
plane join without `--upload-certs` or a certificate key. The heavy modules (pki_crypto,
pki_store, pki_kubeconfig) are imported inside the functions below, so `doit list` stays fast.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tasks.config import Cluster, fingerprint
from tasks.context import build, cluster, config_path, guarded
from tasks.pki_layout import PKI_FILES, NodeFile, node_files, read_secret

__all__ = [
    "PKI_FILES", "NodeFile", "discovery_hash", "generate_pki", "issue_certificate", "node_files",
    "read_secret", "rotate_hint", "server_url", "task_pki", "task_rotate_pki", "write_admin_conf",
]


def discovery_hash(ca_cert_pem: bytes) -> str:
    """`sha256:<hex>` of the CA's DER SubjectPublicKeyInfo (kubeadm's discovery hash; RSA or ECDSA)."""
    from tasks.pki_crypto import discovery_hash as compute

    return compute(ca_cert_pem)


def generate_pki(pki_dir: Path, *, key_algorithm: str, validity_days: int, cluster_name: str) -> None:
    """Write a complete new set into pki_dir; PkiError if a CA is already there."""
    from tasks.pki_store import generate_pki as generate

    generate(pki_dir, key_algorithm=key_algorithm, validity_days=validity_days, cluster_name=cluster_name)


def write_admin_conf(pki_dir: Path, out: Path, *, cluster_name: str, server: str) -> None:
    """Write a kubeconfig (0600) with a fresh kubernetes-admin client certificate from pki_dir's CA."""
    from tasks.pki_kubeconfig import write_admin_conf as write

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
    from tasks.pki_crypto import sign_certificate

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
    from tasks.pki_kubeconfig import server_url as url

    return url(str(c.network.vip), c.network.apiserver_port)


def rotate_hint() -> str:
    """The exact command that rotates the PKI of the config in use."""
    return f"doit config={config_path()} rotate_pki"


def _settings(c: Cluster) -> dict[str, Any]:
    return {
        "key_algorithm": c.kubernetes.key_algorithm,
        "validity_days": c.kubernetes.ca_validity_days,
        "cluster_name": c.name,
    }


@guarded
def make_pki() -> dict[str, Any]:
    from concurrent.futures import ThreadPoolExecutor

    from tasks.pki_crypto import generate_key
    from tasks.pki_kubeconfig import RENEW_BEFORE, admin_not_after, ensure_admin_conf
    from tasks.pki_store import ensure_pki

    c, paths = cluster(), build()
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A first run also needs admin.conf's client key: make it while the CAs are made.
        admin_key = pool.submit(generate_key, c.kubernetes.key_algorithm) if not paths.admin_conf.exists() else None
        written = ensure_pki(paths.pki, **_settings(c), rotate_command=rotate_hint())
        if ensure_admin_conf(
            paths.pki, paths.admin_conf, cluster_name=c.name, server=server_url(c),
            new_key=admin_key.result if admin_key else None,
        ):
            written.append(str(paths.admin_conf))
    # Names only: the files hold secrets.
    if written:
        print(f"PKI {paths.pki} ({c.kubernetes.key_algorithm}): wrote {', '.join(written)}")
    else:
        print(f"PKI {paths.pki} ({c.kubernetes.key_algorithm}): up to date, nothing written")
    # Saved by doit for admin_conf_fresh, so an up-to-date run needs no X.509 parsing.
    return {
        "admin_renew_after": (admin_not_after(paths.admin_conf) - RENEW_BEFORE).isoformat(),
        "admin_conf_mtime_ns": paths.admin_conf.stat().st_mtime_ns,
        "ca_mtime_ns": (paths.pki / "ca.crt").stat().st_mtime_ns,
    }


@guarded
def rotate_pki() -> None:
    from tasks.pki_kubeconfig import write_admin_conf as write
    from tasks.pki_store import rotate_pki as rotate

    c, paths = cluster(), build()
    archived = rotate(paths.pki, **_settings(c), extra=[paths.admin_conf])
    write(paths.pki, paths.admin_conf, cluster_name=c.name, server=server_url(c))
    print(f"new PKI in {paths.pki}" + (f"; the old set is in {archived}" if archived else ""))
    print("Every node must be re-created: its Ignition embeds the old CAs and token (doit rm_ha ha).")


def admin_conf_fresh(task: Any, values: dict[str, Any]) -> bool:
    """doit up-to-date check: admin.conf and ca.crt are the files the last run checked, and the
    client certificate is not yet due for renewal. Cheap on purpose: it runs on every no-op build,
    and the action itself re-checks the certificate chain whenever it runs."""
    import datetime

    paths = build()
    try:
        renew_after = datetime.datetime.fromisoformat(values["admin_renew_after"])
        same_files = (
            paths.admin_conf.stat().st_mtime_ns == values["admin_conf_mtime_ns"]
            and (paths.pki / "ca.crt").stat().st_mtime_ns == values["ca_mtime_ns"]
        )
    except (KeyError, TypeError, ValueError, OSError):
        return False
    return same_files and datetime.datetime.now(datetime.UTC) < renew_after


def task_pki() -> dict[str, Any]:
    """Generate the cluster PKI once: CAs, SA key, token, CA hash, admin.conf."""
    from doit.tools import config_changed

    c, paths = cluster(), build()
    return {
        "actions": [make_pki],
        "targets": [str(paths.pki / name) for name in PKI_FILES] + [str(paths.admin_conf)],
        # Any change here makes the action check the set; it then refuses (key algorithm,
        # validity) or rewrites only admin.conf (VIP, port): it never regenerates a CA.
        "uptodate": [
            config_changed(fingerprint(_settings(c), str(c.network.vip), c.network.apiserver_port)),
            admin_conf_fresh,
        ],
        "verbosity": 2,
    }


def task_rotate_pki() -> dict[str, Any]:
    """Replace the cluster PKI on purpose: archive the old set, make a new one, then re-create nodes."""
    return {
        "actions": [rotate_pki],
        "uptodate": [False],
        "verbosity": 2,
    }
