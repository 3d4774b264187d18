"""`doit ha` / `vm:<node>` / `rm_ha` against a real libvirtd and QEMU, with tiny guests.

Every cluster here is the real pipeline end to end: new_cluster (real translation), image (a tiny
qcow2 signed by a throwaway key, served on 127.0.0.1), then pool, overlays and VMs.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from support.libvirtd import LOCAL, Libvirt, virsh
from support.pipeline import DODO, as_if_written
from support.vm_clusters import (
    BANNER,
    IMAGES_ROOT,
    MakeCluster,
    assert_made_by_virt_install,
    assert_node_runs_its_ignition,
    qemu_cmdline,
    sweep,
    tiny_qcow2,
    unique_name,
)
from tasks.libvirt.domain import FWCFG_NAME, Placement, VmInputs, disk_file, fwcfg_file
from tasks.paths import Build


def nvram_files(vm_name: str) -> list[Path]:
    return list(Path("/var/lib/libvirt/qemu/nvram").glob(f"{vm_name}_*"))


def test_ha_creates_reruns_recreates_and_removes(make_cluster: MakeCluster) -> None:
    tc = make_cluster(3, autostart=None)  # vm.autostart left at its default: on
    nodes = [n.name for n in tc.c.nodes]
    out = tc.doit("ha")
    assert out.count("+ virt-install --connect qemu:///system --name ") == 3
    assert " define " not in out  # virt-install defines, not a hand-written XML
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    disks = {n: assert_node_runs_its_ignition(tc, n) for n in nodes}
    for n in nodes:
        assert_made_by_virt_install(tc, n, autostart=True)
    ids = {n: tc.domid(n) for n in nodes}

    again = tc.doit("ha")
    for n in nodes:
        assert f"-- vm:{n}" in again
    assert "virt-install" not in again and " start " not in again and "vol-" not in again
    assert {n: tc.domid(n) for n in nodes} == ids

    # Autostart is switched on the running VM: no re-creation, no refusal.
    tc.config.write_text(tc.config.read_text().replace("graphics: none", "graphics: none\n  autostart: false"))
    switched = tc.doit("ha")
    assert "virt-install" not in switched and {n: tc.domid(n) for n in nodes} == ids
    assert_made_by_virt_install(tc, "cp1", autostart=False)
    assert "-- vm:cp1" in tc.doit("ha")

    # A new Ignition for cp2 (as a new translation would write it).
    ign = json.loads(tc.ign("cp2").read_text())
    ign.setdefault("storage", {}).setdefault("files", []).append(
        {"path": "/etc/flatcar-ha-test", "contents": {"source": "data:,changed"}, "mode": 420})
    tc.ign("cp2").write_text(json.dumps(ign))
    as_if_written(tc.ign("cp2"), Build(tc.c.build_dir))
    refused = tc.doit_fails("ha")
    assert "node cp2: its Ignition changed" in refused
    assert "doit recreate=cp2 vm:cp2" in refused
    assert tc.domid("cp2") == ids["cp2"]

    # No etcd runs in these tiny guests: skip the live quorum check (tests/test_day2_vm.py has it).
    forced = tc.doit("recreate=cp2", "force_etcd=1", "ha")
    assert "force_etcd=1: cp2's etcd member and Node object are left as they are" in forced
    new_disk = assert_node_runs_its_ignition(tc, "cp2")
    assert new_disk != disks["cp2"] and not Path(disks["cp2"]).exists()
    assert json.loads(Path(str(fwcfg_file(tc.xml("cp2")))).read_text()) == ign
    assert_made_by_virt_install(tc, "cp2", autostart=False)
    for n in ("cp1", "cp3"):
        assert tc.domid(n) == ids[n]
        assert disk_file(tc.xml(n)) == disks[n]
    assert tc.doit("ha").count("-- vm:") == 3

    pools_before = set(virsh(tc.uri, "pool-list", "--all", "--name").stdout.split())
    tc.doit("rm_ha")
    assert tc.domains() == []
    assert virsh(tc.uri, "pool-info", f"flatcar-ha-{tc.c.name}", check=False).returncode != 0
    # Everything virt-install made is gone: disks, Ignition copies, boot logs, NVRAM, autostart
    # links, and it made no pool of its own.
    assert not tc.pool_dir().exists()
    assert all(not nvram_files(n.vm_name) for n in tc.c.nodes)
    assert not [p for p in Path("/etc/libvirt/qemu/autostart").glob(f"{tc.c.name}-*")]
    pools_after = set(virsh(tc.uri, "pool-list", "--all", "--name").stdout.split())
    assert pools_after == pools_before - {f"flatcar-ha-{tc.c.name}"}
    tc.doit("rm_ha")  # everything already gone: still fine


def test_parallel_creation_of_five_nodes(make_cluster: MakeCluster) -> None:
    tc = make_cluster(5)
    tc.doit("-n", "5", "-P", "thread", "ha")
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    for node in tc.c.nodes:
        assert_node_runs_its_ignition(tc, node.name)
    tc.doit("-n", "5", "-P", "thread", "rm_ha")
    assert tc.domains() == []
    assert not (tc.image_dir / tc.c.name).exists()


def test_remote_hypervisor_gets_everything_through_libvirt(
    make_cluster: MakeCluster, libvirt: Libvirt
) -> None:
    tc = make_cluster(2, uri=libvirt.remote_uri)
    tc.image_dir.mkdir(mode=0o711)
    # The pipeline runs where the hypervisor's image directory is an empty, unreadable tmpfs: every
    # byte of base image, overlay and Ignition must travel through libvirt's storage API.
    hidden = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              f'mount -t tmpfs -o mode=000 none {tc.image_dir} && exec "$@"', "sh"]
    tc.doit("ha", prefix=hidden)
    assert tc.domains() == sorted(n.vm_name for n in tc.c.nodes)
    for node in tc.c.nodes:
        assert_node_runs_its_ignition(tc, node.name)
    assert "-- vm:cp1" in tc.doit("ha", prefix=hidden)
    # The boot log too is read through libvirt (vol-download), not from the hidden folder.
    tc.wait_for_console("cp1", BANNER)
    assert tc.doit("logs", "node=cp1", prefix=hidden).splitlines()[-1] == BANNER
    tc.doit("rm_ha", prefix=hidden)
    assert tc.domains() == []
    assert not (tc.image_dir / tc.c.name).exists()


def test_preflight_names_the_missing_network(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    text = tc.config.read_text().replace("libvirt_network: none", "libvirt_network: flatcar-ha-no-such-net")
    tc.config.write_text(text)
    out = tc.doit_fails("preflight")
    assert "libvirt network 'flatcar-ha-no-such-net' does not exist on qemu:///system" in out
    assert "net-define" in out


def test_preflight_names_an_unreachable_hypervisor(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.config.write_text(tc.config.read_text().replace(
        f"libvirt_uri: {LOCAL}", "libvirt_uri: qemu+tcp://127.0.0.1:9/system"))
    out = tc.doit_fails("preflight")
    assert "cannot connect to libvirt at qemu+tcp://127.0.0.1:9/system" in out
    assert "vm.libvirt_uri" in out


def test_preflight_refuses_an_image_dir_qemu_cannot_reach(make_cluster: MakeCluster, tmp_path: Path) -> None:
    tc = make_cluster(1)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    text = tc.config.read_text().replace(f"image_dir: {tc.image_dir}", f"image_dir: {private}/img")
    tc.config.write_text(text)
    out = tc.doit_fails("preflight")
    assert f"{private} is not searchable by others" in out and "chmod o+x" in out


def test_rm_vm_of_a_node_that_never_existed(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    out = tc.doit("rm_vm:cp1")
    assert "undefine" not in out


def test_changed_vm_settings_refuse_then_redefine_on_the_same_disk(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.doit("vm:cp1")
    disk = assert_node_runs_its_ignition(tc, "cp1")
    tc.config.write_text(tc.config.read_text().replace("memory_mib: 256", "memory_mib: 320"))
    refused = tc.doit_fails("vm:cp1")
    assert "node cp1: its VM settings" in refused and "re-defines" in refused
    tc.doit("recreate=1", "vm:cp1")
    assert assert_node_runs_its_ignition(tc, "cp1") == disk  # same Ignition and image: same disk
    assert "<memory unit='KiB'>327680</memory>" in tc.xml("cp1")


def test_fwcfg_on_the_qemu_command_line_where_libvirt_lacks_sysinfo(libvirt: Libvirt, tmp_path: Path) -> None:
    """The fallback for libvirt < 6.5: -fw_cfg on QEMU's command line, file 0640 for QEMU's group.
    Run under emulation (TCG) with the safe named CPU model the pipeline picks there."""
    from tasks.libvirt.domain import domain_state, remove_domain
    from tasks.libvirt.install import TCG_CPU, InstallSpec, install
    from tasks.libvirt.storage import (
        console_path,
        create_overlay,
        ensure_base,
        ensure_pool,
        remove_pool,
        upload_volume,
    )
    from tasks.libvirt.virsh import host_info

    name = unique_name()
    image_dir = IMAGES_ROOT / f"flatcar-ha-test-{name}"
    pool, vm, pool_path = f"flatcar-ha-{name}", f"{name}-cp1", f"{image_dir}/{name}"
    ign = tmp_path / "cp1.ign"
    ign.write_text('{"ignition":{"version":"3.4.0"}}')
    ign.chmod(0o600)
    info = host_info(LOCAL)
    assert info.fwcfg_sysinfo and info.qemu_gid is not None
    inputs = VmInputs(name, "cp1", "1" * 64, "ab" * 32, "2" * 64)
    try:
        ensure_pool(LOCAL, pool, pool_path, name)
        base = ensure_base(LOCAL, pool, tiny_qcow2(tmp_path / "base.qcow2"), "ab" * 32)
        create_overlay(LOCAL, pool, "cp1.0123456789ab.qcow2", base, 1 << 30)
        copy = upload_volume(LOCAL, pool, "cp1.0123456789ab.ign", ign, mode="0640", group=info.qemu_gid)
        install(LOCAL, InstallSpec(
            name=vm, description=f"flatcar-ha cluster {name}: control-plane cp1 (192.168.122.31)",
            domain_type="qemu", memory_mib=256, vcpus=1, cpu=TCG_CPU, osinfo="linux2022", pool=pool,
            disk_volume="cp1.0123456789ab.qcow2", ignition_path=copy, console_log=console_path(pool_path, "cp1"),
            network=None, mac="52:54:00:00:00:01", graphics="none", autostart=False, inputs=inputs,
            placement=Placement("none", "192.168.122.31", "192.168.122.30", 1), fwcfg_sysinfo=False))
        state = domain_state(LOCAL, vm)
        assert state is not None and state.running and state.inputs == inputs
        assert fwcfg_file(state.xml) == copy
        assert f"-fw_cfg name={FWCFG_NAME},file={copy}" in qemu_cmdline(vm)
        assert " -accel tcg " in qemu_cmdline(vm) and f" -cpu {TCG_CPU}" in qemu_cmdline(vm)
        st = os.stat(copy)
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == info.qemu_gid
        assert Path(copy).read_bytes() == ign.read_bytes()
    finally:
        remove_domain(LOCAL, vm, name)
        remove_pool(LOCAL, pool, name)
        sweep(LOCAL, name, image_dir)
    assert domain_state(LOCAL, vm) is None and not image_dir.joinpath(name).exists()


def test_boot_log_shows_what_the_guest_printed(make_cluster: MakeCluster) -> None:
    tc = make_cluster(1)
    tc.doit("ha")
    tc.wait_for_console("cp1", BANNER)
    assert tc.doit("logs", "node=cp1").splitlines()[-1] == BANNER
    # virtlogd's rolled copies are part of the log, oldest (.1) first.
    log = tc.console_log("cp1")
    (log.parent / "cp1.console.log.1").write_text("oldest boot\n")
    (log.parent / "cp1.console.log.0").write_text("older boot\r\n\x1b[0;32m  OK  \x1b[0m colours gone\n")
    everything = tc.doit("logs", "node=cp1", "--lines", "0").splitlines()
    assert everything[-4:] == ["oldest boot", "older boot", "  OK   colours gone", BANNER]
    assert tc.doit("logs", "node=cp1", "--lines", "2").splitlines()[-2:] == ["  OK   colours gone", BANNER]

    assert "no node given" in tc.doit_fails("logs")
    assert "node 'nope' is not in" in tc.doit_fails("logs", "node=nope")

    # --follow prints what arrives, across a roll-over, until stopped (here: by its PID).
    follow = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(DODO), f"config={tc.config}", "logs",
                               "node=cp1", "--lines", "1", "--follow"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tc.config.parent)
    try:
        time.sleep(4)
        with log.open("a") as handle:
            handle.write("ignition[412]: fetched the config\n")
        time.sleep(3)
        log.rename(log.parent / "cp1.console.log.0")  # what virtlogd does at max_size ...
        with (log.parent / "cp1.console.log.0").open("a") as handle:
            handle.write("last line before the roll\n")
        log.write_text("first line after the roll\n")  # ... then it writes a new file
        time.sleep(4)
    finally:
        follow.send_signal(signal.SIGINT)
        out, _ = follow.communicate(timeout=30)
    lines = out.splitlines()
    assert lines.index(BANNER) < lines.index("ignition[412]: fetched the config") < lines.index(
        "last line before the roll") < lines.index("first line after the roll"), out
    assert "Traceback" not in out


def test_preflight_refuses_more_memory_than_the_hypervisor_has(make_cluster: MakeCluster) -> None:
    tc = make_cluster(2, memory_mib=1_000_000)  # under the 1 TiB bound of vm.memory_mib
    out = tc.doit_fails("preflight")
    assert f"vm.memory_mib: the VMs to start on {tc.uri} need 2000000 MiB (cp1 (1000000), w2 (1000000))" in out
    assert "nodes[].vm.libvirt_uri" in out


def test_pool_refuses_a_folder_without_room_for_the_image_and_first_boots(make_cluster: MakeCluster) -> None:
    tc = make_cluster(2)
    tc.image_dir.mkdir(mode=0o711)
    # image_dir as the pipeline sees it: a 1 MiB tmpfs (libvirtd, outside this namespace, never
    # gets asked: the check comes first).
    small = ["unshare", "-m", "--propagation", "private", "sh", "-c",
             f'mount -t tmpfs -o size=1m,mode=0711 none {tc.image_dir} && exec "$@"', "sh"]
    out = tc.doit_fails("pool", prefix=small)
    assert f"GiB free for the base image and the node disks in {tc.pool_dir()} on {tc.uri}" in out
    assert "at least 2.0 GiB are needed" in out and "choose another vm.image_dir" in out
    assert virsh(tc.uri, "pool-info", f"flatcar-ha-{tc.c.name}", check=False).returncode != 0
