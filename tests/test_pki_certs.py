"""The generated PKI as real tools see it: openssl, and TLS handshakes on 127.0.0.1."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from support.configs import VIP
from support.pki import SERVER, make_pki
from tasks.errors import PkiError
from tasks.pki import PKI_FILES, issue_certificate, node_files, read_secret
from tasks.pki.crypto import discovery_hash
from tasks.pki.kubeconfig import admin_conf_credentials, read_admin_conf
from tasks.pki.layout import DERIVED_FILES, PRIMARY_FILES
from tasks.pki.store import generate_pki


def openssl(*args: str, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (apt-get install openssl)")
    return subprocess.run(["openssl", *args], input=input, capture_output=True, check=check, timeout=60)


def test_layout_lists_every_file_once() -> None:
    assert sorted(PKI_FILES) == sorted(PRIMARY_FILES + DERIVED_FILES)
    assert len(set(PKI_FILES)) == len(PKI_FILES)


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ecdsa-p256"])
def test_discovery_hash_matches_openssl_pipeline(pki_sets: dict[str, Path], algorithm: str) -> None:
    ca = pki_sets[algorithm] / "ca.crt"
    pubkey = openssl("x509", "-pubkey", "-noout", "-in", str(ca)).stdout
    der = openssl("pkey", "-pubin", "-outform", "der", input=pubkey).stdout
    sha = subprocess.run(["sha256sum"], input=der, capture_output=True, check=True).stdout.split()[0].decode()
    assert discovery_hash(ca.read_bytes()) == f"sha256:{sha}"
    assert read_secret(pki_sets[algorithm], "ca-hash") == f"sha256:{sha}"
    conf = (pki_sets[algorithm] / "certs.conf").read_text().splitlines()
    assert conf == [f"K8S_TOKEN={read_secret(pki_sets[algorithm], 'bootstrap-token')}", f"K8S_HASH=sha256:{sha}"]


def test_discovery_hash_differs_between_cas(pki_sets: dict[str, Path]) -> None:
    cas = [p / name for p in pki_sets.values() for name in ("ca.crt", "etcd/ca.crt")]
    hashes = {discovery_hash(ca.read_bytes()) for ca in cas}
    assert len(hashes) == 4


@pytest.mark.parametrize(
    ("stem", "common_name"),
    [("ca", "kubernetes"), ("front-proxy-ca", "front-proxy-ca"), ("etcd/ca", "etcd-ca")],
)
@pytest.mark.parametrize("algorithm", ["rsa-2048", "ecdsa-p256"])
def test_ca_certificates_look_like_kubeadms(
    pki_sets: dict[str, Path], algorithm: str, stem: str, common_name: str
) -> None:
    cert = str(pki_sets[algorithm] / f"{stem}.crt")
    text = openssl("x509", "-in", cert, "-noout", "-text").stdout.decode()
    assert re.search(r"Subject: CN ?= ?" + re.escape(common_name) + r"\n", text)
    assert re.search(r"Issuer: CN ?= ?" + re.escape(common_name) + r"\n", text)
    assert re.search(r"X509v3 Basic Constraints: critical\n\s+CA:TRUE\n", text)
    usage = r"X509v3 Key Usage: critical\n\s+Digital Signature, Key Encipherment, Certificate Sign\n"
    assert re.search(usage, text)
    assert "X509v3 Subject Key Identifier" in text
    if algorithm == "ecdsa-p256":
        assert "id-ecPublicKey" in text and "prime256v1" in text
    else:
        assert "Public-Key: (2048 bit)" in text
    # Self-signed and valid: openssl accepts it as its own trust anchor.
    assert openssl("verify", "-CAfile", cert, cert).stdout.strip().endswith(b"OK")
    # The key file is the certificate's key.
    modulus = openssl("pkey", "-in", str(pki_sets[algorithm] / f"{stem}.key"), "-pubout").stdout
    assert modulus == openssl("x509", "-in", cert, "-noout", "-pubkey").stdout


@pytest.mark.parametrize(("algorithm", "days"), [("rsa-3072", 730), ("ecdsa-p256", 3650)])
def test_validity_and_algorithm_come_from_arguments(tmp_path: Path, algorithm: str, days: int) -> None:
    pki = make_pki(tmp_path / algorithm, key_algorithm=algorithm, validity_days=days, cluster_name="test")
    cert = str(pki / "ca.crt")
    # Still valid one day before the configured end, expired one day after it.
    openssl("x509", "-in", cert, "-noout", "-checkend", str((days - 1) * 86400))
    late = openssl("x509", "-in", cert, "-noout", "-checkend", str((days + 1) * 86400), check=False)
    assert late.returncode == 1
    if algorithm == "rsa-3072":
        assert b"Public-Key: (3072 bit)" in openssl("x509", "-in", cert, "-noout", "-text").stdout
        sa_key = openssl("pkey", "-in", str(pki / "sa.key"), "-noout", "-text").stdout
        assert b"Private-Key: (3072 bit" in sa_key


def test_admin_conf_client_certificate_verifies_against_ca(pki_sets: dict[str, Path], tmp_path: Path) -> None:
    for algorithm, pki in pki_sets.items():
        conf = pki.parent / "admin.conf"
        assert conf.stat().st_mode & 0o777 == 0o600
        data = read_admin_conf(conf)
        assert data["clusters"][0]["name"] == "test"
        assert data["clusters"][0]["cluster"]["server"] == SERVER
        assert data["current-context"] == "kubernetes-admin@test"
        ca_pem, cert_pem, key_pem = admin_conf_credentials(conf)
        assert ca_pem == (pki / "ca.crt").read_bytes()
        cert = tmp_path / f"{algorithm}-admin.crt"
        cert.write_bytes(cert_pem)
        out = openssl("verify", "-purpose", "sslclient", "-CAfile", str(pki / "ca.crt"), str(cert)).stdout
        assert out.strip().endswith(b"OK")
        subject_out = openssl("x509", "-in", str(cert), "-noout", "-subject", "-nameopt", "RFC2253")
        subject = subject_out.stdout.decode()
        assert subject.strip() == "subject=CN=kubernetes-admin,O=kubeadm:cluster-admins"
        # Not signed by the other set's CA: verification is not a rubber stamp.
        other = next(p for a, p in pki_sets.items() if a != algorithm)
        assert openssl("verify", "-CAfile", str(other / "ca.crt"), str(cert), check=False).returncode != 0


def test_modes_of_a_generated_set(pki_sets: dict[str, Path]) -> None:
    for pki in pki_sets.values():
        assert pki.stat().st_mode & 0o777 == 0o700
        assert (pki / "etcd").stat().st_mode & 0o777 == 0o700
        for name in PKI_FILES:
            mode = (pki / name).stat().st_mode & 0o777
            public = name.endswith((".crt", ".pub")) or name in ("ca-hash", "params.json")
            assert mode == (0o644 if public else 0o600), name
            if mode & 0o044:
                assert b"PRIVATE KEY" not in (pki / name).read_bytes(), name


def test_secrets_have_their_formats(pki_sets: dict[str, Path]) -> None:
    tokens = set()
    for pki in pki_sets.values():
        token = read_secret(pki, "bootstrap-token")
        assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token)
        assert re.fullmatch(r"[A-Za-z0-9]{8}", read_secret(pki, "keepalived-auth"))
        tokens.add(token)
    assert len(tokens) == len(pki_sets)
    with pytest.raises(PkiError, match="not a PKI file"):
        read_secret(next(iter(pki_sets.values())), "../etc/passwd")


def test_generate_refuses_an_existing_ca(pki_sets: dict[str, Path]) -> None:
    pki = pki_sets["ecdsa-p256"]
    before = (pki / "ca.key").read_bytes()
    with pytest.raises(PkiError, match="never replaced silently"):
        generate_pki(pki, key_algorithm="ecdsa-p256", validity_days=3650, cluster_name="test")
    assert (pki / "ca.key").read_bytes() == before


def test_worker_files_hold_no_private_key(pki_sets: dict[str, Path]) -> None:
    pki = pki_sets["rsa-2048"]
    workers = node_files(control_plane=False)
    assert [f.node_path for f in workers] == ["/etc/kubernetes/certs.conf"]
    assert all(b"PRIVATE KEY" not in (pki / f.name).read_bytes() for f in workers)
    control = node_files(control_plane=True)
    needed = {"ca.key", "sa.key", "etcd/ca.key", "front-proxy-ca.key", "certs.conf"}
    assert {f.name for f in control} >= needed
    for f in control:
        secret = b"PRIVATE KEY" in (pki / f.name).read_bytes() or f.name == "certs.conf"
        assert f.mode == (0o600 if secret else 0o644), f.name


# --- TLS end to end ---------------------------------------------------------------------


@contextmanager
def tls_server(context: ssl.SSLContext) -> Iterator[tuple[int, dict[str, object]]]:
    """Serve one TLS connection on 127.0.0.1; record the peer certificate or the handshake error."""
    result: dict[str, object] = {}
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(20)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            result["error"] = exc
            return
        conn.settimeout(20)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                result["peer"] = tls.getpeercert()
                tls.sendall(b"hello from the apiserver\n")
                # A clean TLS close (close_notify), so clients do not see a truncated stream.
                with suppress(ssl.SSLError, OSError):
                    tls.unwrap()
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], result
    finally:
        thread.join(timeout=30)
        listener.close()
    assert not thread.is_alive()


def write_pair(directory: Path, name: str, pair: tuple[bytes, bytes]) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    cert.write_bytes(pair[0])
    key.touch(mode=0o600)
    key.write_bytes(pair[1])
    return str(cert), str(key)


def server_context(pki: Path, tmp_path: Path, require_client: bool) -> ssl.SSLContext:
    pair = issue_certificate(pki, common_name="kube-apiserver", dns_names=["kubernetes", "localhost"],
                             ip_addresses=["127.0.0.1", VIP], server=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*write_pair(tmp_path, "server", pair))
    if require_client:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=str(pki / "ca.crt"))
    return ctx


def talk(port: int, ctx: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.recv(100)


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ecdsa-p256"])
def test_tls_server_from_generated_ca_is_trusted(
    pki_sets: dict[str, Path], tmp_path: Path, algorithm: str
) -> None:
    pki = pki_sets[algorithm]
    ctx = server_context(pki, tmp_path, require_client=False)
    trusting = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with tls_server(ctx) as (port, result):
        assert talk(port, trusting) == b"hello from the apiserver\n"
    assert "error" not in result

    # The VIP SAN, checked by openssl's own verifier over a loopback connection.
    with tls_server(ctx) as (port, result):
        out = openssl("s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.crt"),
                      "-verify_ip", VIP, "-verify_return_error", input=b"", check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert b"Verify return code: 0 (ok)" in out.stdout
    # ... and an address the certificate does not name is refused.
    with tls_server(ctx) as (port, result):
        wrong = openssl("s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki / "ca.crt"),
                        "-verify_ip", "192.168.122.99", "-verify_return_error", input=b"", check=False)
    assert wrong.returncode != 0
    assert b"IP address mismatch" in wrong.stdout + wrong.stderr

    # A client trusting another cluster's CA refuses the server.
    other = next(p for a, p in pki_sets.items() if a != algorithm)
    with tls_server(ctx) as (port, result):
        with pytest.raises(ssl.SSLCertVerificationError):
            talk(port, ssl.create_default_context(cafile=str(other / "ca.crt")))


@pytest.mark.parametrize("algorithm", ["rsa-2048", "ecdsa-p256"])
def test_admin_conf_client_certificate_passes_mutual_tls(
    pki_sets: dict[str, Path], tmp_path: Path, algorithm: str
) -> None:
    pki = pki_sets[algorithm]
    ctx = server_context(pki, tmp_path, require_client=True)
    _, cert_pem, key_pem = admin_conf_credentials(pki.parent / "admin.conf")
    client = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    client.load_cert_chain(*write_pair(tmp_path, "admin", (cert_pem, key_pem)))
    with tls_server(ctx) as (port, result):
        assert talk(port, client) == b"hello from the apiserver\n"
    peer = result["peer"]
    assert isinstance(peer, dict)
    assert (("organizationName", "kubeadm:cluster-admins"),) in peer["subject"]
    assert (("commonName", "kubernetes-admin"),) in peer["subject"]

    # A client certificate from another CA is refused by the server.
    other = next(p for a, p in pki_sets.items() if a != algorithm)
    _, other_cert, other_key = admin_conf_credentials(other.parent / "admin.conf")
    stranger = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    stranger.load_cert_chain(*write_pair(tmp_path, "stranger", (other_cert, other_key)))
    with tls_server(ctx) as (port, result):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            talk(port, stranger)
    assert isinstance(result.get("error"), ssl.SSLError)
    assert "peer" not in result
