"""The control planes' serving certificates, read from a TLS handshake with <node>:6443 and :2379.

The handshake itself does not verify (ssl.CERT_NONE): an expired certificate, or one from another
CA, must still be read and shown, not end as an SSL error. Verification follows on the bytes
(tasks/pki/expiry.py verify_issued_by: signed by the cluster CA, names the node's address).
The host presents a client certificate on both ports: etcd runs with --client-cert-auth and ends
a handshake without one, and kube-apiserver accepts one. Nothing is sent after the handshake.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks.config import Cluster
from tasks.facts import APISERVER_PORT
from tasks.kube.etcd import CLIENT_PORT, EtcdClient
from tasks.paths import Build
from tasks.pki.expiry import Credential, verify_issued_by

HANDSHAKE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Probe:
    """One serving certificate to read: which port of which node, checked against which CA."""

    node: str
    address: str
    port: int
    what: str  # "API server" / "etcd"
    ca_file: Path
    client_cert: Path
    client_key: Path


def read_served(probe: Probe, timeout: float = HANDSHAKE_TIMEOUT_S) -> Credential:
    """The certificate probe's server presents, as a row; never raises (unreachable is a row)."""
    from cryptography import x509

    name, where = f"{probe.node} {probe.what} serving certificate", f"{probe.address}:{probe.port}"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # read first, verify below: see the module docstring
    context.load_cert_chain(str(probe.client_cert), str(probe.client_key))
    try:
        with socket.create_connection((probe.address, probe.port), timeout=timeout) as sock, \
                context.wrap_socket(sock, server_hostname=probe.address) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        return Credential(name, where, None, problem=f"unreachable: {reason}"[:100])
    if not der:
        return Credential(name, where, None, problem="unreachable: no certificate presented")
    cert = x509.load_der_x509_certificate(der)
    problem = verify_issued_by(cert, probe.ca_file, probe.address)
    return Credential(name, where, cert.not_valid_after_utc, cert.issuer.rfc4514_string().removeprefix("CN="),
                      problem or "")


@contextmanager
def node_probes(c: Cluster, paths: Build, etcd: EtcdClient) -> Iterator[list[Probe]]:
    """Both serving certificates of every control plane; admin.conf's client certificate (in an
    in-memory file: a killed run leaves no copy of the key) for the API servers, the host's etcd
    client for etcd."""
    from tasks.fsutil import memory_file
    from tasks.pki.kubeconfig import admin_conf_credentials

    _, cert_pem, key_pem = admin_conf_credentials(paths.admin_conf)
    with memory_file("admin.crt", cert_pem) as cert_path, memory_file("admin.key", key_pem) as key_path:
        cert, key = Path(cert_path), Path(key_path)
        probes = []
        for n in c.control_planes:
            probes.append(Probe(n.name, str(n.ip), APISERVER_PORT, "API server", paths.pki / "ca.crt", cert, key))
            probes.append(Probe(n.name, str(n.ip), CLIENT_PORT, "etcd", etcd.ca_file, etcd.cert_file, etcd.key_file))
        yield probes


def served_credentials(c: Cluster, paths: Build, etcd: EtcdClient) -> list[Credential]:
    """Every control plane's API server and etcd serving certificate, read in parallel."""
    with node_probes(c, paths, etcd) as probes, ThreadPoolExecutor(max_workers=max(1, len(probes))) as pool:
        return list(pool.map(read_served, probes))
