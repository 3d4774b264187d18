"""`doit certs`, `doit status`'s expiry line and admin.conf's renewal, on the host's own files; the
TLS reading of serving certificates against servers on 127.0.0.1.

The nodes' real serving certificates (node:6443, node:2379) are read in tests/test_day2.py, in the
HA rehearsal.
"""

from __future__ import annotations

import base64
import datetime
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509

from support.configs import write_config
from support.day2 import certs_table
from support.pipeline import ok, run_doit
from tasks.config import load_config
from tasks.kube.served import Probe, read_served
from tasks.paths import Build
from tasks.pki import issue_certificate
from tasks.pki.crypto import create_ca
from tasks.pki.kubeconfig import admin_conf_credentials, kubeconfig_text
from tasks.pki.layout import CA_FILES

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Build]:
    # A hypervisor nothing answers: `doit status` reports it at once, never asking the machine's libvirtd.
    config = write_config(tmp_path_factory.mktemp("certs"), base="project",
                          vm={"libvirt_uri": "qemu+tcp://127.0.0.1:1/system"})
    ok(run_doit(config, "pki"))
    return config, Build(load_config(config).build_dir)


def admin_cert(paths: Build) -> x509.Certificate:
    return x509.load_pem_x509_certificate(admin_conf_credentials(paths.admin_conf)[1])


def age_admin_conf(paths: Build, days: int, *, ca: tuple[bytes, bytes] | None = None) -> None:
    """Replace admin.conf's client certificate by one with `days` left, from the cluster CA or `ca`."""
    from tasks.pki.crypto import sign_certificate

    ca_pem, ca_key = ca or ((paths.pki / "ca.crt").read_bytes(), (paths.pki / "ca.key").read_bytes())
    cert, key = sign_certificate(ca_pem, ca_key, common_name="kubernetes-admin",
                                 organizations=["kubeadm:cluster-admins"], client=True, validity_days=days)
    server = "https://192.168.122.30:6444"
    paths.admin_conf.write_text(kubeconfig_text("ha", server, (paths.pki / "ca.crt").read_bytes(), cert, key))


def ca_bytes(paths: Build) -> dict[str, bytes]:
    return {name: (paths.pki / name).read_bytes() for name in CA_FILES}


def test_certs_lists_every_host_credential(built: tuple[Path, Build]) -> None:
    config, paths = built
    out = ok(run_doit(config, "certs", "--local")).stdout
    rows = certs_table(out)
    assert list(rows) == ["CA kubernetes", "CA front-proxy-ca", "CA etcd-ca", "service-account key",
                          "admin.conf client certificate"], out
    for ca, file in (("kubernetes", "ca.crt"), ("front-proxy-ca", "front-proxy-ca.crt"), ("etcd-ca", "etcd/ca.crt")):
        row = rows[f"CA {ca}"]
        assert row["WHERE"] == str(paths.pki / file) and row["LEFT"] == "3650 days", out
        assert row["SIGNED BY"] == "self-signed" and row["STATE"] == "ok", out
    assert rows["service-account key"]["LEFT"] == "age 0 days", out
    assert rows["service-account key"]["STATE"] == "ok (does not expire)", out
    admin = rows["admin.conf client certificate"]
    assert admin["LEFT"] == "365 days" and admin["SIGNED BY"] == "kubernetes" and admin["STATE"] == "ok", out
    assert "need attention" not in out


def test_a_month_before_its_end_admin_conf_warns_and_is_reissued_never_the_ca(built: tuple[Path, Build]) -> None:
    config, paths = built
    cas = ca_bytes(paths)
    age_admin_conf(paths, 10)
    before = paths.admin_conf.read_bytes()
    out = ok(run_doit(config, "certs", "--local")).stdout
    admin = certs_table(out)["admin.conf client certificate"]
    assert admin["LEFT"] == "10 days" and admin["STATE"] == "WARN: expires soon", out
    assert "admin.conf client certificate: WARN: expires soon -> doit certs renew=1" in out
    assert paths.admin_conf.read_bytes() == before  # listing renews nothing
    status = ok(run_doit(config, "status", "--no-api")).stdout
    assert "certificates: soonest expiry admin.conf client certificate in 10 days" in status, status
    assert "(WARN: expires soon)" in status

    renewed = ok(run_doit(config, "certs", "--local", "renew=1")).stdout
    assert "re-issued from the cluster CA" in renewed and "(the CA is unchanged)" in renewed, renewed
    cert = admin_cert(paths)
    assert cert.not_valid_after_utc - NOW > datetime.timedelta(days=364)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(cas["ca.crt"]))
    assert ca_bytes(paths) == cas
    assert paths.admin_conf.stat().st_mode & 0o777 == 0o600
    # Not due: renew=1 keeps it byte for byte.
    again = paths.admin_conf.read_bytes()
    assert "more than 30 days left: kept" in ok(run_doit(config, "certs", "--local", "renew=1")).stdout
    assert paths.admin_conf.read_bytes() == again


def test_doit_kubeconfig_reissues_a_due_admin_conf_before_merging(built: tuple[Path, Build], tmp_path: Path) -> None:
    config, paths = built
    cas = ca_bytes(paths)
    age_admin_conf(paths, 20)
    # doit runs `pki` first (admin.conf is its target), which re-issues a due admin.conf.
    age_admin_conf(paths, 20)
    out = ok(run_doit(config, "kubeconfig", "--out", str(tmp_path / "kubeconfig"))).stdout
    assert f"wrote {paths.admin_conf}" in out, out
    assert admin_cert(paths).not_valid_after_utc - NOW > datetime.timedelta(days=364)
    merged = (tmp_path / "kubeconfig").read_text()
    assert base64.b64encode(admin_conf_credentials(paths.admin_conf)[1]).decode() in merged
    assert ca_bytes(paths) == cas


def test_an_admin_conf_from_another_ca_fails_certs(built: tuple[Path, Build]) -> None:
    config, paths = built
    age_admin_conf(paths, 200, ca=create_ca("kubernetes", "ecdsa-p256", 365))
    proc = run_doit(config, "certs", "--local", merged=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout, proc.stdout
    assert "NOT signed by the cluster's CN=kubernetes" in proc.stdout
    assert "expired or not from the cluster's CAs" in proc.stdout
    ok(run_doit(config, "certs", "--local", "renew=1"))  # re-issued from the right CA: fine again
    ok(run_doit(config, "certs", "--local"))
    age_admin_conf(paths, 0)  # ends the moment it is made
    proc = run_doit(config, "certs", "--local", merged=True)
    assert proc.returncode != 0 and certs_table(proc.stdout)["admin.conf client certificate"]["STATE"] == "EXPIRED"
    ok(run_doit(config, "certs", "--local", "renew=1"))


@contextmanager
def tls_server(cert: bytes, key: bytes, where: Path) -> Iterator[int]:
    """A TLS server on 127.0.0.1 that completes handshakes (asking for a client certificate)."""
    (where / "s.crt").write_bytes(cert)
    (where / "s.key").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(where / "s.crt"), str(where / "s.key"))
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(str(where / "s.crt"))
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def test_serving_certificates_are_read_and_checked_against_the_ca(built: tuple[Path, Build], tmp_path: Path) -> None:
    _, paths = built
    client = tmp_path / "client"
    client.mkdir()
    ccert, ckey = issue_certificate(paths.pki, common_name="probe", client=True)
    (client / "c.crt").write_bytes(ccert)
    (client / "c.key").write_bytes(ckey)

    def probe(port: int, address: str = "127.0.0.1") -> Probe:
        return Probe("n1", address, port, "API server", paths.pki / "ca.crt", client / "c.crt", client / "c.key")

    good = issue_certificate(paths.pki, common_name="kube-apiserver", server=True, ip_addresses=["127.0.0.1"],
                             validity_days=40)
    with tls_server(*good, tmp_path) as port:
        row = read_served(probe(port))
    assert row.problem == "" and row.signed_by == "kubernetes", row
    assert row.not_after is not None and 39 < (row.not_after - NOW).days <= 40
    assert row.where == f"127.0.0.1:{port}" and row.name == "n1 API server serving certificate"

    foreign_ca = create_ca("kubernetes", "ecdsa-p256", 365)
    from tasks.pki.crypto import sign_certificate

    foreign = sign_certificate(*foreign_ca, common_name="kube-apiserver", server=True, ip_addresses=["127.0.0.1"])
    with tls_server(*foreign, tmp_path) as port:
        assert read_served(probe(port)).problem == "NOT signed by the cluster's CN=kubernetes"

    other_host = issue_certificate(paths.pki, common_name="kube-apiserver", server=True, ip_addresses=["10.0.0.9"])
    with tls_server(*other_host, tmp_path) as port:
        assert read_served(probe(port)).problem == "does not name 127.0.0.1 (a certificate for another host)"

    with socket.create_server(("127.0.0.1", 0)) as closed:
        free = closed.getsockname()[1]
    row = read_served(probe(free))
    assert row.problem.startswith("unreachable: Connection refused") and row.not_after is None, row
