"""`doit status` against a real libvirtd with tiny guests and a real TLS API server on 127.0.0.1.

The API column is checked against the fake API server (support/fake_api.py), which demands
admin.conf's client certificate and presents a certificate from the cluster's own CA: `--server`
points status there, so nothing ever connects to the (data-only) VIP.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from support.configs import add_node, drop_node
from support.fake_api import ServerFactory, api_node
from support.libvirtd import virsh
from support.pipeline import status_table as table
from support.pki import write_apiserver_cert
from support.vm_clusters import BANNER, MakeCluster, define_foreign_domain
from tasks.libvirt.domain import VmInputs
from tasks.libvirt.inventory import Domain
from tasks.paths import Build
from tasks.report.status import CHANGED, CURRENT, NOT_BUILT, ignition_state


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_shows_real_vm_states_ignition_and_api(
    make_cluster: MakeCluster, tls_api: ServerFactory, tmp_path: Path
) -> None:
    tc = make_cluster(2)  # cp1 (init) and w2
    add_node(tc.config, "w3", "192.168.122.33")
    tc.doit("ha")
    name = tc.c.name
    # w3 leaves the config (its VM stays), w4 joins it without a VM, w5's name is taken by a
    # domain flatcar-ha did not make; w2 is stopped; cp1's Ignition changes after its VM was made.
    drop_node(tc.config, "w3")
    add_node(tc.config, "w4", "192.168.122.34")
    add_node(tc.config, "w5", "192.168.122.35")
    define_foreign_domain(tc, f"{name}-w5")
    virsh(tc.uri, "destroy", f"{name}-w2")
    ign = tc.ign("cp1")
    ign.write_text(json.dumps({**json.loads(ign.read_text()), "passwd": {}}))

    paths = Build(tc.c.build_dir)
    cert, key = write_apiserver_cert(paths.pki, tmp_path)
    api = tls_api(cert, key, paths.pki / "ca.crt", 0, [api_node("cp1", True), api_node("w2", False)])

    out = tc.doit("status", "--server", api.url)
    rows = table(out)
    assert list(rows) == ["cp1", "w2", "w4", "w5"]
    assert rows["cp1"]["ROLE"] == "control-plane (init)" and rows["w2"]["ROLE"] == "worker"
    assert [rows[n]["STATE"] for n in rows] == ["running", "shut off", "missing", "not ours"]
    assert [rows[n]["IGNITION"] for n in rows] == ["changed", "current", "missing", "missing"]
    assert rows["cp1"]["KUBERNETES"] == "Ready"
    assert rows["w2"]["KUBERNETES"].startswith("NotReady (KubeletNotReady")
    assert rows["w4"]["KUBERNETES"] == "not registered with the API server yet"
    config = {n.name: n for n in tc.c.nodes}
    for n in ("cp1", "w2"):
        assert rows[n]["VM"] == f"{name}-{n}" and rows[n]["LIBVIRT"] == tc.uri
        assert rows[n]["IP"] == str(config[n].ip) and rows[n]["MAC"] == config[n].mac
    assert f"API {api.url}: ready, 1/4 nodes Ready" in out
    # The VM of the node removed from config is shown, with what to do about it.
    assert f"  {name}-w3 on {tc.uri}: running (worker w3, 192.168.122.33)" in out
    assert "doit prune" in out
    assert "cp1: its Ignition changed since the VM was made: doit recreate=cp1 vm:cp1" in out
    assert "w2: VM stopped: doit vm:w2 starts it" in out
    assert "w4: no VM yet: doit ha" in out
    assert "w4: no Ignition yet: doit new_cluster" in out
    # Status only reads: nothing was started, created or removed.
    assert tc.state("w2") == "shut off"
    assert sorted(tc.domains()) == sorted(f"{name}-{n}" for n in ("cp1", "w2", "w3", "w5"))
    assert not tc.ign("w4").exists()

    offline = tc.doit("status", "--no-api")
    assert "API not checked (--no-api)" in offline
    assert {r["KUBERNETES"] for r in table(offline).values()} == {"?"}

    refused = tc.doit("status", "--server", f"https://127.0.0.1:{closed_port()}")
    assert "not ready (ConnectionError: [Errno 111] Connection refused)" in refused
    assert table(refused)["w2"]["STATE"] == "shut off"
    virsh(tc.uri, "undefine", f"{name}-w5")


def test_status_reports_an_unreachable_hypervisor_as_a_row(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.config.write_text(tc.config.read_text().replace(
        f"libvirt_uri: {tc.uri}", "libvirt_uri: qemu+tcp://127.0.0.1:9/system"))
    out = tc.doit("status", "--no-api")
    assert table(out)["cp1"]["STATE"] == "unreachable"
    assert "hypervisors not reachable:\n  qemu+tcp://127.0.0.1:9/system: " in out


def test_ignition_state_compares_the_recorded_sha256(tmp_path: Path) -> None:
    import hashlib

    ign = tmp_path / "n.ign"
    assert ignition_state(ign, None) == NOT_BUILT
    ign.write_text('{"ignition":{"version":"3.4.0"}}')
    digest = hashlib.sha256(ign.read_bytes()).hexdigest()
    assert ignition_state(ign, None) == "-"

    def domain(sha: str) -> Domain:
        return Domain("qemu:///system", "c-n", "running", VmInputs("c", "n", sha, "0" * 64, "1" * 64))

    assert ignition_state(ign, domain(digest)) == CURRENT
    assert ignition_state(ign, domain("f" * 64)) == CHANGED


def test_status_flags_a_failed_ignition_and_an_emergency_shell_from_the_boot_log(make_cluster: MakeCluster) -> None:
    tc = make_cluster(3)
    tc.doit("ha")
    for node in ("cp1", "cp2", "cp3"):
        tc.wait_for_console(node, BANNER)
    calm = table(tc.doit("status", "--no-api"))
    assert {calm[n]["BOOT"] for n in calm} == {BANNER}  # the last line each guest printed
    # What Flatcar's console shows when Ignition cannot create a file, then drops to the shell.
    failure = "ignition[512]: CRITICAL : Ignition failed: failed to create files: failed to create files"
    with tc.console_log("cp1").open("a") as log:
        log.write(f"[    7.9] {failure}\r\n[FAILED] Failed to start ignition-files.service - Ignition (files).\r\n"
                  "[  OK  ] Reached target emergency.target - Emergency Mode.\r\n")
    with tc.console_log("cp3").open("a") as log:
        log.write("Generating \"/run/initramfs/rdsosreport.txt\"\r\n\r\nEntering emergency mode. Exit the shell to "
                  "continue.\r\nType \"journalctl\" to view system logs.\r\n")
    out = tc.doit("status", "--no-api")
    rows = table(out)
    assert rows["cp1"]["BOOT"].startswith("IGNITION FAILED: [    7.9] ignition[512]: CRITICAL")
    assert rows["cp3"]["BOOT"] == "EMERGENCY SHELL: Entering emergency mode. Exit the shell ..."  # cut at 60
    assert rows["cp2"]["BOOT"] == BANNER
    # Prominent: above the table, with the whole line, and what to do.
    head = out.split("NODE ")[0]
    assert "!!! BOOT PROBLEMS on 2 node(s)" in head
    assert f"!!! cp1: IGNITION FAILED: [    7.9] {failure}" in head
    assert "!!! cp3: EMERGENCY SHELL: Entering emergency mode. Exit the shell to continue.\n" in head
    assert "cp1: boot ignition failed: read doit logs node=cp1" in out
    assert "cp2: boot" not in out
