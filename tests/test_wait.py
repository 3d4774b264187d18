"""`doit wait` against a real TLS server on 127.0.0.1 that demands a client certificate from the CA."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from support.configs import build_root, write_config
from support.fake_api import ServerFactory, api_node
from support.pipeline import run_doit
from support.pki import Pki, apiserver_pki, write_apiserver_cert
from tasks.errors import VerificationError
from tasks.kube.api import NotReadyError, Progress, api_target, node_readiness, wait_until_ready
from tasks.paths import PROJECT_ROOT
from tasks.pki.crypto import create_ca, sign_certificate

NODES = ["cp1", "w1"]


def test_wait_succeeds_once_readyz_turns_200_and_nodes_are_ready(tls_api: ServerFactory, api_pki: Pki) -> None:
    api = tls_api(
        api_pki.server_cert, api_pki.server_key, api_pki.dir / "ca.crt", 2,
        [api_node("cp1", True), api_node("w1", True)],
    )
    out = io.StringIO()
    target = api_target(api_pki.admin_conf, api_pki.dir / "ca.crt", api.url)
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
    tls_api: ServerFactory, api_pki: Pki, tmp_path: Path
) -> None:
    other_ca, other_key = create_ca("someone-else", "ecdsa-p256", 30)
    cert, key = sign_certificate(
        other_ca, other_key, common_name="impostor", ip_addresses=["127.0.0.1"], server=True
    )
    (tmp_path / "impostor.crt").write_bytes(cert)
    (tmp_path / "impostor.key").write_bytes(key)
    api = tls_api(tmp_path / "impostor.crt", tmp_path / "impostor.key", api_pki.dir / "ca.crt", 0, [])
    target = api_target(api_pki.admin_conf, api_pki.dir / "ca.crt", api.url)
    with pytest.raises(VerificationError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=60, interval_s=0.05, out=io.StringIO())
    message = str(failure.value)
    assert "did not sign" in message and str(api_pki.dir / "ca.crt") in message
    assert "certificate verify failed" in message
    assert api.readyz_calls == 0


def test_wait_times_out_with_a_report_when_never_ready(tls_api: ServerFactory, api_pki: Pki) -> None:
    api = tls_api(api_pki.server_cert, api_pki.server_key, api_pki.dir / "ca.crt", None, [])
    target = api_target(api_pki.admin_conf, api_pki.dir / "ca.crt", api.url)
    with pytest.raises(NotReadyError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=0.5, interval_s=0.1, out=io.StringIO())
    report = str(failure.value)
    assert report.startswith("cluster day2 was not ready after 0.5 s:")
    assert f"API {api.url}: /readyz answered 503: [-]etcd failed: reason withheld" in report
    assert api.readyz_calls >= 2


def test_wait_report_names_missing_and_not_ready_nodes(tls_api: ServerFactory, api_pki: Pki) -> None:
    nodes = [api_node("cp1", True), api_node("w1", False), api_node("stranger", True)]
    api = tls_api(api_pki.server_cert, api_pki.server_key, api_pki.dir / "ca.crt", 0, nodes)
    target = api_target(api_pki.admin_conf, api_pki.dir / "ca.crt", api.url)
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
    tls_api: ServerFactory, api_pki: Pki, tmp_path: Path
) -> None:
    stranger = apiserver_pki(tmp_path / "stranger")
    api = tls_api(
        api_pki.server_cert, api_pki.server_key, api_pki.dir / "ca.crt", 0,
        [api_node("cp1", True), api_node("w1", True)],
    )
    # Server verified with the right CA, but the client presents a certificate of another CA.
    target = api_target(stranger.admin_conf, api_pki.dir / "ca.crt", api.url)
    with pytest.raises(NotReadyError) as failure:
        wait_until_ready(target, "day2", NODES, timeout_s=0.3, interval_s=0.1, out=io.StringIO())
    # The exact alert text depends on the OpenSSL version; the kind of failure does not.
    assert f"API {api.url}: TLS error: " in str(failure.value)
    assert api.readyz_calls == 0


def test_node_readiness_reads_the_ready_condition() -> None:
    seen = node_readiness(
        {"items": [api_node("a", True), api_node("b", False), {"metadata": {"name": "c"}}]}, ["a", "b", "c"]
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
    offenders = [p.name for p in (PROJECT_ROOT / "tasks").rglob("*.py") if "verify=False" in p.read_text()]
    assert offenders == []


def test_doit_wait_end_to_end(tls_api: ServerFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path, name="day2")
    made = run_doit(config, "pki")
    assert made.returncode == 0, made.stderr
    root = build_root(tmp_path, "day2")
    cert, key = write_apiserver_cert(root / "pki", tmp_path)
    api = tls_api(cert, key, root / "pki" / "ca.crt", 1, [api_node("cp1", True), api_node("w1", True)])

    ok = run_doit(config, "wait", "--server", api.url, "--timeout", "60", "--interval", "0.1")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"cluster day2 is ready: {api.url} answers /readyz, 2/2 nodes Ready" in ok.stdout

    api.nodes = [api_node("cp1", True)]
    late = run_doit(config, "wait", "--server", api.url, "--timeout", "0.3", "--interval", "0.1")
    assert late.returncode == 1, late.stdout + late.stderr
    # doit reports a failed task (our message, no traceback) on stdout.
    assert "node w1: not registered with the API server yet" in late.stdout
    assert "Traceback" not in late.stdout + late.stderr
