"""`doit wait` against a real TLS server on 127.0.0.1 that demands a client certificate from the CA."""

from __future__ import annotations

import io
import json
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support.configs import ROOT, build_root, doit, write_config

from tasks.errors import VerificationError
from tasks.kube.api import NotReadyError, Progress, api_target, node_readiness, wait_until_ready
from tasks.pki import issue_certificate
from tasks.pki.crypto import create_ca, sign_certificate
from tasks.pki.kubeconfig import write_admin_conf
from tasks.pki.store import generate_pki

NODES = ["cp1", "w1"]


def node(name: str, ready: bool) -> dict[str, Any]:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "KubeletReady",
        "message": "kubelet is posting ready",
    }
    if not ready:
        condition = {
            "type": "Ready",
            "status": "False",
            "reason": "KubeletNotReady",
            "message": "container runtime network not ready: cni plugin not initialized",
        }
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "MemoryPressure"}, condition]}}


@dataclass
class FakeApi:
    """Answers /readyz with 503 `ready_after` times (forever if None), then 200; /api/v1/nodes."""

    ready_after: int | None
    nodes: list[dict[str, Any]]
    url: str = ""
    readyz_calls: int = 0
    client_orgs: list[str] = field(default_factory=list)


def make_handler(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def reply(self, status: int, body: bytes, kind: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            peer = self.connection.getpeercert()
            api.client_orgs += [v for rdn in peer["subject"] for k, v in rdn if k == "organizationName"]
            if self.path.startswith("/readyz"):
                api.readyz_calls += 1
                if api.ready_after is None or api.readyz_calls <= api.ready_after:
                    self.reply(503, b"[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
                else:
                    self.reply(200, b"ok")
            elif self.path == "/api/v1/nodes":
                body = json.dumps({"kind": "NodeList", "apiVersion": "v1", "items": api.nodes}).encode()
                self.reply(200, body, "application/json")
            else:
                self.reply(404, b"not found")

    return Handler


ServerFactory = Callable[..., FakeApi]


@pytest.fixture
def tls_api() -> Iterator[ServerFactory]:
    """Start HTTPS servers on 127.0.0.1 (mutual TLS against client_ca); all stopped afterwards."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(
        cert: Path, key: Path, client_ca: Path, ready_after: int | None, nodes: list[dict[str, Any]]
    ) -> FakeApi:
        api = FakeApi(ready_after, nodes)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(api))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        api.url = f"https://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return api

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class Pki:
    dir: Path
    admin_conf: Path
    server_cert: Path
    server_key: Path


def make_pki(where: Path, name: str = "day2") -> Pki:
    """The project's own PKI: CAs, admin.conf and an apiserver certificate for 127.0.0.1."""
    pki_dir = where / "pki"
    generate_pki(pki_dir, key_algorithm="ecdsa-p256", validity_days=30, cluster_name=name)
    admin = where / "admin.conf"
    write_admin_conf(pki_dir, admin, cluster_name=name, server="https://192.168.122.30:6444")
    cert, key = issue_certificate(
        pki_dir, common_name="kube-apiserver", ip_addresses=["127.0.0.1"], server=True
    )
    (where / "apiserver.crt").write_bytes(cert)
    (where / "apiserver.key").write_bytes(key)
    return Pki(pki_dir, admin, where / "apiserver.crt", where / "apiserver.key")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "cluster")


def test_wait_succeeds_once_readyz_turns_200_and_nodes_are_ready(tls_api: ServerFactory, pki: Pki) -> None:
    api = tls_api(
        pki.server_cert, pki.server_key, pki.dir / "ca.crt", 2, [node("cp1", True), node("w1", True)]
    )
    out = io.StringIO()
    target = api_target(pki.admin_conf, pki.dir / "ca.crt", api.url)
    seen = wait_until_ready(target, "day2", NODES, timeout_s=30, interval_s=0.05, out=out)
    assert seen.done and seen.ready == 2
    assert api.readyz_calls == 3
    # The client authenticated with admin.conf's certificate (kubeadm's admin group).
    assert set(api.client_orgs) == {"kubeadm:cluster-admins"}
    lines = out.getvalue().splitlines()
    assert "/readyz answered 503: [-]etcd failed: reason withheld" in lines[0]
    assert lines[-1].endswith("API ready; 2/2 nodes Ready")
    # Not a terminal: one line per change of state, no carriage returns.
    assert len(lines) == 2 and "\r" not in out.getvalue()


def test_wait_fails_at_once_on_a_server_certificate_from_another_ca(
    tls_api: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    other_ca, other_key = create_ca("someone-else", "ecdsa-p256", 30)
    cert, key = sign_certificate(
        other_ca, other_key, common_name="impostor", ip_addresses=["127.0.0.1"], server=True
    )
    (tmp_path / "impostor.crt").write_bytes(cert)
    (tmp_path / "impostor.key").write_bytes(key)
    api = tls_api(tmp_path / "impostor.crt", tmp_path / "impostor.key", pki.dir / "ca.crt", 0, [])
    target = api_target(pki.admin_conf, pki.dir / "ca.crt", api.url)
    with pytest.raises(VerificationError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=60, interval_s=0.05, out=io.StringIO())
    message = str(failure.value)
    assert "did not sign" in message and str(pki.dir / "ca.crt") in message
    assert "certificate verify failed" in message
    assert api.readyz_calls == 0


def test_wait_times_out_with_a_report_when_never_ready(tls_api: ServerFactory, pki: Pki) -> None:
    api = tls_api(pki.server_cert, pki.server_key, pki.dir / "ca.crt", None, [])
    target = api_target(pki.admin_conf, pki.dir / "ca.crt", api.url)
    with pytest.raises(NotReadyError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=0.5, interval_s=0.1, out=io.StringIO())
    report = str(failure.value)
    assert report.startswith("cluster day2 was not ready after 0.5 s:")
    assert f"API {api.url}: /readyz answered 503: [-]etcd failed: reason withheld" in report
    assert api.readyz_calls >= 2


def test_wait_report_names_missing_and_not_ready_nodes(tls_api: ServerFactory, pki: Pki) -> None:
    nodes = [node("cp1", True), node("w1", False), node("stranger", True)]
    api = tls_api(pki.server_cert, pki.server_key, pki.dir / "ca.crt", 0, nodes)
    target = api_target(pki.admin_conf, pki.dir / "ca.crt", api.url)
    with pytest.raises(NotReadyError) as failure:
        wait_until_ready(
            target, "day2", ["cp1", "w1", "w2"], timeout_s=0.3, interval_s=0.1, out=io.StringIO()
        )
    report = str(failure.value).splitlines()
    assert f"  API {api.url}: ready" in report
    assert (
        "  node w1: NotReady (KubeletNotReady: "
        "container runtime network not ready: cni plugin not initialized)" in report
    )
    assert "  node w2: not registered with the API server yet" in report
    assert not any("cp1" in line or "stranger" in line for line in report)


def test_wait_client_certificate_must_come_from_the_cluster_ca(
    tls_api: ServerFactory, pki: Pki, tmp_path: Path
) -> None:
    stranger = make_pki(tmp_path / "stranger")
    api = tls_api(
        pki.server_cert, pki.server_key, pki.dir / "ca.crt", 0, [node("cp1", True), node("w1", True)]
    )
    # Server verified with the right CA, but the client presents a certificate of another CA.
    target = api_target(stranger.admin_conf, pki.dir / "ca.crt", api.url)
    with pytest.raises(NotReadyError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=0.3, interval_s=0.1, out=io.StringIO())
    # The exact alert text depends on the OpenSSL version; the kind of failure does not.
    assert f"API {api.url}: TLS error: " in str(failure.value)
    assert api.readyz_calls == 0


def test_node_readiness_reads_the_ready_condition() -> None:
    seen = node_readiness(
        {"items": [node("a", True), node("b", False), {"metadata": {"name": "c"}}]}, ["a", "b", "c"]
    )
    assert seen.ready == 1
    assert seen.not_ready["b"].startswith("NotReady (KubeletNotReady: ")
    assert seen.not_ready["c"] == "NotReady (no Ready condition yet)"


def test_progress_redraws_one_line_on_a_terminal() -> None:
    master, replica = os.openpty()
    try:
        with open(replica, "w", closefd=True) as tty:
            progress = Progress(tty)
            progress.show(1, 10, "API not ready: first")
            progress.show(2, 10, "API not ready: first")
            progress.show(3, 10, "API ready")
            progress.end()
        # Read until the pty reports the closed replica (EIO): one read may return only part.
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(master)
    # Every poll redraws the same line; one newline (the pty's \r\n) when done.
    assert shown.count(b"\r\x1b[K") == 3
    assert shown.endswith(b"[   3s/10s] API ready\r\n") and shown.count(b"\n") == 1


def test_no_code_disables_tls_verification() -> None:
    offenders = [p.name for p in (ROOT / "tasks").rglob("*.py") if "verify=False" in p.read_text()]
    assert offenders == []


def test_doit_wait_end_to_end(tls_api: ServerFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    made = doit(config, "pki")
    assert made.returncode == 0, made.stderr
    root = build_root(tmp_path)
    cert, key = issue_certificate(
        root / "pki", common_name="kube-apiserver", ip_addresses=["127.0.0.1"], server=True
    )
    (tmp_path / "apiserver.crt").write_bytes(cert)
    (tmp_path / "apiserver.key").write_bytes(key)
    api = tls_api(
        tmp_path / "apiserver.crt",
        tmp_path / "apiserver.key",
        root / "pki" / "ca.crt",
        1,
        [node("cp1", True), node("w1", True)],
    )

    ok = doit(config, "wait", "--server", api.url, "--timeout", "60", "--interval", "0.1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"cluster day2 is ready: {api.url} answers /readyz, 2/2 nodes Ready" in ok.stdout

    api.nodes = [node("cp1", True)]
    late = doit(config, "wait", "--server", api.url, "--timeout", "0.3", "--interval", "0.1")
    assert late.returncode == 1, late.stdout + late.stderr
    # doit reports a failed task (our message, no traceback) on stdout.
    assert "node w1: not registered with the API server yet" in late.stdout
    assert "Traceback" not in late.stdout + late.stderr
